import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { distinctValues, partitionByColumn, partitionDirichlet, partitionRandom, partitionWarnings } from '../../cli/partition.ts';
import { readCsvTable } from '../../models/csv-table.ts';

/** Rows of a column with `counts[v]` rows of value v, interleaved as a real file would be. */
function column(counts: Record<string, number>): string[] {
  const left = { ...counts };
  const out: string[] = [];
  while (Object.values(left).some((n) => n > 0)) {
    for (const v of Object.keys(left)) if (left[v]-- > 0) out.push(v);
  }
  return out;
}

const all = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Every given row lands in exactly one partition, and every value in exactly one. */
function expectExactCover(parts: ReturnType<typeof partitionByColumn>, values: string[], rows: number[]) {
  expect(parts.flatMap((p) => p.rows).sort((a, b) => a - b)).toEqual([...rows].sort((a, b) => a - b));
  const seen = parts.flatMap((p) => p.values);
  expect(new Set(seen).size).toBe(seen.length);
  for (const p of parts) for (const i of p.rows) expect(p.values).toContain(values[i]);
}

describe('partitionByColumn (--partition-by COLUMN --nodes N)', () => {
  const values = column({ CA: 40, TX: 30, NY: 20, WA: 10, OR: 5, NV: 5 });
  const rows = all(values.length);

  it('N < distinct values: groups whole values into N regions of similar size', () => {
    const parts = partitionByColumn(values, rows, 3);
    expect(parts.map((p) => p.name)).toEqual(['region-01', 'region-02', 'region-03']);
    expectExactCover(parts, values, rows);
    // largest first into the smallest region (ties: the first such region): CA | TX+NV | NY+WA+OR
    expect(parts.map((p) => p.values)).toEqual([['CA'], ['NV', 'TX'], ['NY', 'OR', 'WA']]);
    expect(parts.map((p) => p.rows.length)).toEqual([40, 35, 35]);
  });

  it('N equal to the number of distinct values: one node per value', () => {
    const parts = partitionByColumn(values, rows, 6);
    expect(parts).toHaveLength(6);
    expect(parts.every((p) => p.values.length === 1)).toBe(true);
    expectExactCover(parts, values, rows);
    expect(parts.map((p) => p.values[0])).toEqual(['CA', 'TX', 'NY', 'WA', 'NV', 'OR']); // largest first, ties by name
  });

  it('N above the number of distinct values: still one node per value (no empty nodes)', () => {
    const parts = partitionByColumn(values, rows, 60);
    expect(parts).toHaveLength(6);
    expect(parts.every((p) => p.values.length === 1 && p.rows.length > 0)).toBe(true);
  });

  it('N = 1 puts everything in one region; N = distinct - 1 merges exactly two values', () => {
    expect(partitionByColumn(values, rows, 1)).toEqual([{ name: 'region-01', rows, values: ['CA', 'NV', 'NY', 'OR', 'TX', 'WA'] }]);
    const parts = partitionByColumn(values, rows, 5);
    expect(parts).toHaveLength(5);
    expect(parts.filter((p) => p.values.length === 2)).toHaveLength(1);
    expectExactCover(parts, values, rows);
  });

  it('only the given rows count (a value seen only outside them makes no node)', () => {
    const some = rows.filter((i) => values[i] !== 'NV');
    const parts = partitionByColumn(values, some, 6);
    expect(parts).toHaveLength(5);
    expect(distinctValues(values, some)).toBe(5);
    expectExactCover(parts, values, some);
  });

  it('refuses a non-positive count', () => {
    expect(() => partitionByColumn(values, rows, 0)).toThrow(/positive integer/);
  });

  it('the shipped churn data: --nodes 51 by state is one node per state, --nodes 10 groups them', () => {
    const table = readCsvTable({ path: fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url)) });
    const state = table.rows.map((r) => r[table.header.indexOf('state')]);
    const rows = all(state.length);
    expect(distinctValues(state, rows)).toBe(51);
    const perState = partitionByColumn(state, rows, 51);
    expect(perState).toHaveLength(51);
    expect(new Set(perState.map((p) => p.values[0])).size).toBe(51);
    expectExactCover(perState, state, rows);
    const regions = partitionByColumn(state, rows, 10);
    expect(regions).toHaveLength(10);
    expectExactCover(regions, state, rows);
    const sizes = regions.map((p) => p.rows.length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThan(60); // similar sizes
  });
});

describe('partitionDirichlet', () => {
  it('covers every row once over the requested nodes, reproducibly', () => {
    const labels = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const a = partitionDirichlet(labels, all(300), 4, 0.5, 7);
    expect(a).toHaveLength(4);
    expect(a.flatMap((p) => p.rows).sort((x, y) => x - y)).toEqual(all(300));
    expect(partitionDirichlet(labels, all(300), 4, 0.5, 7)).toEqual(a);
  });
});

describe('partitionRandom (--nodes N alone)', () => {
  it('deals every row once into N nodes of equal size (within one), reproducibly by seed', () => {
    const rows = Array.from({ length: 103 }, (_, i) => i * 2);
    const parts = partitionRandom(rows, 4, 5);
    expect(parts.map((p) => p.rows.length)).toEqual([26, 26, 26, 25]);
    expect(parts.flatMap((p) => p.rows).sort((a, b) => a - b)).toEqual(rows);
    expect(partitionRandom(rows, 4, 5)).toEqual(parts);
    expect(partitionRandom(rows, 4, 6)).not.toEqual(parts);
    // At random: node 1 is not simply the first quarter.
    expect(parts[0].rows.some((r) => r > 103)).toBe(true);
  });

  it('refuses a non-positive count', () => {
    expect(() => partitionRandom([1, 2], 0, 1)).toThrow(RangeError);
  });
});

describe('partitionWarnings', () => {
  it('names tiny nodes with their rows per class, one-class nodes and empty ones', () => {
    const labels = [1, 0, 1, 0, ...Array(200).fill(0), 1];
    const warnings = partitionWarnings(
      [
        { name: 'a', rows: [0, 1], values: [] },
        { name: 'b', rows: Array.from({ length: 100 }, (_, i) => 4 + i), values: [] },
        { name: 'c', rows: [], values: [] },
        { name: 'd', rows: [...Array.from({ length: 60 }, (_, i) => 104 + i), 0, 2, 204, 1, 3, 5, 6], values: [] },
      ],
      labels,
    );
    expect(warnings).toEqual([
      'a holds only 2 training rows (1 positive, 1 negative): its updates and its validation metrics will be mostly noise (fewer than 50)',
      'b holds 100 training rows (0 positive, 100 negative): fewer than 5 of one class, so its validation AUC is undefined or noise',
      'c received no rows and is left out of the federation',
      'd holds 67 training rows (3 positive, 64 negative): fewer than 5 of one class, so its validation AUC is undefined or noise',
    ]);
    expect(partitionWarnings([{ name: 'e', rows: Array.from({ length: 50 }, (_, i) => i), values: [] }])).toEqual([]);
  });
});
