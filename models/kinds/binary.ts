import type * as tf from '../tf.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { scoreHistogram } from '../../protocols/metrics.ts';
import { outputActivation } from '../../protocols/model-spec.ts';
import type { BinaryStats } from '../../protocols/model-kinds/kind.ts';
import { createModel } from '../model-factory.ts';
import { trainDpSgd } from '../dp-sgd.ts';
import { bceLoss, type OutputLoss } from '../losses.ts';
import { predictScores, trainLocal } from '../train.ts';
import type { EncodedData } from '../encode.ts';
import type { KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';

const EPSILON = 1e-7;

/**
 * Local training shared by the kinds: DP-SGD when args.dpSgd is given (its own learning rate,
 * steps and sampling: the privacy config fixes them), else trainLocal with the strategy's
 * instructions overriding the study's localEpochs, learningRate and batchSize; FedProx's
 * proximal term in both when instructions.proximalMu > 0. `data.y` holds the loss's targets.
 */
export async function trainWith(model: tf.LayersModel, data: EncodedData, args: TrainArgs, loss: OutputLoss): Promise<KindTrainResult> {
  const mu = args.instructions.proximalMu ?? 0;
  const proximal = mu > 0 ? { mu, global: args.global } : undefined;
  if (args.dpSgd !== undefined) {
    const dp = await trainDpSgd(model, data, args.dpSgd, undefined, { loss, proximal });
    return { loss: dp.loss, numExamples: data.n, steps: dp.steps, clippedFraction: dp.clippedFraction };
  }
  const { localEpochs, learningRate, batchSize } = args.instructions;
  const result = await trainLocal(model, data, { ...args.study.training, localEpochs, learningRate, batchSize }, { seed: args.seed, loss, proximal });
  return { loss: result.loss, numExamples: result.numExamples, steps: result.steps };
}

/** Binary classification: one sigmoid output unit, binary cross-entropy. */
export const binaryKind: NodeModelKind = {
  name: 'binary',
  createModel(study: StudyConfig, inputWidth: number): tf.LayersModel {
    return createModel(study.model, inputWidth, study.seed, outputActivation(study.task));
  },
  train(model: tf.LayersModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> {
    return trainWith(model, data, args, bceLoss);
  },
  evaluate(model: tf.LayersModel, data: EncodedData): { loss: number; stats: BinaryStats } {
    const scores = predictScores(model, data.x, data.n, data.width);
    return binaryEvaluation(scores, data.y);
  },
};

/**
 * The binary kind's statistics from scores and 0/1 labels: the 1000-bin score histogram, and
 * the Brier and log-loss sums in float64 (probabilities clipped to [1e-7, 1 - 1e-7]). The loss
 * is the mean log loss (0 for no rows).
 */
export function binaryEvaluation(scores: ArrayLike<number>, labels: ArrayLike<number>): { loss: number; stats: BinaryStats } {
  let brierSum = 0;
  let logLossSum = 0;
  for (let i = 0; i < scores.length; i++) {
    const y = labels[i] > 0.5 ? 1 : 0;
    const s = scores[i];
    brierSum += (s - y) ** 2;
    const p = Math.min(1 - EPSILON, Math.max(EPSILON, s));
    logLossSum -= y === 1 ? Math.log(p) : Math.log(1 - p);
  }
  const n = scores.length;
  return { loss: n > 0 ? logLossSum / n : 0, stats: { kind: 'binary', histogram: scoreHistogram(scores, labels), brierSum, logLossSum } };
}
