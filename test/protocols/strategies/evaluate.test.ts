import { describe, expect, it } from 'vitest';
import { createStrategy } from '../../../protocols/strategies/index.ts';
import { poolEvaluation, type EvaluationStats } from '../../../protocols/model-kinds/kind.ts';
import { STRATEGY_NAMES } from '../../../protocols/strategies/config.ts';
import { StudyConfig } from '../../../protocols/messages.ts';

const regression = (n: number, sumY: number, sumY2: number, sse: number): EvaluationStats => ({ kind: 'regression', n, sumY, sumY2, sumError: 0, sse, sae: sse, baselineSae: sse });
const study = (strategy: Record<string, unknown>, central = false) =>
  StudyConfig.parse({
    name: 's',
    model: { kind: 'logreg' },
    features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] },
    rounds: 1,
    minNodesPerRound: 10,
    strategy,
    ...(central ? { privacy: { central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } } : {}),
  });

describe("aggregateEvaluate (Flower's aggregate_evaluate)", () => {
  const results = [
    { nodeId: 'a', numExamples: 4, stats: regression(4, 8, 20, 2) },
    { nodeId: 'b', numExamples: 6, stats: regression(6, 6, 10, 3) },
  ];
  const pool = (stats: EvaluationStats[]) => poolEvaluation('regression', stats, 1);
  const expected = poolEvaluation('regression', results.map((r) => r.stats), 1);

  it('every strategy pools all reports by default, whatever failed', () => {
    for (const name of STRATEGY_NAMES) {
      const strategy = createStrategy(study({ name }));
      expect(strategy.aggregateEvaluate(1, results, [{ nodeId: 'c', reason: 'late' }], pool)).toEqual(expected);
    }
  });

  it('the central-DP wrapper delegates to its inner strategy', () => {
    const strategy = createStrategy(study({ name: 'fedadam' }, true));
    expect(strategy.aggregateEvaluate(1, results, [], pool)).toEqual(expected);
    // Pooled, not averaged per node: 10 rows, SSE 5.
    expect(expected.n).toBe(10);
    expect(expected.rmse).toBeCloseTo(Math.sqrt(5 / 10), 12);
  });
});
