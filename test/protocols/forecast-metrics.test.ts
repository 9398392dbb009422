import { describe, expect, it } from 'vitest';
import { forecastInitialWeights, forecastStats, poolForecast, ForecastStats, forecastStudyProblems } from '../../protocols/model-kinds/forecast.ts';
import { initialWeights, modelTensorSpecs } from '../../protocols/model-spec.ts';
import { MODEL_KINDS } from '../../protocols/model-kinds/kind.ts';
import { EvaluationStats, poolEvaluation, PRIMARY_METRIC, statsRows } from '../../protocols/model-kinds/kind.ts';
import { StudyConfig } from '../../protocols/messages.ts';

/** Series 0: y 10, 20 (p 12, 18; naive 8, 25), scale 2. Series 1: y 100 (p 90; naive 100), scale 5. */
const rowsA = [
  { y: 10, p: 12, naive: 8, series: 0 },
  { y: 20, p: 18, naive: 25, series: 0 },
];
const rowsB = [{ y: 100, p: 90, naive: 100, series: 1 }];
const scales = [2, 5];

describe('forecast statistics and pooling', () => {
  it('WAPE, MASE and bias against hand-computed values', () => {
    const stats = forecastStats([...rowsA, ...rowsB], scales);
    expect(stats).toEqual({ kind: 'forecast', n: 3, sumAbsY: 130, sumAbsError: 14, sumError: -10, naiveSumAbsError: 7, series: 2, sumScaledMae: 2 / 2 + 10 / 5, naiveSumScaledMae: 3.5 / 2 + 0 });
    const m = poolForecast([stats]);
    expect(m.wape).toBeCloseTo(14 / 130, 15);
    expect(m.naiveWape).toBeCloseTo(7 / 130, 15);
    // MASE: mean over series of mean|e| / scale: ((2 / 2) + (10 / 5)) / 2 = 1.5; naive (1.75 + 0) / 2.
    expect(m.mase).toBeCloseTo(1.5, 15);
    expect(m.naiveMase).toBeCloseTo(0.875, 15);
    expect(m.bias).toBeCloseTo(-10 / 130, 15);
    expect(m.n).toBe(3);
    expect(m.series).toBe(2);
  });

  it('pooling two nodes equals one node holding both (series disjoint across nodes)', () => {
    const one = poolForecast([forecastStats([...rowsA, ...rowsB], scales)]);
    const two = poolForecast([forecastStats(rowsA, [2]), forecastStats(rowsB.map((r) => ({ ...r, series: 0 })), [5])]);
    for (const k of Object.keys(one)) expect(two[k], k).toBeCloseTo(one[k]!, 12);
    // Not the mean of the nodes' WAPEs (that would weigh a small series like a big one).
    const meanOfRatios = (4 / 30 + 10 / 100) / 2;
    expect(Math.abs(two.wape! - meanOfRatios)).toBeGreaterThan(0.005);
  });

  it('a series with a zero scale counts in WAPE, not in MASE; no rows gives nulls', () => {
    const s = forecastStats(rowsA, [0]);
    expect(s.series).toBe(0);
    expect(s.sumAbsError).toBe(4);
    expect(poolForecast([s]).mase).toBeNull();
    expect(poolForecast([]).wape).toBeNull();
  });

  it('is a kind: the study pools it, statsRows counts it, wape is primary', () => {
    const stats = EvaluationStats.parse(forecastStats(rowsA, [2])) as ForecastStats;
    expect(statsRows(stats)).toBe(2);
    expect(poolEvaluation('forecast', [stats]).wape).toBeCloseTo(4 / 30, 15);
    expect(PRIMARY_METRIC.forecast).toBe('wape');
  });
});

describe('forecast study configuration', () => {
  const base = {
    name: 'f',
    task: { kind: 'forecast', date: 'date', series: 'station', frequency: 'day', horizon: 14, lags: [14, 21] },
    model: { kind: 'linear' },
    features: { target: { column: 'riders', kind: 'numeric', center: 5, scale: 3 }, features: [{ name: 'lag_14', kind: 'numeric', mean: 1, std: 1, fill: 1 }] },
    rounds: 3,
  };
  it('is accepted without DP and refused under DP, naming task.kind', () => {
    expect(StudyConfig.safeParse(base).success).toBe(true);
    const dp = StudyConfig.safeParse({ ...base, privacy: { dpSgd: { clipNorm: 1, noiseMultiplier: 1, samplingRate: 0.1 } } });
    expect(dp.success).toBe(false);
    const issue = dp.error!.issues.find((i) => i.path.join('.') === 'task.kind');
    expect(issue?.message).toMatch(/no noised evaluation/);
  });
  it('needs a numeric target with a center the loss can take', () => {
    const binary = StudyConfig.safeParse({ ...base, features: { ...base.features, target: { column: 'riders', positive: '1' } } });
    expect(binary.error!.issues.map((i) => i.message).join()).toMatch(/a forecast study needs a numeric target/);
    expect(forecastStudyProblems({ task: { ...base.task, loss: 'tweedie' } as never, features: { target: { column: 'riders', center: 0 }, features: [] } })[0].message).toMatch(/center > 0/);
  });
});

describe('forecast round-0 model', () => {
  it('is the seeded Glorot model with the output kernel zeroed (the level forecast), hidden layers untouched', () => {
    const specs = modelTensorSpecs({ kind: 'mlp', hidden: [4] }, 3);
    const seeded = initialWeights(specs, 7);
    const start = MODEL_KINDS.forecast.initialWeights!(specs, 7);
    expect(start).toEqual(forecastInitialWeights(specs, 7));
    expect(Array.from(start[2].values).every((v) => v === 0)).toBe(true);
    expect(start[0].values).toEqual(seeded[0].values);
    expect(Array.from(seeded[2].values).some((v) => v !== 0)).toBe(true);
  });
});
