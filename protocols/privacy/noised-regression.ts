import { z } from 'zod';
import { GaussianNoise } from './gaussian-noise.ts';

/**
 * Regression evaluation under DP (issue 10): what a node of a regression study releases about
 * its validation rows, and how the coordinator pools it. The binary kind's counterpart is the
 * noised score histogram (models/kinds/binary.ts noisedBinaryEvaluation).
 *
 * The query. Each validation row i contributes the vector
 *   v_i = (1, u_i, |u_i|, u_i^2),  u_i = clip(p_i - y_i, -B, B) / B
 * (p the prediction, y the target, both on the target's own scale, B the study's public residual
 * clip, privacy.evaluation.residualClip). The node releases sum_i v_i + N, N discrete Gaussian of
 * std sigma = z x Delta on every coordinate, and rescales: n, the sum of clipped residuals (x B),
 * of their absolute values (x B) and of their squares (x B^2).
 *
 * Sensitivity (add/remove adjacency: one validation row in or out). The sum changes by one v_i,
 * whose L2 norm is sqrt(1 + 2 u^2 + u^4) = 1 + u^2 <= 2 for |u| <= 1: Delta_2 = 2 (attained by a
 * row whose residual is at or beyond the clip). One release of the 4-vector is ONE Gaussian
 * mechanism with noise multiplier sigma / Delta_2 = z (Dwork & Roth 2014, Thm A.1; RDP
 * alpha Delta^2 / (2 sigma^2) = alpha / (2 z^2), Mironov 2017, Prop. 7: the coordinates compose
 * through the L2 norm of the whole vector, not as four releases), so the node's ledger charges it
 * exactly as a noised histogram: (q = 1, z, 1 step). The grid snapping of GaussianNoise.privatize
 * is counted as in every other use (gridStep with 4 coordinates: the integer mechanism's
 * multiplier is exactly z).
 *
 * Why normalize by B rather than add noise z x Delta to raw sums: with raw sums the count and the
 * squared residuals would share one noise std scaled by 1 + B^2, drowning the count whenever B > 1.
 */

/** Coordinates of one row's contribution, and the L2 sensitivity of their sum with |u| <= 1. */
export const REGRESSION_EVALUATION_DIMENSION = 4;

/**
 * L2 sensitivity of the released vector (n, sum u, sum |u|, sum u^2) for add/remove of one row
 * with the normalized clipped residual u: |(1, u, |u|, u^2)| = 1 + u^2, at most 2 (|u| = 1).
 */
export function regressionEvaluationSensitivity(u = 1): number {
  const c = Math.min(1, Math.abs(u));
  return Math.hypot(1, c, c, c * c);
}

/** The bound over every row: what the mechanism is calibrated to. */
export const REGRESSION_EVALUATION_SENSITIVITY = 2;

/**
 * Default residual clip, in target standard deviations (features.target.scale, declared in the
 * study's feature spec, so public): B = 2 x scale. The noise on the pooled squared-residual sum
 * grows as B^2 (std 2 z B^2 per node) while clipping biases RMSE down only for rows whose error is
 * beyond B. The mean-only baseline's RMSE is one scale, so a model worth evaluating has most
 * residuals within 2 scales (for Gaussian errors of std one scale, 95%); B = 3 x scale would more
 * than double the noise on the RMSE for the last few percent of rows. A study with heavy-tailed
 * errors declares privacy.evaluation.residualClip itself (in target units).
 */
export const DEFAULT_RESIDUAL_CLIP_SCALES = 2;

/** The study's residual clip B: the declared one, else DEFAULT_RESIDUAL_CLIP_SCALES x the target's scale. */
export function residualClipOf(evaluation: { residualClip?: number } | undefined, targetScale: number): number {
  return evaluation?.residualClip ?? DEFAULT_RESIDUAL_CLIP_SCALES * targetScale;
}

const noisedCount = z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);
const finite = z.number().finite();

/**
 * What a regression node releases under DP: the noised count and sums (each may be negative, an
 * honest report's sums included), the mechanism, its multiplier z and the clip B it used.
 */
export const NoisedRegressionStats = z.strictObject({
  kind: z.literal('regression'),
  noise: z.strictObject({
    mechanism: z.literal('discrete-gaussian'),
    /** The noise multiplier z: std 2 z on each normalized coordinate (n, sums / B, sum / B^2). */
    noiseMultiplier: z.number().positive().finite(),
    residualClip: z.number().positive().finite(),
  }),
  n: noisedCount,
  sumError: finite,
  sae: finite,
  sse: finite,
});
export type NoisedRegressionStats = z.infer<typeof NoisedRegressionStats>;

/**
 * The node's noised statistics of its residuals p - y (target scale): clipped to [-B, B],
 * summed as normalized coordinates, noised by one discrete Gaussian mechanism (module comment).
 * The node's ledger is charged before this runs (client-node/train.ts).
 */
export function noisedRegressionEvaluation(residuals: ArrayLike<number>, dp: { noiseMultiplier: number; residualClip: number; noise?: GaussianNoise }): NoisedRegressionStats {
  const B = dp.residualClip;
  const z = dp.noiseMultiplier;
  const sums = new Float64Array(REGRESSION_EVALUATION_DIMENSION);
  for (let i = 0; i < residuals.length; i++) {
    // A non-finite prediction counts as a residual at the clip: it must not poison the sums.
    const e = Number.isFinite(residuals[i]) ? residuals[i] : B;
    const u = Math.max(-1, Math.min(1, e / B));
    sums[0] += 1;
    sums[1] += u;
    sums[2] += Math.abs(u);
    sums[3] += u * u;
  }
  const std = z * REGRESSION_EVALUATION_SENSITIVITY;
  (dp.noise ?? new GaussianNoise()).privatize(sums, GaussianNoise.gridStep(std, z, REGRESSION_EVALUATION_DIMENSION));
  return {
    kind: 'regression',
    noise: { mechanism: 'discrete-gaussian', noiseMultiplier: z, residualClip: B },
    // Rounded: post-processing, and the count's release name is a count.
    n: Math.round(sums[0]),
    sumError: sums[1] * B,
    sae: sums[2] * B,
    sse: sums[3] * B * B,
  };
}

/** Rows a noised regression report covers: its noised count, clamped at 0 (post-processing). */
export function noisedRegressionRows(stats: NoisedRegressionStats): number {
  return Math.max(0, stats.n);
}

/**
 * Pools noised regression reports: the raw noised sums are added as they are (clamping each
 * node's first would bias them upward), and only the pooled values are clamped, to what clipped
 * residuals allow: n >= 0, 0 <= SAE <= n B, 0 <= SSE <= n B^2, |sum e| <= n B. Then
 * RMSE = sqrt(SSE / n), MAE = SAE / n, bias = sum e / n: the metrics of the CLIPPED residuals.
 * R^2 and the mean-only baseline need sums of y, which a node does not release under DP: null.
 * `noised: 1` marks the metrics, `residualClip` says what they are clipped to.
 */
export function poolNoisedRegression(reports: NoisedRegressionStats[]): Record<string, number | null> {
  const clip = reports[0]?.noise.residualClip;
  const undefinedMetrics = { rmse: null, mae: null, r2: null, bias: null, baselineRmse: null, baselineMae: null };
  if (clip === undefined) return { ...undefinedMetrics, n: 0, noised: 1 };
  if (reports.some((r) => r.noise.residualClip !== clip)) throw new Error('cannot pool regression reports clipped to different bounds');
  const sum = (f: (r: NoisedRegressionStats) => number) => reports.reduce((s, r) => s + f(r), 0);
  const n = Math.max(0, sum((r) => r.n));
  const z = Math.sqrt(sum((r) => r.noise.noiseMultiplier ** 2));
  const noiseFields = { noised: 1, residualClip: clip, noiseStdPerCount: z * REGRESSION_EVALUATION_SENSITIVITY };
  if (n === 0) return { ...undefinedMetrics, n: 0, ...noiseFields };
  const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));
  const sse = clamp(sum((r) => r.sse), 0, n * clip * clip);
  const sae = clamp(sum((r) => r.sae), 0, n * clip);
  const sumError = clamp(sum((r) => r.sumError), -n * clip, n * clip);
  return { rmse: Math.sqrt(sse / n), mae: sae / n, r2: null, bias: sumError / n, baselineRmse: null, baselineMae: null, n, ...noiseFields };
}
