import type * as tf from '../tf.ts';
import { isNumericTarget } from '../../protocols/feature-spec.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { forecastRegressionTask, forecastStats, type ForecastRow, type ForecastStats } from '../../protocols/model-kinds/forecast.ts';
import type { EncodedData } from '../encode.ts';
import type { ForecastEncoded } from '../forecast-features.ts';
import { predictScores } from '../train.ts';
import type { EvaluationNoise, KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';
import { regressionEvaluation, regressionKind, regressionLoss, targetMap } from './regression.ts';

/** Forecasts beyond this are clipped (an exploding log-link output must still give finite sums). */
const MAX_FORECAST = 1e12;

/**
 * Demand forecasting, the node's half: the study's dense model trained exactly as a regression
 * with the forecast's loss (log1p by default) on the derived rows of models/forecast-features.ts;
 * evaluated on the last `horizon` periods of each series against the seasonal-naive forecast
 * (ForecastStats, protocols/model-kinds/forecast.ts).
 */
export function forecastKind(study: StudyConfig): NodeModelKind {
  const task = study.task;
  if (task.kind !== 'forecast') throw new Error(`forecastKind: study "${study.name}" has task.kind "${task.kind}"`);
  const target = study.features.target;
  if (!isNumericTarget(target)) throw new Error('features.target: a forecast study needs a numeric target ({ column, kind: "numeric", center, scale })');
  const asRegression = forecastRegressionTask(task);
  const regression = regressionKind({ ...study, task: asRegression });
  const map = targetMap(asRegression, target);
  const loss = regressionLoss(asRegression);
  return {
    name: 'forecast',
    createModel: (s: StudyConfig, inputWidth: number): tf.LayersModel => regression.createModel(s, inputWidth),
    train: (model: tf.LayersModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> => regression.train(model, data, args),
    evaluate(model: tf.LayersModel, data: ForecastEncoded, dp?: EvaluationNoise): { loss: number; stats: ForecastStats } {
      if (dp) throw new Error('task.kind "forecast" has no noised evaluation (forecast studies under DP are refused at creation)');
      const meta = data.forecast;
      if (!meta) throw new Error('forecast evaluation: the validation rows carry no series, seasonal-naive values or scales (load them with client-node/data-forecast.ts)');
      const outputs = predictScores(model, data.x, data.n, data.width);
      const trainingTargets = Array.from(data.y, (y) => map.toTraining(y));
      const { loss: meanLoss } = regressionEvaluation(outputs, trainingTargets, data.y, map, loss, target.center);
      return { loss: meanLoss, stats: forecastStats(forecastRows(outputs, data, meta, map.fromOutput), meta.scales) };
    },
  };
}

/** Validation rows with the model's forecasts (finite, within +-MAX_FORECAST). */
export function forecastRows(outputs: ArrayLike<number>, data: EncodedData, meta: NonNullable<ForecastEncoded['forecast']>, fromOutput: (z: number) => number): ForecastRow[] {
  return Array.from({ length: data.n }, (_, i) => {
    const p = fromOutput(outputs[i]);
    return { y: data.y[i], p: Number.isFinite(p) ? Math.max(-MAX_FORECAST, Math.min(MAX_FORECAST, p)) : p > 0 ? MAX_FORECAST : 0, naive: meta.naive[i], series: meta.series[i] };
  });
}
