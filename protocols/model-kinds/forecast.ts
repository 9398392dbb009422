import { z } from 'zod';
import { initialWeights } from '../model-spec.ts';
import type { TensorSpec, WeightSet } from '../tensors.ts';

/**
 * Demand forecasting (model kind `forecast`, issue 9 section 1), the pure half: the study's task,
 * the statistics a node reports when it evaluates a model on the last `horizon` periods of its
 * series, and how the coordinator pools them. No import of kind.ts (it imports this file).
 *
 * Strategy: DIRECT. Every lag and rolling window of a row ends at least `horizon` periods before
 * the row's date, so one model forecasts every step of the horizon from what is known at the
 * forecast origin: no recursion (no compounding of its own errors) and no look-ahead.
 */

/** Calendar features: day of week (daily data: 7 one-hot columns), position in the year (sin/cos), US federal holidays. */
export const CALENDAR_FEATURES = ['dow', 'year', 'holiday'] as const;

export const ForecastTask = z
  .strictObject({
    kind: z.literal('forecast'),
    /** Column of dates, YYYY-MM-DD (a week is named by any one of its days, e.g. its Monday). */
    date: z.string().min(1),
    /** Column of the series id (store, product, station...). */
    series: z.string().min(1),
    frequency: z.enum(['day', 'week']),
    /** Periods forecast ahead; the last `horizon` periods of every series are the validation rows. */
    horizon: z.number().int().positive().max(366),
    /** Lags in periods; each must be >= horizon (direct strategy: known at the forecast origin). */
    lags: z.array(z.number().int().positive().max(2000)).min(1).max(64),
    /** Rolling means of the target over w periods ending `horizon` periods before the row. */
    windows: z.array(z.number().int().min(2).max(2000)).max(16).default([]),
    calendar: z.array(z.enum(CALENDAR_FEATURES)).max(3).default(['dow', 'year', 'holiday']),
    /** Numeric columns known in advance (price, promotion, weather): their value at the row's date. */
    covariates: z.array(z.string().min(1)).max(500).default([]),
    /**
     * Per-series level (loss log1p only): the mean of log(1 + y) over the `level` periods ending
     * `horizon` periods before the row. With it, the lags, the windows AND the target are
     * differences from that level (the model forecasts log(1 + y) - level), so one global model
     * serves series of any size (stations of 0.9k and 13.6k riders) without learning to copy a
     * level through collinear lags; the forecast is expm1(output + level).
     */
    level: z.number().int().min(1).max(2000).optional(),
    /** log1p: mse on log(1 + y), lags and windows on the same scale; tweedie (log link); mse. */
    loss: z.enum(['log1p', 'tweedie', 'mse']).default('log1p'),
    tweediePower: z.number().gt(1).lt(2).default(1.5),
  })
  .superRefine((task, ctx) => {
    task.lags.forEach((lag, i) => {
      if (lag < task.horizon) ctx.addIssue({ code: 'custom', path: ['lags', i], message: `lag ${lag} is shorter than horizon ${task.horizon}: the direct strategy only uses values known at the forecast origin (lag >= horizon)` });
    });
    if (new Set(task.lags).size !== task.lags.length) ctx.addIssue({ code: 'custom', path: ['lags'], message: 'lags lists a lag twice' });
    if (new Set(task.windows).size !== task.windows.length) ctx.addIssue({ code: 'custom', path: ['windows'], message: 'windows lists a window twice' });
    if (new Set(task.calendar).size !== task.calendar.length) ctx.addIssue({ code: 'custom', path: ['calendar'], message: 'calendar lists a feature twice' });
    if (task.calendar.includes('dow') && task.frequency !== 'day') ctx.addIssue({ code: 'custom', path: ['calendar'], message: '"dow" (day of week) needs frequency "day"' });
    if (task.level !== undefined && task.loss !== 'log1p') ctx.addIssue({ code: 'custom', path: ['level'], message: `level normalizes on the log1p scale: it needs loss "log1p" (got "${task.loss}")` });
    if (task.date === task.series) ctx.addIssue({ code: 'custom', path: ['series'], message: 'series and date name the same column' });
    const clash = task.covariates.find((c) => c === task.date || c === task.series);
    if (clash) ctx.addIssue({ code: 'custom', path: ['covariates'], message: `covariate "${clash}" is the date or series column` });
  });
export type ForecastTask = z.infer<typeof ForecastTask>;

/** The seasonal period m of the seasonal-naive baseline and of MASE: a week of days, a year of weeks. */
export function seasonOf(frequency: ForecastTask['frequency']): number {
  return frequency === 'day' ? 7 : 52;
}

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const finite = z.number().finite();

/**
 * Sufficient statistics of a forecast evaluation on a node's validation rows (the last `horizon`
 * periods of each series), on the target's own scale, with p the model's forecast and s_t the
 * seasonal-naive one (the value one or more seasons back, at or before the origin):
 * n, sum|y|, sum|y - p|, sum(p - y), sum|y - s|; and for MASE (Hyndman & Koehler 2006) the sum
 * over series of mean|y - p| / scale_s and of mean|y - s| / scale_s, with scale_s the series'
 * in-sample mean |y_t - y_{t-m}| over its training periods, and the number of such series.
 * Sums pool exactly: the pooled WAPE is the one of all rows in one place, and the pooled MASE
 * is the mean over all series of their MASE.
 */
export const ForecastStats = z.strictObject({
  kind: z.literal('forecast'),
  n: count,
  sumAbsY: finite.nonnegative(),
  sumAbsError: finite.nonnegative(),
  sumError: finite,
  naiveSumAbsError: finite.nonnegative(),
  /** Series with validation rows and a positive in-sample scale. */
  series: count,
  sumScaledMae: finite.nonnegative(),
  naiveSumScaledMae: finite.nonnegative(),
});
export type ForecastStats = z.infer<typeof ForecastStats>;

const ratio = (num: number, den: number): number | null => (den > 0 && Number.isFinite(num / den) ? num / den : null);

/**
 * Pooled metrics: wape = sum|y - p| / sum|y| (weighted absolute percentage error), naiveWape the
 * same for the seasonal-naive forecast, mase and naiveMase the means over series of scaled MAE,
 * bias = sum(p - y) / sum|y| (positive: over-forecast), n rows, series.
 */
export function poolForecast(reports: ForecastStats[]): Record<string, number | null> {
  const sum = (f: (r: ForecastStats) => number) => reports.reduce((s, r) => s + f(r), 0);
  const sumAbsY = sum((r) => r.sumAbsY);
  const series = sum((r) => r.series);
  return {
    wape: ratio(sum((r) => r.sumAbsError), sumAbsY),
    naiveWape: ratio(sum((r) => r.naiveSumAbsError), sumAbsY),
    mase: ratio(sum((r) => r.sumScaledMae), series),
    naiveMase: ratio(sum((r) => r.naiveSumScaledMae), series),
    bias: ratio(sum((r) => r.sumError), sumAbsY),
    n: sum((r) => r.n),
    series,
  };
}

/** One validation row for forecastStats: target, forecast, seasonal-naive forecast, its series. */
export interface ForecastRow {
  y: number;
  p: number;
  naive: number;
  series: number;
}

/**
 * ForecastStats of rows, `scales[s]` the MASE scale of series s (series with a scale of 0 or
 * none, a constant history, count in WAPE but not in MASE: their scaled error is undefined).
 */
export function forecastStats(rows: ForecastRow[], scales: ArrayLike<number>): ForecastStats {
  const stats: ForecastStats = { kind: 'forecast', n: rows.length, sumAbsY: 0, sumAbsError: 0, sumError: 0, naiveSumAbsError: 0, series: 0, sumScaledMae: 0, naiveSumScaledMae: 0 };
  const perSeries = new Map<number, { n: number; ae: number; naiveAe: number }>();
  for (const r of rows) {
    const ae = Math.abs(r.y - r.p);
    const naiveAe = Math.abs(r.y - r.naive);
    stats.sumAbsY += Math.abs(r.y);
    stats.sumAbsError += ae;
    stats.sumError += r.p - r.y;
    stats.naiveSumAbsError += naiveAe;
    const s = perSeries.get(r.series) ?? { n: 0, ae: 0, naiveAe: 0 };
    s.n++;
    s.ae += ae;
    s.naiveAe += naiveAe;
    perSeries.set(r.series, s);
  }
  for (const [series, s] of perSeries) {
    const scale = scales[series];
    if (!(scale > 0)) continue;
    stats.series++;
    stats.sumScaledMae += s.ae / s.n / scale;
    stats.naiveSumScaledMae += s.naiveAe / s.n / scale;
  }
  return stats;
}

/** The fields of a study forecastStudyProblems reads (no StudyConfig import: messages.ts imports this file). */
interface ForecastStudyView {
  task: { kind: string };
  privacy?: { central?: unknown; dpSgd?: unknown } | undefined;
  features: { target: { column: string; center?: number }; features: Array<{ name: string }> };
}

/**
 * What makes a forecast study unusable, checked at creation (a 400 naming the field):
 * - under DP: refused. The statistics are exact sums of absolute errors and per-series MASE
 *   terms, whose sensitivity is unbounded without a clip (and MASE's 1 / scale_s is not bounded
 *   at all); until a noised form exists, a forecast study runs without `privacy`.
 * - the target's center must suit the loss (log1p: > -1; tweedie: > 0), as for regression;
 * - the target, date and series columns must be distinct, and no derived feature may be one of them.
 */
export function forecastStudyProblems(study: ForecastStudyView): Array<{ path: Array<string | number>; message: string }> {
  const parsed = ForecastTask.safeParse(study.task);
  if (study.task.kind !== 'forecast' || !parsed.success) return [];
  const task = parsed.data;
  const problems: Array<{ path: Array<string | number>; message: string }> = [];
  const p = study.privacy;
  // As hasDp (protocols/privacy/study-privacy.ts): central or DP-SGD make every evaluation noised.
  if (p && (p.central !== undefined || p.dpSgd !== undefined)) {
    problems.push({ path: ['task', 'kind'], message: 'task.kind "forecast" has no noised evaluation: its WAPE and MASE sums are exact and their sensitivity unbounded, so a forecast study cannot run under DP; leave out privacy' });
  }
  const target = study.features.target;
  const center = target.center ?? Number.NaN;
  if (task.loss === 'log1p' && !(center > -1)) problems.push({ path: ['features', 'target', 'center'], message: `task.loss "log1p" needs features.target.center > -1 (got ${center})` });
  if (task.loss === 'tweedie' && !(center > 0)) problems.push({ path: ['features', 'target', 'center'], message: `task.loss "tweedie" needs features.target.center > 0 (got ${center})` });
  if (target.column === task.date || target.column === task.series) problems.push({ path: ['features', 'target', 'column'], message: `the target "${target.column}" is the date or series column` });
  study.features.features.forEach((f, i) => {
    if (f.name === task.date || f.name === task.series) problems.push({ path: ['features', 'features', i, 'name'], message: `feature "${f.name}" is the date or series column: forecast features are derived (lags, windows, calendar, covariates)` });
  });
  return problems;
}

/** The regression task a forecast task trains as (same loss, target transform and output link). */
export function forecastRegressionTask(task: ForecastTask): { kind: 'regression'; loss: ForecastTask['loss']; huberDelta: number; tweediePower: number } {
  return { kind: 'regression', loss: task.loss, huberDelta: 1, tweediePower: task.tweediePower };
}

/**
 * A forecast study's round-0 model: the seeded Glorot weights with the output layer's kernel
 * zeroed, so the first global model outputs z = 0 on every row: with a level, the forecast
 * expm1(level) (the series' recent mean on the log scale), without one the target center. The
 * federation starts from that sensible baseline instead of a random forecast (measured on the
 * shipped data: 20 FedAvg rounds from Glorot ended at WAPE 0.092, from this start below it).
 */
export function forecastInitialWeights(specs: TensorSpec[], seed: number): WeightSet {
  const weights = initialWeights(specs, seed);
  const kernel = weights[weights.length - 2];
  if (kernel && kernel.shape.length === 2) kernel.values.fill(0);
  return weights;
}
