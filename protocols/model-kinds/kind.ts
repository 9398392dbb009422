import { z } from 'zod';
import { aucFromHistogram, integerArray, poolHistograms, ScoreHistogram } from '../metrics.ts';
import { modelTensorSpecs, type ModelSpec } from '../model-spec.ts';
import { isNumericTarget, type Target } from '../feature-spec.ts';
import type { TensorSpec, WeightSet } from '../tensors.ts';
import { NoisedRegressionStats, noisedRegressionRows, poolNoisedRegression } from '../privacy/noised-regression.ts';
import { ForecastStats, ForecastTask, forecastInitialWeights, poolForecast } from './forecast.ts';

export { NoisedRegressionStats } from '../privacy/noised-regression.ts';
export { ForecastStats, ForecastTask } from './forecast.ts';
import { poolRecommend, RecommendStats, RecommendTask, recommendSharedTensors, recommendTensorSpecs, RECOMMEND_NODE_LOCAL_TENSORS } from './recommend.ts';
export { RecommendStats, RecommendTask } from './recommend.ts';
import { NoisedRecommendStats, noisedRecommendUsers, poolNoisedRecommend } from '../privacy/noised-recommend.ts';
export { NoisedRecommendStats } from '../privacy/noised-recommend.ts';

/**
 * Model kinds, the pure half (the coordinator's view; the node's half with TensorFlow lives in
 * models/kinds/). A kind fixes what a node reports when it evaluates a model: sufficient
 * statistics (sums, counts, histograms) that pool EXACTLY across nodes, never node-computed
 * ratios, so a federated RMSE or AUC is the one a central evaluation on the pooled rows would give.
 */

/** The study's task: what the target is and how the model is fit to it. */
export const TaskSpec = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('binary') }),
  z.strictObject({
    kind: z.literal('regression'),
    /**
     * mse on the standardized target; huber (robust to outliers) with `huberDelta` in standardized
     * units; tweedie (log link, power in (1, 2): a point mass at zero plus a heavy right tail, as
     * lifetime value and spend have); log1p (mse on log(1 + y), predictions expm1).
     */
    loss: z.enum(['mse', 'huber', 'tweedie', 'log1p']).default('mse'),
    huberDelta: z.number().positive().finite().default(1),
    tweediePower: z.number().gt(1).lt(2).default(1.5),
  }),
  ForecastTask,
  RecommendTask,
]);
export type TaskSpec = z.infer<typeof TaskSpec>;
export type KindName = TaskSpec['kind'];

/** The target transform a regression loss implies (the node trains on that scale). */
export const LOSS_TRANSFORM = { mse: 'identity', huber: 'identity', log1p: 'log1p', tweedie: 'log' } as const;

/**
 * What a regression study's target must satisfy for its loss, checked when the study is created
 * (a 400 naming the field) rather than on every node at its first round: log1p needs a center
 * above -1, tweedie (a mean of a non-negative target under a log link) a positive center, and a
 * declared transform must be the one the loss implies.
 */
export function regressionTargetProblem(task: TaskSpec, target: { center?: number; transform?: string }): { path: string[]; message: string } | undefined {
  if (task.kind !== 'regression') return undefined;
  const center = target.center ?? Number.NaN;
  if (task.loss === 'log1p' && !(center > -1)) return { path: ['features', 'target', 'center'], message: `task.loss "log1p" needs features.target.center > -1 (got ${center})` };
  if (task.loss === 'tweedie' && !(center > 0)) return { path: ['features', 'target', 'center'], message: `task.loss "tweedie" needs features.target.center > 0, the mean of a non-negative target (got ${center})` };
  const implied = LOSS_TRANSFORM[task.loss];
  if (target.transform !== undefined && target.transform !== implied) return { path: ['features', 'target', 'transform'], message: `features.target.transform is "${target.transform}" but task.loss "${task.loss}" trains on the "${implied}" scale; leave transform out or set it to "${implied}"` };
  return undefined;
}

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const finite = z.number().finite();

/** Binary classification: the score histogram split by label, and the Brier sum. */
export const BinaryStats = z.strictObject({
  kind: z.literal('binary'),
  histogram: ScoreHistogram,
  /** Sum over rows of (p - y)^2. */
  brierSum: finite.nonnegative(),
  /** Sum over rows of the binary cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7]). */
  logLossSum: finite.nonnegative(),
});
export type BinaryStats = z.infer<typeof BinaryStats>;

/**
 * Regression on the target's own scale (dollars, units): with n rows, targets y and predictions
 * p, and c the study's mean-only baseline (the target center of the feature spec, fixed before
 * training): sums of y, y^2, (p - y), (p - y)^2, |p - y| and |y - c|.
 */
export const RegressionStats = z.strictObject({
  kind: z.literal('regression'),
  n: count,
  sumY: finite,
  sumY2: finite.nonnegative(),
  sumError: finite,
  sse: finite.nonnegative(),
  sae: finite.nonnegative(),
  baselineSae: finite.nonnegative(),
});
export type RegressionStats = z.infer<typeof RegressionStats>;

/**
 * Binary classification under DP (issue 10): a coarse score histogram per label (the study's
 * privacy.evaluation.bins) whose every count carries discrete Gaussian noise of std `noiseStd`
 * (Canonne, Kamath, Steinke 2020; protocols/privacy/gaussian-noise.ts), so counts are integers that
 * may be negative. Nothing else: no Brier or log-loss sum (their
 * sensitivity is unbounded without clipping); the coordinator derives both from the pooled
 * histogram at the bins' midpoints.
 */
export const NoisedBinaryStats = z.strictObject({
  kind: z.literal('binary'),
  noise: z.strictObject({ mechanism: z.literal('discrete-gaussian'), noiseStd: z.number().positive().finite() }),
  histogram: z
    .strictObject({ bins: z.number().int().min(2).max(1000), positives: integerArray(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER), negatives: integerArray(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER) })
    .refine((h) => h.positives.length === h.bins && h.negatives.length === h.bins, { message: 'positives and negatives must each have `bins` entries' }),
});
export type NoisedBinaryStats = z.infer<typeof NoisedBinaryStats>;

export const EvaluationStats = z.union([BinaryStats, NoisedBinaryStats, RegressionStats, NoisedRegressionStats, ForecastStats, RecommendStats, NoisedRecommendStats]);
export type EvaluationStats = z.infer<typeof EvaluationStats>;

/** Pooled metrics of a round's evaluation; null where undefined (one class only, no rows). */
export type PooledMetrics = Record<string, number | null>;

/** The metric each kind reports first (the demo's table, the bench's column). */
export const PRIMARY_METRIC: Record<KindName, string> = { binary: 'auc', regression: 'r2', forecast: 'wape', recommend: 'recallAtK' };

/** Rows a report's statistics cover, for checking them against the report's numExamples. */
export function statsRows(stats: EvaluationStats): number {
  if (stats.kind === 'regression') return isNoised(stats) ? noisedRegressionRows(stats) : stats.n;
  if (stats.kind === 'forecast') return stats.n;
  if (stats.kind === 'recommend') return isNoised(stats) ? noisedRecommendUsers(stats) : stats.users;
  let n = 0;
  for (let b = 0; b < stats.histogram.bins; b++) n += stats.histogram.positives[b] + stats.histogram.negatives[b];
  // Noised counts may sum below 0; the report's count is the clamped sum (post-processing).
  return isNoised(stats) ? Math.max(0, n) : n;
}

/** Statistics released under DP (noised), rather than exact ones. */
export function isNoised(stats: EvaluationStats): stats is NoisedBinaryStats | NoisedRegressionStats | NoisedRecommendStats {
  return 'noise' in stats;
}

/**
 * Pools noised histograms (issue 10): the raw noised counts are summed as they are (negative
 * counts included: clamping each node's counts first would bias every bin upward by about
 * 0.4 sigma per node), and only the pooled counts are clamped at 0 before AUC, log loss and
 * Brier are computed from them. Log loss and Brier use each bin's midpoint m_b as the score:
 * logLoss = sum_b (P_b (-ln m_b) + N_b (-ln(1 - m_b))) / n, brier = sum_b (P_b (1 - m_b)^2 +
 * N_b m_b^2) / n, n = sum_b (P_b + N_b) of the clamped counts. `noised: 1` marks the metrics.
 */
export function poolNoisedBinary(reports: NoisedBinaryStats[]): PooledMetrics {
  const bins = reports[0]?.histogram.bins;
  if (bins === undefined) return { auc: null, logLoss: null, brier: null, n: 0, noised: 1 };
  const raw = poolHistogramsSigned(reports.map((r) => r.histogram));
  const positives = raw.positives.map((c) => Math.max(0, c));
  const negatives = raw.negatives.map((c) => Math.max(0, c));
  let n = 0;
  let logLoss = 0;
  let brier = 0;
  for (let b = 0; b < bins; b++) {
    const m = (b + 0.5) / bins;
    n += positives[b] + negatives[b];
    logLoss += -positives[b] * Math.log(m) - negatives[b] * Math.log(1 - m);
    brier += positives[b] * (1 - m) ** 2 + negatives[b] * m * m;
  }
  const auc = aucFromHistogram({ bins, positives, negatives });
  const noiseStd = Math.sqrt(reports.reduce((s, r) => s + r.noise.noiseStd ** 2, 0));
  return { auc: orNull(auc), logLoss: n > 0 ? logLoss / n : null, brier: n > 0 ? brier / n : null, n, noised: 1, noiseStdPerCount: noiseStd };
}

/** Sums histograms of one size, counts as they are (negative allowed). */
function poolHistogramsSigned(histograms: Array<{ bins: number; positives: number[]; negatives: number[] }>): { positives: number[]; negatives: number[] } {
  const bins = histograms[0].bins;
  const positives = new Array<number>(bins).fill(0);
  const negatives = new Array<number>(bins).fill(0);
  for (const h of histograms) {
    if (h.bins !== bins) throw new Error(`cannot pool histograms of ${bins} and ${h.bins} bins`);
    for (let b = 0; b < bins; b++) {
      positives[b] += h.positives[b];
      negatives[b] += h.negatives[b];
    }
  }
  return { positives, negatives };
}

const orNull = (x: number) => (Number.isFinite(x) ? x : null);

export function poolBinary(reports: Array<BinaryStats | NoisedBinaryStats>): PooledMetrics {
  const noised = reports.filter(isNoised) as NoisedBinaryStats[];
  if (noised.length > 0) {
    // One round's reports are all noised or all exact (the study decides); never mix them.
    if (noised.length !== reports.length) throw new Error('a round mixes noised and exact evaluation reports');
    return poolNoisedBinary(noised);
  }
  return poolExactBinary(reports as BinaryStats[]);
}

function poolExactBinary(reports: BinaryStats[]): PooledMetrics {
  const pooled = poolHistograms(reports.map((r) => r.histogram));
  const n = reports.reduce((s, r) => s + statsRows(r), 0);
  return {
    auc: pooled ? orNull(aucFromHistogram(pooled)) : null,
    logLoss: n > 0 ? reports.reduce((s, r) => s + r.logLossSum, 0) / n : null,
    brier: n > 0 ? reports.reduce((s, r) => s + r.brierSum, 0) / n : null,
    n,
  };
}

/**
 * RMSE, MAE, bias and R^2 of the pooled rows, and the same for the mean-only baseline c:
 * baseline SSE = sum (y - c)^2 = sumY2 - 2 c sumY + n c^2; R^2 = 1 - SSE / SST with SST about
 * the pooled mean, sumY2 - sumY^2 / n.
 */
export function poolRegression(all: Array<RegressionStats | NoisedRegressionStats>, baselineCenter: number): PooledMetrics {
  const noised = all.filter(isNoised) as NoisedRegressionStats[];
  if (noised.length > 0) {
    // As for binary: one round's reports are all noised or all exact (issue 10, noised-regression.ts).
    if (noised.length !== all.length) throw new Error('a round mixes noised and exact evaluation reports');
    return poolNoisedRegression(noised);
  }
  const reports = all as RegressionStats[];
  const n = reports.reduce((s, r) => s + r.n, 0);
  if (n === 0) return { rmse: null, mae: null, r2: null, bias: null, baselineRmse: null, baselineMae: null, n: 0 };
  const sum = (f: (r: RegressionStats) => number) => reports.reduce((s, r) => s + f(r), 0);
  const sumY = sum((r) => r.sumY);
  const sumY2 = sum((r) => r.sumY2);
  const sse = sum((r) => r.sse);
  const sst = Math.max(0, sumY2 - (sumY * sumY) / n);
  const c = baselineCenter;
  const baselineSse = Math.max(0, sumY2 - 2 * c * sumY + n * c * c);
  return {
    rmse: Math.sqrt(sse / n),
    mae: sum((r) => r.sae) / n,
    r2: sst > 0 ? 1 - sse / sst : null,
    bias: sum((r) => r.sumError) / n,
    baselineRmse: Math.sqrt(baselineSse / n),
    baselineMae: sum((r) => r.baselineSae) / n,
    n,
  };
}

/**
 * One model kind, the coordinator's half: the model's tensors and which of them are shared
 * (aggregated; the rest never leave the node), the statistics an evaluation reports, and how
 * they pool. The node's half (TensorFlow) is models/kinds/kind.ts.
 */
export interface ModelKind<S extends EvaluationStats = EvaluationStats> {
  readonly name: KindName;
  /** Every tensor of the model, in protocol order. */
  tensorSpecs(model: ModelSpec, inputWidth: number, task?: TaskSpec): TensorSpec[];
  /**
   * The tensors a node sends and the coordinator aggregates. Binary and regression share all of
   * them; a kind with per-user factors (recommendation) keeps those on the node.
   */
  sharedTensors(specs: TensorSpec[]): TensorSpec[];
  /** Tensors trained and kept on the node, never sent (recommendation's user_factors); none for dense kinds. */
  readonly nodeLocalTensors?: readonly string[];
  /** The round-0 weights (default: protocols/model-spec.ts initialWeights, seeded Glorot). */
  initialWeights?(specs: TensorSpec[], seed: number): WeightSet;
  /** The sufficient statistics an evaluation reports. */
  readonly stats: z.ZodType<S>;
  /** Pooled metrics of one round's reports; `baselineCenter` is the regression mean-only baseline. */
  pool(reports: S[], baselineCenter: number): PooledMetrics;
  readonly primaryMetric: string;
}

const allShared = (specs: TensorSpec[]) => specs;

export const MODEL_KINDS: { readonly binary: ModelKind<BinaryStats | NoisedBinaryStats>; readonly regression: ModelKind<RegressionStats | NoisedRegressionStats>; readonly forecast: ModelKind<ForecastStats>; readonly recommend: ModelKind<RecommendStats | NoisedRecommendStats> } = {
  binary: { name: 'binary', tensorSpecs: modelTensorSpecs, sharedTensors: allShared, stats: z.union([BinaryStats, NoisedBinaryStats]), pool: (reports) => poolBinary(reports), primaryMetric: PRIMARY_METRIC.binary },
  regression: { name: 'regression', tensorSpecs: modelTensorSpecs, sharedTensors: allShared, stats: z.union([RegressionStats, NoisedRegressionStats]), pool: poolRegression, primaryMetric: PRIMARY_METRIC.regression },
  // Forecast: the dense model of regression; exact statistics only (a study under DP is refused: messages.ts).
  forecast: { name: 'forecast', tensorSpecs: modelTensorSpecs, sharedTensors: allShared, initialWeights: forecastInitialWeights, stats: ForecastStats, pool: (reports) => poolForecast(reports), primaryMetric: PRIMARY_METRIC.forecast },
  // Recommend: matrix factorization; item factors and biases shared, user factors node-local (recommend.ts).
  recommend: { name: 'recommend', tensorSpecs: (_m, _w, task) => recommendTensorSpecs(task as RecommendTask), sharedTensors: recommendSharedTensors, nodeLocalTensors: RECOMMEND_NODE_LOCAL_TENSORS, stats: z.union([RecommendStats, NoisedRecommendStats]), pool: (reports) => poolRecommendReports(reports), primaryMetric: PRIMARY_METRIC.recommend },
};

/** Recommend: noised reports (a study under DP, user-level) pool as noised-recommend.ts says; never mixed with exact ones. */
export function poolRecommendReports(all: Array<RecommendStats | NoisedRecommendStats>): PooledMetrics {
  const noised = all.filter(isNoised) as NoisedRecommendStats[];
  if (noised.length === 0) return poolRecommend(all as RecommendStats[]);
  if (noised.length !== all.length) throw new Error('a round mixes noised and exact evaluation reports');
  return poolNoisedRecommend(noised);
}

export function modelKind(name: KindName): ModelKind {
  return MODEL_KINDS[name] as ModelKind;
}

/**
 * Pools a study's reports with its kind; a regression study's mean-only baseline predicts the
 * target center of its feature spec (fixed before training). Takes the two fields it reads, so
 * this module needs no StudyConfig import (messages.ts imports it).
 */
export function poolStudyEvaluation(study: { task: TaskSpec; features: { target: Target } }, stats: EvaluationStats[]): PooledMetrics {
  return poolEvaluation(study.task.kind, stats, isNumericTarget(study.features.target) ? study.features.target.center : 0);
}

/** Pools one round's reports (all of one kind: the study's). */
export function poolEvaluation(kind: KindName, reports: EvaluationStats[], baselineCenter = 0): PooledMetrics {
  const wrong = reports.find((r) => r.kind !== kind);
  if (wrong) throw new Error(`a ${wrong.kind} report in a ${kind} study`);
  return modelKind(kind).pool(reports, baselineCenter);
}
