import { describe, expect, it } from 'vitest';
import { personalizedFields, personalizedLines, personalizedSummary, tableHeader, tableRow } from '../../cli/demo-table.ts';
import type { RoundSummary } from '../../protocols/messages.ts';

/** A round as the study status reports it (only the fields the summary reads matter). */
function round(n: number, phase: RoundSummary['phase'], extra: Partial<RoundSummary> = {}): RoundSummary {
  return {
    round: n, phase, participants: [], updatesReceived: 0, numExamples: 0, meanLoss: null, validationAuc: null, validationLoss: null,
    validationMetrics: { auc: 0.7 + n / 100 }, personalizedMetrics: null, personalizedNodes: 0, globalOnPersonalizedMetrics: null,
    failureReason: null, startedAt: '2026-01-01T00:00:00Z', closedAt: null, modelSha256: null, ...extra,
  } as RoundSummary;
}

describe('cli/demo-table.ts: the demos\' final table', () => {
  it('rows keep the demo\'s layout: label in 44 columns, one space, then two between right-aligned cells', () => {
    const columns = [{ header: 'train rows', width: 10 }, { header: 'test R2', width: 8 }, { header: 'test RMSE', width: 10 }];
    expect(tableHeader(columns)).toBe(`  ${'model'.padEnd(44)} ${'train rows'.padStart(10)}  ${'test R2'.padStart(8)}  ${'test RMSE'.padStart(10)}`);
    expect(tableRow(columns, 'mean-only baseline', ['', '', '814.3'])).toBe(`  ${'mean-only baseline'.padEnd(44)} ${''.padStart(10)}  ${''.padStart(8)}  ${'814.3'.padStart(10)}`);
    expect(tableRow(columns, 'x', ['1'])).toBe(`  ${'x'.padEnd(44)} ${'1'.padStart(10)}  ${''.padStart(8)}  ${''.padStart(10)}`);
  });

  it('personalization is read from the last completed round, against the global model over the same nodes', () => {
    const status = {
      rounds: [
        round(1, 'completed'),
        round(2, 'completed', { personalizedNodes: 2, personalizedMetrics: { auc: 0.91 }, globalOnPersonalizedMetrics: { auc: 0.85 }, validationMetrics: { auc: 0.8 } }),
        round(3, 'failed'),
      ],
    };
    const s = personalizedSummary(status);
    expect(s).toEqual({ nodes: 2, round: 2, global: { auc: 0.85 }, personalized: { auc: 0.91 } });
    expect(personalizedFields(s, 'auc', 'Auc')).toEqual({ globalValidationAuc: 0.85, personalizedAuc: 0.91, personalizedNodes: 2 });
    const columns = [{ header: 'train rows', width: 10 }, { header: 'test AUC', width: 8 }];
    const lines = personalizedLines(s, columns, (m) => ['', m?.auc?.toFixed(4)]);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/pooled over the 2 node\(s\) that personalized/);
    expect(lines[1]).toBe(tableRow(columns, 'federated global model', ['', '0.8500']));
    expect(lines[2]).toBe(tableRow(columns, 'personalized (fine-tuned on each node)', ['', '0.9100']));
  });

  it('no node personalized (--no-personalize, statistics withheld): null fields, no table lines', () => {
    const s = personalizedSummary({ rounds: [round(1, 'completed'), round(2, 'completed')] });
    expect(s).toEqual({ nodes: 0, round: 2, global: { auc: 0.72 }, personalized: null });
    expect(personalizedFields(s, 'auc', 'Auc')).toEqual({ globalValidationAuc: 0.72, personalizedAuc: null, personalizedNodes: 0 });
    expect(personalizedLines(s, [{ header: 'test AUC', width: 8 }], () => [])).toEqual([]);
    expect(personalizedSummary({ rounds: [] })).toEqual({ nodes: 0, round: null, global: null, personalized: null });
    // A metric missing or not finite is null, never NaN in the JSON.
    expect(personalizedFields({ nodes: 1, round: 1, global: { r2: Number.NaN }, personalized: {} }, 'r2', 'R2')).toEqual({ globalValidationR2: null, personalizedR2: null, personalizedNodes: 1 });
  });
});
