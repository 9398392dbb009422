import { mulberry32 } from '../protocols/random.ts';

/**
 * How the demo splits one CSV into regions. Real federations do not partition: each node has
 * its own data. These functions only simulate that from a single file.
 */

export interface Partition {
  name: string;
  /** Row indices into the source table. */
  rows: number[];
  /** The partition column values this region holds (natural partitions only). */
  values: string[];
}

/** Seeded uniform [0, 1) source (the project's one seeded PRNG). */
export const seededRandom = mulberry32;

/** Code-unit order: the same split on every machine, unlike localeCompare. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Distinct values of a column among the given rows (how many nodes `--nodes` can make at most). */
export function distinctValues(values: string[], rowIndices: number[]): number {
  return new Set(rowIndices.map((i) => values[i])).size;
}

/**
 * Splits rows by the values of a column, so a region is a set of whole values (states), as a
 * regional data center would hold:
 * - `regions` < the number of distinct values (among `rowIndices`): the values are grouped into
 *   `regions` regions of similar size (largest value first, each into the currently smallest
 *   region);
 * - `regions` >= the number of distinct values: one region per value (`--partition-by state
 *   --nodes 51` on the churn data: one node per state). More regions than values cannot be
 *   made, so the count is the number of values.
 * Regions are named region-01, region-02, ... from the largest; `values` says what each holds.
 */
export function partitionByColumn(values: string[], rowIndices: number[], regions: number): Partition[] {
  if (!Number.isInteger(regions) || regions < 1) throw new RangeError(`partitionByColumn: regions must be a positive integer, got ${regions}`);
  const byValue = new Map<string, number[]>();
  for (const i of rowIndices) {
    const v = values[i];
    if (!byValue.has(v)) byValue.set(v, []);
    byValue.get(v)!.push(i);
  }
  const distinct = [...byValue.keys()].sort((a, b) => byValue.get(b)!.length - byValue.get(a)!.length || compareStrings(a, b));
  const name = (k: number) => `region-${String(k + 1).padStart(2, '0')}`;
  if (regions >= distinct.length) {
    return distinct.map((v, k) => ({ name: name(k), rows: [...byValue.get(v)!].sort((a, b) => a - b), values: [v] }));
  }
  const parts: Partition[] = Array.from({ length: regions }, (_, k) => ({ name: name(k), rows: [], values: [] }));
  for (const v of distinct) {
    const smallest = parts.reduce((best, p) => (p.rows.length < best.rows.length ? p : best), parts[0]);
    smallest.values.push(v);
    smallest.rows.push(...byValue.get(v)!);
  }
  for (const p of parts) {
    p.values.sort(compareStrings);
    p.rows.sort((a, b) => a - b);
  }
  return parts;
}

/** Gamma(shape, 1) by Marsaglia & Tsang (2000); shape < 1 boosted as Gamma(shape+1) * U^(1/shape). */
function gamma(shape: number, random: () => number): number {
  if (shape < 1) return gamma(shape + 1, random) * Math.pow(random(), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Box-Muller normal.
      x = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - random();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/**
 * Label-skewed split: for each class, node shares drawn from Dirichlet(alpha) (Hsu et al. 2019,
 * "Measuring the Effects of Non-Identical Data Distribution"). Small alpha, strong skew.
 */
export function partitionDirichlet(labels: ArrayLike<number>, rowIndices: number[], nodes: number, alpha: number, seed: number): Partition[] {
  const random = seededRandom(seed);
  const parts: Partition[] = Array.from({ length: nodes }, (_, k) => ({ name: `node-${String(k + 1).padStart(2, '0')}`, rows: [], values: [] }));
  for (const cls of [0, 1]) {
    const members = rowIndices.filter((i) => (labels[i] > 0.5 ? 1 : 0) === cls);
    for (let i = members.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [members[i], members[j]] = [members[j], members[i]];
    }
    const shares = Array.from({ length: nodes }, () => gamma(alpha, random));
    const total = shares.reduce((a, b) => a + b, 0);
    let start = 0;
    for (let k = 0; k < nodes; k++) {
      const end = k === nodes - 1 ? members.length : start + Math.round((shares[k] / total) * members.length);
      parts[k].rows.push(...members.slice(start, Math.min(end, members.length)));
      start = Math.min(end, members.length);
    }
  }
  for (const p of parts) p.rows.sort((a, b) => a - b);
  return parts;
}

/**
 * `--nodes N` alone: rows dealt at random into N nodes of equal size (within one row), seeded.
 * The plain IID split a user gets when their CSV has no region column and they asked for no skew.
 */
export function partitionRandom(rowIndices: number[], nodes: number, seed: number): Partition[] {
  if (!Number.isInteger(nodes) || nodes < 1) throw new RangeError(`partitionRandom: nodes must be a positive integer, got ${nodes}`);
  const random = seededRandom(seed);
  const shuffled = [...rowIndices];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  const parts: Partition[] = Array.from({ length: nodes }, (_, k) => ({ name: `node-${String(k + 1).padStart(2, '0')}`, rows: [], values: [] }));
  shuffled.forEach((row, i) => parts[i % nodes].rows.push(row));
  for (const p of parts) p.rows.sort((a, b) => a - b);
  return parts;
}

/** Below this many training rows a node's local training and its validation share are noise. */
export const TINY_PARTITION_ROWS = 50;
/** Below this many rows of a class a node's AUC and its gradient for that class are noise. */
export const TINY_CLASS_ROWS = 5;

/**
 * Warnings for partitions too small to learn or evaluate on (a Dirichlet split once gave a node 2
 * rows, silently): each names the node, its rows and, for a binary target, its rows per class.
 */
export function partitionWarnings(partitions: Partition[], labels?: ArrayLike<number>): string[] {
  const warnings: string[] = [];
  for (const p of partitions) {
    if (p.rows.length === 0) {
      warnings.push(`${p.name} received no rows and is left out of the federation`);
      continue;
    }
    const positives = labels ? p.rows.reduce((n, i) => n + (labels[i] > 0.5 ? 1 : 0), 0) : undefined;
    const classes = positives === undefined ? '' : ` (${positives} positive, ${p.rows.length - positives} negative)`;
    if (p.rows.length < TINY_PARTITION_ROWS) {
      warnings.push(`${p.name} holds only ${p.rows.length} training rows${classes}: its updates and its validation metrics will be mostly noise (fewer than ${TINY_PARTITION_ROWS})`);
    } else if (positives !== undefined && Math.min(positives, p.rows.length - positives) < TINY_CLASS_ROWS) {
      warnings.push(`${p.name} holds ${p.rows.length} training rows${classes}: fewer than ${TINY_CLASS_ROWS} of one class, so its validation AUC is undefined or noise`);
    }
  }
  return warnings;
}
