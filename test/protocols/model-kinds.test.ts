/**
 * Pooling a kind's sufficient statistics across nodes gives exactly the metric a central
 * evaluation of the concatenated rows would: rows split across 3 "nodes", each node's stats
 * (computed as models/kinds/*.ts do), pooled, against the metrics computed directly.
 */
import { describe, expect, it } from 'vitest';
import { aucFromHistogram, rocAuc, scoreHistogram } from '../../protocols/metrics.ts';
import { poolBinary, poolEvaluation, poolRegression, statsRows, type BinaryStats, type RegressionStats } from '../../protocols/model-kinds/kind.ts';
import { mulberry32 } from '../../protocols/random.ts';
import { FeatureSpec } from '../../protocols/feature-spec.ts';
import { ModelSpec, modelTensorSpecs, outputActivation } from '../../protocols/model-spec.ts';

function regressionStats(y: number[], p: number[], center: number): RegressionStats {
  const s: RegressionStats = { kind: 'regression', n: y.length, sumY: 0, sumY2: 0, sumError: 0, sse: 0, sae: 0, baselineSae: 0 };
  for (let i = 0; i < y.length; i++) {
    const e = p[i] - y[i];
    s.sumY += y[i];
    s.sumY2 += y[i] * y[i];
    s.sumError += e;
    s.sse += e * e;
    s.sae += Math.abs(e);
    s.baselineSae += Math.abs(y[i] - center);
  }
  return s;
}

function binaryStats(p: number[], y: number[]): BinaryStats {
  let brierSum = 0;
  let logLossSum = 0;
  for (let i = 0; i < p.length; i++) {
    brierSum += (p[i] - y[i]) ** 2;
    const q = Math.min(1 - 1e-7, Math.max(1e-7, p[i]));
    logLossSum -= y[i] === 1 ? Math.log(q) : Math.log(1 - q);
  }
  return { kind: 'binary', histogram: scoreHistogram(p, y), brierSum, logLossSum };
}

const splits = (n: number) => [0, Math.floor(n * 0.2), Math.floor(n * 0.55), n];

describe('pooled regression metrics equal the central ones', () => {
  const random = mulberry32(7);
  const n = 1000;
  // Dollar-scale target, heavy-tailed; predictions with error and a bias.
  const y = Array.from({ length: n }, () => (random() < 0.3 ? 0 : 100 * Math.exp(2 * random())));
  const p = y.map((v) => v * 0.8 + 25 + 40 * (random() - 0.5));
  const center = 317.5;

  it('RMSE, MAE, R^2, bias and the baseline to 1e-9 (relative)', () => {
    const cut = splits(n);
    const reports = [0, 1, 2].map((k) => regressionStats(y.slice(cut[k], cut[k + 1]), p.slice(cut[k], cut[k + 1]), center));
    expect(reports.map(statsRows)).toEqual([200, 350, 450]);
    const pooled = poolEvaluation('regression', reports, center);

    const mean = y.reduce((a, b) => a + b, 0) / n;
    let sse = 0;
    let sae = 0;
    let bias = 0;
    let sst = 0;
    let baseSse = 0;
    let baseSae = 0;
    for (let i = 0; i < n; i++) {
      sse += (p[i] - y[i]) ** 2;
      sae += Math.abs(p[i] - y[i]);
      bias += p[i] - y[i];
      sst += (y[i] - mean) ** 2;
      baseSse += (y[i] - center) ** 2;
      baseSae += Math.abs(y[i] - center);
    }
    const central = { rmse: Math.sqrt(sse / n), mae: sae / n, r2: 1 - sse / sst, bias: bias / n, baselineRmse: Math.sqrt(baseSse / n), baselineMae: baseSae / n };
    for (const [k, v] of Object.entries(central)) {
      expect(Math.abs((pooled[k] as number) - v), k).toBeLessThan(1e-9 * Math.max(1, Math.abs(v)));
    }
    expect(pooled.n).toBe(n);
    expect(pooled.r2).toBeGreaterThan(0.5);
  });

  it('no rows: nulls; a constant target: r2 null', () => {
    expect(poolRegression([], 0).rmse).toBeNull();
    const constant = poolRegression([regressionStats([5, 5, 5], [4, 5, 6], 5)], 5);
    expect(constant.r2).toBeNull();
    expect(constant.rmse).toBeCloseTo(Math.sqrt(2 / 3), 12);
  });

  it('refuses a report of the other kind', () => {
    expect(() => poolEvaluation('binary', [regressionStats([1], [1], 0)])).toThrow(/regression report in a binary study/);
  });
});

describe('pooled binary metrics equal the central ones', () => {
  const random = mulberry32(11);
  const n = 1500;
  const y = Array.from({ length: n }, () => (random() < 0.3 ? 1 : 0));
  const p = y.map((v) => Math.min(1, Math.max(0, 0.35 * v + 0.65 * random())));

  it('AUC (the pooled histogram is the central one), log loss and Brier to 1e-9', () => {
    const cut = splits(n);
    const reports = [0, 1, 2].map((k) => binaryStats(p.slice(cut[k], cut[k + 1]), y.slice(cut[k], cut[k + 1])));
    const pooled = poolBinary(reports);
    const central = binaryStats(p, y);
    expect(pooled.auc).toBe(aucFromHistogram(central.histogram));
    // Within a bin's width of the exact (per-row) AUC.
    expect(Math.abs(pooled.auc! - rocAuc(p, y))).toBeLessThan(2e-3);
    expect(Math.abs(pooled.logLoss! - central.logLossSum / n)).toBeLessThan(1e-9);
    expect(Math.abs(pooled.brier! - central.brierSum / n)).toBeLessThan(1e-9);
    expect(pooled.n).toBe(n);
  });
});

describe('feature spec targets and the linear model', () => {
  const features = [{ name: 'x', kind: 'numeric', mean: 0, std: 1, fill: 0 }];

  it('a binary target parses as before; a numeric one with center, scale and transform', () => {
    expect(FeatureSpec.parse({ target: { column: 'y', positive: 'yes' }, features }).target).toEqual({ column: 'y', positive: 'yes' });
    const numeric = { column: 'spend', kind: 'numeric', center: 120.5, scale: 80, transform: 'log1p' };
    expect(FeatureSpec.parse({ target: numeric, features }).target).toEqual(numeric);
    expect(FeatureSpec.safeParse({ target: { column: 'spend', kind: 'numeric', center: 1, scale: 0 }, features }).success).toBe(false);
    expect(FeatureSpec.safeParse({ target: { column: 'spend', kind: 'numeric', scale: 1 }, features }).success).toBe(false);
    expect(FeatureSpec.safeParse({ target: { column: 'x', kind: 'numeric', center: 0, scale: 1 }, features }).success).toBe(false);
  });

  it('linear is one dense layer, named as logreg; the output activation follows the task', () => {
    const linear = ModelSpec.parse({ kind: 'linear' });
    expect(modelTensorSpecs(linear, 4)).toEqual(modelTensorSpecs({ kind: 'logreg' }, 4));
    expect(modelTensorSpecs(linear, 4).map((s) => s.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);
    expect(outputActivation({ kind: 'binary' })).toBe('sigmoid');
    expect(outputActivation({ kind: 'regression' })).toBe('linear');
  });
});
