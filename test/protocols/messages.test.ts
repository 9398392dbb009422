import { describe, expect, it } from 'vitest';
import { DataReport, EvaluationReport, UpdateMeta } from '../../protocols/messages.ts';

describe('what a node may say about its data', () => {
  const report = { rows: 120, droppedNoConsent: 4, missingFilled: { age: 3 }, unseenCategories: { plan: 1 } };

  it('accepts counts of rows and of fixes', () => {
    expect(DataReport.parse(report)).toEqual(report);
    expect(UpdateMeta.parse({ numExamples: 96, loss: 0.4, steps: 3, trainSeconds: 0.1, data: report }).data).toEqual(report);
  });

  it('refuses a label statistic or any other extra field, naming it', () => {
    for (const extra of [{ positives: 17 }, { churnRate: 0.14 }, { vocabulary: { plan: ['gold'] } }]) {
      const result = DataReport.safeParse({ ...report, ...extra });
      expect(result.success).toBe(false);
      expect(JSON.stringify(result.error!.issues)).toContain(Object.keys(extra)[0]);
    }
    expect(UpdateMeta.safeParse({ numExamples: 96, loss: 0.4, steps: 3, trainSeconds: 0.1, data: { ...report, positives: 17 } }).success).toBe(false);
  });
});

describe("an evaluation report's histogram counts (checked in one loop: protocols/metrics.ts integerArray)", () => {
  const report = (positives: unknown, noised = false) => ({
    numExamples: 3,
    stats: noised
      ? { kind: 'binary', noise: { mechanism: 'discrete-gaussian', noiseStd: 2 }, histogram: { bins: 2, positives, negatives: [1, 0] } }
      : { kind: 'binary', histogram: { bins: 2, positives, negatives: [1, 0] }, brierSum: 0.5, logLossSum: 1 },
  });
  /** The issues of the binary branch (the union's first) or, noised, of the noised branch. */
  const issues = (value: unknown, noised = false) => {
    const r = EvaluationReport.safeParse(value);
    if (r.success) return [];
    const union = r.error.issues[0] as unknown as { errors: Array<Array<{ path: PropertyKey[]; message: string }>> };
    return union.errors[noised ? 1 : 0];
  };

  it('accepts integer counts, and keeps them', () => {
    expect(EvaluationReport.parse(report([2, 0])).stats).toMatchObject({ histogram: { positives: [2, 0] } });
    expect(EvaluationReport.parse(report([-3, 5], true)).stats).toMatchObject({ histogram: { positives: [-3, 5] } });
  });

  it('refuses a negative, fractional, non-numeric or unsafe count, naming the entry', () => {
    for (const [wrong, index] of [[[-1, 3], 0], [[0, 1.5], 1], [[0, '2'], 1], [[null, 0], 0], [[0, 2 ** 53], 1], [[0, Number.NaN], 1]] as const) {
      const found = issues(report(wrong));
      expect(found, JSON.stringify(wrong)).toContainEqual(expect.objectContaining({ path: ['histogram', 'positives', index] }));
    }
    expect(issues(report('2,0'))).toContainEqual(expect.objectContaining({ path: ['histogram', 'positives'], message: 'expected an array of integers' }));
  });

  it('noised counts may be negative, never fractional or beyond the safe integers', () => {
    expect(issues(report([0, 0.5], true), true)).toContainEqual(expect.objectContaining({ path: ['histogram', 'positives', 1] }));
    expect(issues(report([-(2 ** 53), 0], true), true)).toContainEqual(expect.objectContaining({ path: ['histogram', 'positives', 0] }));
  });
});
