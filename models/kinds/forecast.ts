import { isNumericTarget, type FeatureSpec } from '../../protocols/feature-spec.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { forecastInitialWeights, forecastRegressionTask, forecastStats, type ForecastRow, type ForecastStats, type ForecastTask } from '../../protocols/model-kinds/forecast.ts';
import type { EncodedData } from '../encode.ts';
import type { ForecastEncoded } from '../forecast-features.ts';
import { mseLoss } from '../losses.ts';
import { predictModel, writeWeights, type KindModel } from '../dense-ops.ts';
import { modelTensorSpecs } from '../../protocols/model-spec.ts';
import { trainWith } from './binary.ts';
import type { EvaluationNoise, KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';
import { regressionEvaluation, regressionKind, regressionLoss, targetMap } from './regression.ts';

/** Forecasts beyond this are clipped (an exploding log-link output must still give finite sums). */
const MAX_FORECAST = 1e12;

/**
 * How a forecast model's output z maps to the target, row by row. Without a level: the
 * regression TargetMap of the task's loss (one map for every row). With task.level: the model
 * fits log(1 + y) - level_i and forecasts expm1(z + level_i), level_i read back from the row's
 * own `level` input (the first feature: x * std + mean), so the exported model needs nothing else.
 */
export interface ForecastMap {
  toTraining(y: number, row: number, data: EncodedData): number;
  fromOutput(z: number, row: number, data: EncodedData): number;
}

export function forecastMap(task: ForecastTask, spec: FeatureSpec): ForecastMap {
  const target = spec.target;
  if (!isNumericTarget(target)) throw new Error('features.target: a forecast study needs a numeric target ({ column, kind: "numeric", center, scale })');
  if (task.level === undefined) {
    const map = targetMap(forecastRegressionTask(task), target);
    return { toTraining: (y) => map.toTraining(y), fromOutput: (z) => map.fromOutput(z) };
  }
  const first = spec.features[0];
  if (first?.name !== 'level' || first.kind !== 'numeric') throw new Error('features: a forecast task with a level needs the numeric feature "level" first (models/forecast-features.ts forecastFeatureNames)');
  const level = (row: number, data: EncodedData) => data.x[row * data.width] * first.std + first.mean;
  return {
    toTraining: (y, row, data) => {
      if (!(y > -1)) throw new RangeError(`target ${y} is <= -1: task.loss "log1p" needs y > -1`);
      return Math.log1p(y) - level(row, data);
    },
    fromOutput: (z, row, data) => Math.expm1(z + level(row, data)),
  };
}

/**
 * Demand forecasting, the node's half: the study's dense model trained as a regression with the
 * forecast's loss (log1p by default, level-relative with task.level) on the derived rows of
 * models/forecast-features.ts; evaluated on the last `horizon` periods of each series against the
 * seasonal-naive forecast (ForecastStats, protocols/model-kinds/forecast.ts).
 */
export function forecastKind(study: StudyConfig): NodeModelKind {
  const task = study.task;
  if (task.kind !== 'forecast') throw new Error(`forecastKind: study "${study.name}" has task.kind "${task.kind}"`);
  const asRegression = forecastRegressionTask(task);
  const regression = regressionKind({ ...study, task: asRegression });
  const map = forecastMap(task, study.features);
  const loss = task.level !== undefined ? mseLoss : regressionLoss(asRegression);
  const trainingTargets = (data: EncodedData) => Float32Array.from(data.y, (y, i) => map.toTraining(y, i, data));
  return {
    name: 'forecast',
    createModel(s: StudyConfig, inputWidth: number): KindModel {
      // The coordinator's round-0 weights for the same seed (forecastInitialWeights: output layer zeroed).
      const model = regression.createModel(s, inputWidth);
      writeWeights(model, forecastInitialWeights(modelTensorSpecs(s.model, inputWidth), s.seed));
      return model;
    },
    train(model: KindModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> {
      if (task.level === undefined) return regression.train(model, data, args);
      return trainWith(model, { ...data, y: trainingTargets(data) }, args, loss);
    },
    evaluate(model: KindModel, data: ForecastEncoded, dp?: EvaluationNoise): { loss: number; stats: ForecastStats } {
      if (dp) throw new Error('task.kind "forecast" has no noised evaluation (forecast studies under DP are refused at creation)');
      const meta = data.forecast;
      if (!meta) throw new Error('forecast evaluation: the validation rows carry no series, seasonal-naive values or scales (load them with client-node/data-forecast.ts)');
      const outputs = predictModel(model, data.x, data.n, data.width);
      const identity = { transform: 'identity' as const, toTraining: (t: number) => t, fromOutput: (z: number) => z };
      const { loss: meanLoss } = regressionEvaluation(outputs, trainingTargets(data), trainingTargets(data), identity, loss, 0);
      return { loss: meanLoss, stats: forecastStats(forecastRows(outputs, data, meta, map), meta.scales) };
    },
  };
}

/** Validation rows with the model's forecasts (finite, within +-MAX_FORECAST). */
export function forecastRows(outputs: ArrayLike<number>, data: EncodedData, meta: NonNullable<ForecastEncoded['forecast']>, map: ForecastMap): ForecastRow[] {
  return Array.from({ length: data.n }, (_, i) => ({ y: data.y[i], p: forecastValue(map.fromOutput(outputs[i], i, data)), naive: meta.naive[i], series: meta.series[i] }));
}

/** A forecast made finite: NaN -> 0, +-Infinity and beyond -> +-MAX_FORECAST. */
export function forecastValue(p: number): number {
  return Number.isFinite(p) ? Math.max(-MAX_FORECAST, Math.min(MAX_FORECAST, p)) : p > 0 ? MAX_FORECAST : p < 0 ? -MAX_FORECAST : 0;
}
