import { mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { loadData, validationSplit } from '../../client-node/data.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import type { CsvTable } from '../../models/index.ts';

const HEADER = ['id', 'age', 'plan', 'churn'];
const study = (training: Record<string, unknown> = {}) =>
  StudyConfig.parse({
    name: 'split study',
    model: { kind: 'logreg' },
    rounds: 1,
    training,
    features: {
      target: { column: 'churn', positive: '1' },
      features: [
        { name: 'age', kind: 'numeric', mean: 40, std: 10, fill: 40 },
        { name: 'plan', kind: 'categorical', categories: ['a', 'b'] },
      ],
    },
  });
const table = (rows: string[][]): CsvTable => ({ header: HEADER, rows, lineOf: (i) => i + 2 });

/** Side of every row: true = validation. */
function sides(rows: string[][], config: StudyConfig, studyId = 'study_1'): boolean[] {
  const [, validation] = validationSplit(table(rows), config, studyId);
  const out = new Array<boolean>(rows.length).fill(false);
  for (const i of validation) out[i] = true;
  return out;
}

const row = fc.tuple(fc.integer({ min: 0, max: 1e9 }), fc.integer({ min: 18, max: 90 }), fc.constantFrom('a', 'b', ''), fc.constantFrom('0', '1')).map(([id, age, plan, churn]) => [`c${id}`, String(age), plan, churn]);

describe('train/validation split by a keyed hash of a stable row key', () => {
  for (const [label, training] of [
    ['row content', { validationFraction: 0.2 }],
    ['declared id column', { validationFraction: 0.3, idColumn: 'id' }],
  ] as const) {
    it(`adding or removing any row never changes any other row's side (${label})`, () => {
      const config = study(training);
      fc.assert(
        fc.property(fc.array(row, { minLength: 1, maxLength: 300 }), row, fc.nat(), (rows, extra, at) => {
          const before = sides(rows, config);
          const p = at % (rows.length + 1);
          const added = sides([...rows.slice(0, p), extra, ...rows.slice(p)], config);
          expect([...added.slice(0, p), ...added.slice(p + 1)]).toEqual(before);
          const q = at % rows.length;
          const removed = sides([...rows.slice(0, q), ...rows.slice(q + 1)], config);
          expect(removed).toEqual([...before.slice(0, q), ...before.slice(q + 1)]);
        }),
        { numRuns: 200, seed: 20261202 },
      );
    });
  }

  it('with an id column, a row keeps its side when its other cells change; the key is per study and stable', () => {
    const config = study({ validationFraction: 0.5, idColumn: 'id' });
    const rows = Array.from({ length: 200 }, (_, i) => [`c${i}`, String(20 + (i % 50)), 'a', String(i % 2)]);
    const edited = rows.map((r) => [r[0], '99', 'b', r[3] === '1' ? '0' : '1']);
    expect(sides(edited, config)).toEqual(sides(rows, config));
    expect(sides(rows, config)).toEqual(sides(rows, config)); // stable across calls (restarts, rounds)
    expect(sides(rows, config, 'study_2')).not.toEqual(sides(rows, config)); // another study, another split
    expect(sides(rows, study({ validationFraction: 0.5, idColumn: 'id', seed: 7 }))).not.toEqual(sides(rows, config));
  });

  it('the validation share is within binomial tolerance of validationFraction', () => {
    for (const fraction of [0.1, 0.2, 0.5]) {
      const n = 5000;
      const rows = Array.from({ length: n }, (_, i) => [`c${i}`, String(i), 'a', String(i % 2)]);
      const validation = sides(rows, study({ validationFraction: fraction })).filter(Boolean).length;
      expect(Math.abs(validation - n * fraction)).toBeLessThan(4 * Math.sqrt(n * fraction * (1 - fraction)));
    }
    expect(sides([['c1', '30', 'a', '1']], study({ validationFraction: 0 }))).toEqual([false]);
  });

  describe('through loadData on a real CSV', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-split-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('appending one row to the file leaves every earlier row on its side, and a missing id column is a data error', () => {
      const config = study({ validationFraction: 0.25 });
      const rows = Array.from({ length: 400 }, (_, i) => [`c${i}`, String(18 + ((i * 7) % 60)), i % 3 ? 'a' : 'b', String(i % 2)]);
      const file = join(dir, 'data.csv');
      writeFileSync(file, [HEADER.join(','), ...rows.map((r) => r.join(','))].join('\n') + '\n');
      const first = loadData(file, config, 1, undefined, 'study_1');
      appendFileSync(file, 'c400,33,b,1\n');
      const second = loadData(file, config, 2, undefined, 'study_1');
      // The 400 old rows: the same ones in validation, in the same order; the new row went to one side.
      const encoded = (d: typeof first.validation) => Array.from({ length: d.n }, (_, i) => Array.from(d.x.slice(i * d.width, (i + 1) * d.width)).join(','));
      const [old, now] = [encoded(first.validation), encoded(second.validation)];
      const [oldTrain, nowTrain] = [encoded(first.train), encoded(second.train)];
      expect(now.length + nowTrain.length).toBe(401);
      expect(now.length === old.length ? now : now.slice(0, -1)).toEqual(old);
      expect(nowTrain.length === oldTrain.length ? nowTrain : nowTrain.slice(0, -1)).toEqual(oldTrain);
      expect(() => loadData(file, study({ idColumn: 'customer' }), 3)).toThrow(/id column "customer" is missing/);
    });
  });
});
