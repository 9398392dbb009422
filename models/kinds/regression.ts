import { isNumericTarget, type NumericTarget } from '../../protocols/feature-spec.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { outputActivation } from '../../protocols/model-spec.ts';
import type { NoisedRegressionStats, RegressionStats, TaskSpec } from '../../protocols/model-kinds/kind.ts';
import { noisedRegressionEvaluation, residualClipOf } from '../../protocols/privacy/noised-regression.ts';
import { createDenseModel } from '../dense-model.ts';
import { predictModel, type KindModel } from '../dense-ops.ts';
import type { EncodedData } from '../encode.ts';
import { DataError } from '../errors.ts';
import { huberLoss, mseLoss, tweedieLoss, type OutputLoss } from '../losses.ts';
import { trainWith } from './binary.ts';
import type { EvaluationNoise, KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';

type RegressionTask = Extract<TaskSpec, { kind: 'regression' }>;

/**
 * How a regression study's loss sees the target y (raw, on its own scale) and maps the
 * network's output z back to a prediction on that scale. With c = target.center, s = target.scale:
 *   mse, huber  t = (y - c) / s                      prediction z s + c
 *   log1p       t = log(1 + y) - log(1 + c)          prediction expm1(z + log(1 + c))    (y > -1)
 *   tweedie     t = y / c, the network outputs log(mu / c) (log link)   prediction c e^z  (y >= 0, c > 0)
 * A fresh network outputs about 0, that is about c: the mean-only baseline. The Tweedie
 * deviance is scale-equivariant (dev(y/c, mu/c) = c^(p-2) dev(y, mu)), so fitting y / c fits y.
 */
export interface TargetMap {
  readonly transform: 'identity' | 'log1p' | 'log';
  /** The training target of a raw y; throws a RangeError for a y the transform cannot take. */
  toTraining(y: number): number;
  /** The prediction on the target's own scale from the network's output. */
  fromOutput(z: number): number;
}

export function targetMap(task: RegressionTask, target: NumericTarget): TargetMap {
  const { center: c, scale: s } = target;
  switch (task.loss) {
    case 'mse':
    case 'huber':
      return { transform: 'identity', toTraining: (y) => (y - c) / s, fromOutput: (z) => z * s + c };
    case 'log1p': {
      if (!(c > -1)) throw new RangeError(`features.target.center must be > -1 for task.loss "log1p" (got ${c})`);
      const offset = Math.log1p(c);
      return {
        transform: 'log1p',
        toTraining: (y) => {
          if (!(y > -1)) throw new RangeError(`target ${y} is <= -1: task.loss "log1p" needs y > -1`);
          return Math.log1p(y) - offset;
        },
        fromOutput: (z) => Math.expm1(z + offset),
      };
    }
    case 'tweedie':
      if (!(c > 0)) throw new RangeError(`features.target.center must be > 0 for task.loss "tweedie" (the mean of a non-negative target; got ${c})`);
      return {
        transform: 'log',
        toTraining: (y) => {
          if (!(y >= 0)) throw new RangeError(`target ${y} is negative: task.loss "tweedie" needs y >= 0`);
          return y / c;
        },
        fromOutput: (z) => c * Math.exp(z),
      };
  }
}

/** The loss of a regression task, on the training target. */
export function regressionLoss(task: RegressionTask): OutputLoss {
  switch (task.loss) {
    case 'mse':
    case 'log1p':
      return mseLoss;
    case 'huber':
      return huberLoss(task.huberDelta);
    case 'tweedie':
      return tweedieLoss(task.tweediePower);
  }
}

/** The rows with their training targets (a copy of y; x is shared). */
function withTrainingTargets(data: EncodedData, map: TargetMap, column: string): EncodedData {
  const y = new Float32Array(data.n);
  for (let i = 0; i < data.n; i++) {
    try {
      y[i] = map.toTraining(data.y[i]);
    } catch (err) {
      // The rows were read (and maybe split) already: no file line to name (line 0). The
      // closest existing kind; client-node/data.ts maps every kind to words exhaustively.
      throw new DataError('non-numeric', `target column ${JSON.stringify(column)}: ${(err as Error).message}`, 0, column);
    }
  }
  return { ...data, y };
}

/**
 * Regression: a dense stack with one identity output unit, fit with the study's loss to the
 * transformed target (TargetMap); evaluated on the target's own scale (RegressionStats).
 */
export function regressionKind(study: StudyConfig): NodeModelKind {
  const task = study.task;
  if (task.kind !== 'regression') throw new Error(`regressionKind: study "${study.name}" has task.kind "${task.kind}"`);
  const target = study.features.target;
  if (!isNumericTarget(target)) throw new Error('features.target: a regression study needs a numeric target ({ column, kind: "numeric", center, scale })');
  const map = targetMap(task, target);
  if (target.transform !== undefined && target.transform !== map.transform) {
    throw new Error(`features.target.transform is "${target.transform}" but task.loss "${task.loss}" implies "${map.transform}"`);
  }
  const loss = regressionLoss(task);
  return {
    name: 'regression',
    createModel(s: StudyConfig, inputWidth: number): KindModel {
      return createDenseModel(s.model, inputWidth, s.seed, outputActivation(s.task));
    },
    train(model: KindModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> {
      return trainWith(model, withTrainingTargets(data, map, target.column), args, loss);
    },
    evaluate(model: KindModel, data: EncodedData, dp?: EvaluationNoise): { loss: number; stats: RegressionStats | NoisedRegressionStats } {
      const outputs = predictModel(model, data.x, data.n, data.width);
      if (dp) {
        // Under DP only the noised, clipped residual sums leave (protocols/privacy/noised-regression.ts).
        const residuals = Array.from(outputs, (z, i) => map.fromOutput(z) - data.y[i]);
        return { loss: Number.NaN, stats: noisedRegressionEvaluation(residuals, { ...dp, residualClip: residualClipOf(dp, target.scale) }) };
      }
      return regressionEvaluation(outputs, withTrainingTargets(data, map, target.column).y, data.y, map, loss, target.center);
    },
  };
}

/**
 * RegressionStats on the target's own scale from the network's outputs and the raw targets:
 * predictions p = map.fromOutput(z), sums of y, y^2, p - y, (p - y)^2, |p - y|, |y - center|
 * in float64. The loss is the mean training loss on the training targets (map.toTraining of y,
 * as float32 like training's), 0 for no rows.
 */
export function regressionEvaluation(
  outputs: ArrayLike<number>,
  trainingTargets: ArrayLike<number>,
  y: ArrayLike<number>,
  map: TargetMap,
  loss: OutputLoss,
  center: number,
): { loss: number; stats: RegressionStats } {
  const n = outputs.length;
  let sumY = 0;
  let sumY2 = 0;
  let sumError = 0;
  let sse = 0;
  let sae = 0;
  let baselineSae = 0;
  let lossSum = 0;
  for (let i = 0; i < n; i++) {
    const yi = y[i];
    const p = map.fromOutput(outputs[i]);
    const e = p - yi;
    sumY += yi;
    sumY2 += yi * yi;
    sumError += e;
    sse += e * e;
    sae += Math.abs(e);
    baselineSae += Math.abs(yi - center);
    lossSum += loss.value(outputs[i], trainingTargets[i]);
  }
  const meanLoss = n > 0 ? lossSum / n : 0;
  return {
    loss: Number.isFinite(meanLoss) ? meanLoss : Number.MAX_VALUE,
    stats: { kind: 'regression', n, sumY, sumY2, sumError, sse, sae, baselineSae },
  };
}
