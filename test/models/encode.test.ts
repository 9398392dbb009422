import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { thrown } from '../helpers/thrown.ts';
import { encodedWidth, FeatureSpec } from '../../protocols/feature-spec.ts';
import { readCsvTable } from '../../models/csv-table.ts';
import { encodeTable, splitRows, subset } from '../../models/encode.ts';
import { DataError } from '../../models/errors.ts';
import { inferFeatureSpec } from '../../models/infer-spec.ts';

const dataError = (run: () => unknown) => thrown(DataError, run);

// Layout: [age, plan=basic, plan=pro, plan=__other__, plan=__missing__, score]
const spec = FeatureSpec.parse({
  target: { column: 'bought', positive: 'yes' },
  features: [
    { name: 'age', kind: 'numeric', mean: 40, std: 10, fill: 40 },
    { name: 'plan', kind: 'categorical', categories: ['basic', 'pro'] },
    { name: 'score', kind: 'numeric', mean: 0, std: 2, fill: 1 },
  ],
});

// Header order differs from the spec's, and `id` is not in the spec: both must not matter.
const csv = [
  'plan,id,age,bought,score',
  'basic,1,50,yes,4',
  'pro,2,NA,no,-2', // age missing -> fill 40
  'gold,3,30,no,', // unseen plan -> other; score empty -> fill 1
  ',4,45,yes,0', // plan missing -> missing bucket
  '"pro",5," 20 ",maybe,NA', // blanks around a number are fine; any label but "yes" is 0
].join('\n');

describe('encodeTable', () => {
  it('encodes a small table exactly', () => {
    const data = encodeTable(readCsvTable({ text: csv }), spec);
    expect(data.width).toBe(6);
    expect(encodedWidth(spec)).toBe(6);
    expect(data.n).toBe(5);
    expect(Array.from(data.x)).toEqual([
      1, 1, 0, 0, 0, 2,
      0, 0, 1, 0, 0, -1,
      -1, 0, 0, 1, 0, 0.5,
      0.5, 0, 0, 0, 1, 0,
      -2, 0, 1, 0, 0, 0.5,
    ]);
    expect(Array.from(data.y)).toEqual([1, 0, 0, 1, 0]);
  });

  it('fills and counts missing values, and counts unseen categories', () => {
    const { report } = encodeTable(readCsvTable({ text: csv }), spec);
    expect(report).toEqual({
      rows: 5,
      positives: 2,
      missingFilled: { age: 1, plan: 1, score: 2 },
      unseenCategories: { plan: 1 },
    });
  });

  it('honours the spec missingValues', () => {
    const custom = FeatureSpec.parse({ ...spec, missingValues: ['?'] });
    const data = encodeTable(readCsvTable({ text: 'age,plan,score,bought\n?,?,?,no\n' }), custom);
    expect(Array.from(data.x)).toEqual([0, 0, 0, 0, 1, 0.5]);
    expect(data.report.missingFilled).toEqual({ age: 1, plan: 1, score: 1 });
    // With that spec, NA is no longer missing: in a numeric column it is text.
    expect(() => encodeTable(readCsvTable({ text: 'age,plan,score,bought\nNA,pro,1,no\n' }), custom)).toThrow(DataError);
  });

  it('reports text in a numeric column with its line, column and value', () => {
    const text = 'age,plan,score,bought\n30,pro,1,no\n"forty",pro,1,no\n';
    const err = dataError(() => encodeTable(readCsvTable({ text }), spec));
    expect(err.line).toBe(3);
    expect(err.column).toBe('age');
    expect(err.kind).toBe('non-numeric');
    expect(err.message).toMatch(/^line 3, column "age" \(column 1\): "forty" is not a number/);
  });

  it('reports a spec column missing from the header', () => {
    const err = dataError(() => encodeTable(readCsvTable({ text: 'age,score,bought\n30,1,no\n' }), spec));
    expect(err.column).toBe('plan');
    expect(err.kind).toBe('missing-column');
    expect(err.line).toBe(1);
    expect(err.message).toMatch(/feature column "plan" of the feature spec is missing from the header/);
    const noTarget = dataError(() => encodeTable(readCsvTable({ text: 'age,plan,score\n30,pro,1\n' }), spec));
    expect(noTarget.column).toBe('bought');
  });

  it('refuses a row without a label', () => {
    const err = dataError(() => encodeTable(readCsvTable({ text: 'age,plan,score,bought\n30,pro,1,no\n31,pro,1,NA\n' }), spec));
    expect(err.line).toBe(3);
    expect(err.column).toBe('bought');
    expect(err.kind).toBe('missing-label');
    expect(err.message).toMatch(/cannot be trained on/);
  });

  it('encodes the shipped data: 5000 x 81, 707 positives, nothing filled', () => {
    const table = readCsvTable({ path: 'data/mlc_churn.csv' });
    const churnSpec = inferFeatureSpec(table, { target: 'churn' });
    const data = encodeTable(table, churnSpec);
    expect(data.n).toBe(5000);
    expect(data.width).toBe(81);
    expect(data.report).toEqual({ rows: 5000, positives: 707, missingFilled: {}, unseenCategories: {} });
    // Standardized columns have mean 0 and variance 1; each categorical feature has exactly one 1 per row.
    let offset = 0;
    for (const f of churnSpec.features) {
      if (f.kind === 'numeric') {
        let sum = 0;
        let squares = 0;
        for (let r = 0; r < data.n; r++) {
          const v = data.x[r * data.width + offset];
          sum += v;
          squares += v * v;
        }
        expect(Math.abs(sum / data.n), f.name).toBeLessThan(1e-5);
        expect(squares / data.n, f.name).toBeCloseTo(1, 4);
        offset += 1;
      } else {
        const slots = f.categories.length + 2;
        for (let r = 0; r < data.n; r++) {
          let ones = 0;
          for (let k = 0; k < slots; k++) ones += data.x[r * data.width + offset + k];
          if (ones !== 1) throw new Error(`row ${r}, feature ${f.name}: ${ones} ones`);
        }
        offset += slots;
      }
    }
    expect(offset).toBe(81);
  });
});

describe('subset', () => {
  it('copies rows and recounts the report for the rows it keeps', () => {
    const data = encodeTable(readCsvTable({ text: csv }), spec);
    const part = subset(data, [4, 2]);
    expect(part.n).toBe(2);
    expect(Array.from(part.x)).toEqual([-2, 0, 1, 0, 0, 0.5, -1, 0, 0, 1, 0, 0.5]);
    expect(Array.from(part.y)).toEqual([0, 0]);
    expect(part.report).toEqual({ rows: 2, positives: 0, missingFilled: { score: 2 }, unseenCategories: { plan: 1 } });
    const nested = subset(part, [1]);
    expect(nested.report).toEqual({ rows: 1, positives: 0, missingFilled: { score: 1 }, unseenCategories: { plan: 1 } });
    expect(subset(data, []).report).toEqual({ rows: 0, positives: 0, missingFilled: {}, unseenCategories: {} });
    expect(() => subset(data, [5])).toThrow(RangeError);
  });
});

describe('splitRows', () => {
  it('splits the shipped data 80/20, stratified, like scikit-learn (141 churners in 1000 test rows)', () => {
    const table = readCsvTable({ path: 'data/mlc_churn.csv' });
    const data = encodeTable(table, inferFeatureSpec(table, { target: 'churn' }));
    const [train, test] = splitRows(data.n, [0.8, 0.2], 42, data.y);
    expect(train).toHaveLength(4000);
    expect(test).toHaveLength(1000);
    expect(subset(data, test).report.positives).toBe(141);
    expect(subset(data, train).report.positives).toBe(566);
    expect(splitRows(data.n, [0.8, 0.2], 42, data.y)).toEqual([train, test]);
    expect(splitRows(data.n, [0.8, 0.2], 43, data.y)[1]).not.toEqual(test);
  });

  it('partitions the rows and keeps each label within one row of its share (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { maxLength: 300 }),
        fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 5 }).filter((w) => w.some((v) => v > 0)),
        fc.nat(),
        (labelBits, weights, seed) => {
          const n = labelBits.length;
          const total = weights.reduce((a, b) => a + b, 0);
          const fractions = weights.map((w) => w / total);
          const labels: number[] = labelBits.map((b) => (b ? 1 : 0));
          const parts = splitRows(n, fractions, seed, labels);
          expect(parts).toHaveLength(fractions.length);
          const all = parts.flat().sort((a, b) => a - b);
          expect(all).toEqual(Array.from({ length: n }, (_, i) => i));
          const positives = labels.reduce((a, b) => a + b, 0);
          parts.forEach((part, p) => {
            const partPositives = part.filter((i) => labels[i] === 1).length;
            expect(Math.abs(partPositives - fractions[p] * positives)).toBeLessThan(1 + 1e-9);
            expect(Math.abs(part.length - partPositives - fractions[p] * (n - positives))).toBeLessThan(1 + 1e-9);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses fractions that do not sum to 1', () => {
    expect(() => splitRows(10, [0.5, 0.4], 1)).toThrow(/sum to 1/);
    expect(() => splitRows(10, [1.5, -0.5], 1)).toThrow(/>= 0/);
  });
});
