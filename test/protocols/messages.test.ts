import { describe, expect, it } from 'vitest';
import { DataReport, UpdateMeta } from '../../protocols/messages.ts';

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
