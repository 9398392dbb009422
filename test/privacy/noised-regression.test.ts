import { describe, expect, it } from 'vitest';
import { StudyConfig, type StudyConfigInput } from '../../protocols/messages.ts';
import { EvaluationStats, isNoised, poolStudyEvaluation, statsRows } from '../../protocols/model-kinds/kind.ts';
import { GaussianNoise, type RandomWords } from '../../protocols/privacy/gaussian-noise.ts';
import {
  DEFAULT_RESIDUAL_CLIP_SCALES,
  noisedRegressionEvaluation,
  poolNoisedRegression,
  REGRESSION_EVALUATION_SENSITIVITY,
  regressionEvaluationSensitivity,
  residualClipOf,
  type NoisedRegressionStats,
} from '../../protocols/privacy/noised-regression.ts';
import { Release } from '../../client-node/release.ts';
import { expectedResidualClip } from '../../coordinator/rounds/evaluation-pooling.ts';

/**
 * Issue 10, regression under DP: a node releases the noised count and sums of its clipped
 * residuals (protocols/privacy/noised-regression.ts). The sensitivity and the pooled metrics are
 * checked against closed forms; the noise against exact sums and its stated std.
 */

/** splitmix32: a seedable source for a reproducible statistical test only (production uses the OS CSPRNG). */
class SeededWords implements RandomWords {
  constructor(private state: number) {}
  uint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
}

const noisedReport = (n: number, sumError: number, sae: number, sse: number, residualClip = 2, noiseMultiplier = 5): NoisedRegressionStats => ({
  kind: 'regression',
  noise: { mechanism: 'discrete-gaussian', noiseMultiplier, residualClip },
  n,
  sumError,
  sae,
  sse,
});

const regressionStudy: StudyConfigInput = {
  name: 'value',
  model: { kind: 'logreg' },
  task: { kind: 'regression' },
  features: { target: { column: 'y', kind: 'numeric', center: 50, scale: 40 }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] },
  rounds: 1,
  privacy: { dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05 } },
};

describe('noised regression evaluation', () => {
  it('has L2 sensitivity 1 + u^2 per row, 2 at the clip: one row in or out moves (n, sum u, sum |u|, sum u^2) by at most 2', () => {
    expect(regressionEvaluationSensitivity(0)).toBe(1);
    expect(regressionEvaluationSensitivity(0.5)).toBeCloseTo(1.25, 12);
    expect(regressionEvaluationSensitivity(-1)).toBeCloseTo(2, 12);
    // Beyond the clip a residual counts as the clip.
    expect(regressionEvaluationSensitivity(7)).toBeCloseTo(2, 12);
    expect(REGRESSION_EVALUATION_SENSITIVITY).toBe(2);
    // The released vector of a dataset and of the same dataset with one row more differ by that
    // row's vector: measured on the exact sums (noise of std ~0: a huge z is not needed, the
    // sensitivity is a property of the sums), for rows anywhere in [-3B, 3B].
    for (const e of [-9, -3, -1.2, 0, 0.4, 2.9, 3, 50]) {
      const B = 3;
      const u = Math.max(-1, Math.min(1, e / B));
      const diff = Math.hypot(1, u, Math.abs(u), u * u);
      expect(diff).toBeLessThanOrEqual(REGRESSION_EVALUATION_SENSITIVITY + 1e-12);
      expect(diff).toBeCloseTo(regressionEvaluationSensitivity(u), 12);
    }
  });

  it('defaults the clip to 2 x the target scale, takes a declared one, and the coordinator expects the same', () => {
    expect(DEFAULT_RESIDUAL_CLIP_SCALES).toBe(2);
    expect(residualClipOf(undefined, 40)).toBe(80);
    expect(residualClipOf({ residualClip: 25 }, 40)).toBe(25);
    expect(expectedResidualClip(StudyConfig.parse(regressionStudy))).toBe(80);
    const declared = StudyConfig.parse({ ...regressionStudy, privacy: { ...regressionStudy.privacy, evaluation: { residualClip: 25 } } });
    expect(expectedResidualClip(declared)).toBe(25);
    expect(StudyConfig.safeParse({ ...regressionStudy, privacy: { ...regressionStudy.privacy, evaluation: { residualClip: -1 } } }).success).toBe(false);
  });

  it('pools the raw noised sums and clamps only the pooled ones: RMSE, MAE and bias in closed form, R^2 and the baseline null', () => {
    // Two nodes, B = 2. Raw sums: n = 10 + (-1) = 9, sum e = 3 + (-4.5) = -1.5, SAE = 8 + 1 = 9, SSE = 12 + (-3) = 9.
    const a = noisedReport(10, 3, 8, 12);
    const b = noisedReport(-1, -4.5, 1, -3);
    const pooled = poolNoisedRegression([a, b]);
    expect(pooled).toMatchObject({ n: 9, rmse: 1, mae: 1, bias: -1.5 / 9, r2: null, baselineRmse: null, baselineMae: null, noised: 1, residualClip: 2 });
    expect(pooled.noiseStdPerCount).toBeCloseTo(2 * Math.sqrt(50), 12);
    // Through the model kind (what the coordinator calls), the same.
    const study = StudyConfig.parse(regressionStudy);
    expect(poolStudyEvaluation(study, [a, b])).toEqual(pooled);
    // Clamped at the pool: negative SSE -> 0; SAE over n B -> n B; bias beyond B -> B.
    expect(poolNoisedRegression([noisedReport(4, 100, 100, -5)])).toMatchObject({ n: 4, rmse: 0, mae: 2, bias: 2 });
    // Clamping each node first would have given n = 10 (b's -1 as 0): the pool uses the raw sums.
    expect(poolNoisedRegression([noisedReport(10, 0, 0, 0), noisedReport(-1, 0, 0, 0)]).n).toBe(9);
    // A pooled count at or below 0: no metrics.
    expect(poolNoisedRegression([noisedReport(-3, 1, 1, 1)])).toMatchObject({ n: 0, rmse: null, mae: null, bias: null });
    expect(() => poolNoisedRegression([a, noisedReport(1, 0, 0, 0, 3)])).toThrow(/different bounds/);
    // Never mixed with exact reports.
    expect(() => poolStudyEvaluation(study, [a, { kind: 'regression', n: 1, sumY: 1, sumY2: 1, sumError: 0, sse: 0, sae: 0, baselineSae: 0 }])).toThrow(/mixes noised and exact/);
  });

  it('releases sums that differ from the exact ones by noise of std 2 z (normalized units), centred on the clipped sums', () => {
    const B = 2;
    const z = 5;
    // 200 rows, residuals in [-4, 4]: half of them beyond the clip.
    const residuals = Array.from({ length: 200 }, (_, i) => -4 + (8 * i) / 199);
    const clipped = residuals.map((e) => Math.max(-B, Math.min(B, e)));
    const exact = { n: 200, sumError: clipped.reduce((s, e) => s + e, 0), sae: clipped.reduce((s, e) => s + Math.abs(e), 0), sse: clipped.reduce((s, e) => s + e * e, 0) };
    const noise = new GaussianNoise(new SeededWords(7));
    const runs = 400;
    const deviations: number[][] = [[], [], [], []];
    let identical = 0;
    for (let i = 0; i < runs; i++) {
      const s = noisedRegressionEvaluation(residuals, { noiseMultiplier: z, residualClip: B, noise });
      expect(EvaluationStats.parse(s)).toEqual(s);
      expect(Number.isInteger(s.n)).toBe(true);
      if (s.n === exact.n && Math.abs(s.sse - exact.sse) < 1e-9) identical++;
      // Back to normalized units: the noise on each coordinate.
      deviations[0].push(s.n - exact.n);
      deviations[1].push((s.sumError - exact.sumError) / B);
      deviations[2].push((s.sae - exact.sae) / B);
      deviations[3].push((s.sse - exact.sse) / (B * B));
    }
    expect(identical).toBeLessThan(5);
    for (const d of deviations) {
      const mean = d.reduce((s, x) => s + x, 0) / runs;
      const std = Math.sqrt(d.reduce((s, x) => s + (x - mean) ** 2, 0) / (runs - 1));
      // std 2 z = 10: the sample std of 400 draws is within 15% of it, the mean within 4 standard errors.
      expect(std).toBeGreaterThan(10 * 0.85);
      expect(std).toBeLessThan(10 * 1.15);
      expect(Math.abs(mean)).toBeLessThan((4 * 10) / Math.sqrt(runs) + 0.5);
    }
  });

  it("the node's release step sends the noised report (count = the clamped noised count) and refuses exact regression statistics under DP", () => {
    const study = StudyConfig.parse(regressionStudy);
    const release = Release.of(study);
    const stats = noisedRegressionEvaluation([1, -2, 300], { noiseMultiplier: 5, residualClip: expectedResidualClip(study) });
    expect(isNoised(stats)).toBe(true);
    expect(release.evaluation({ numExamples: statsRows(stats), stats })).toEqual({ numExamples: Math.max(0, stats.n), stats });
    expect(() => release.evaluation({ numExamples: 3, stats: { kind: 'regression', n: 3, sumY: 1, sumY2: 1, sumError: 0, sse: 0, sae: 0, baselineSae: 0 } })).toThrow(/noised/);
  });
});
