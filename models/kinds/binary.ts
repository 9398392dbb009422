import type * as tf from '../tf.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { scoreHistogram } from '../../protocols/metrics.ts';
import type { BinaryStats } from '../../protocols/model-kinds/kind.ts';
import { createModel } from '../model-factory.ts';
import { trainDpSgd } from '../dp-sgd.ts';
import { predictScores, trainLocal } from '../train.ts';
import type { EncodedData } from '../encode.ts';
import type { KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';

const EPSILON = 1e-7;

/** Binary classification: one sigmoid output unit, binary cross-entropy. */
export const binaryKind: NodeModelKind = {
  name: 'binary',
  createModel(study: StudyConfig, inputWidth: number): tf.LayersModel {
    return createModel(study.model, inputWidth, study.seed);
  },
  async train(model: tf.LayersModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> {
    if (args.dpSgd !== undefined) {
      const dp = await trainDpSgd(model, data, args.dpSgd);
      return { loss: dp.loss, numExamples: data.n, steps: dp.steps, clippedFraction: dp.clippedFraction };
    }
    const { localEpochs, learningRate, batchSize } = args.instructions;
    const result = await trainLocal(model, data, { ...args.study.training, localEpochs, learningRate, batchSize }, { seed: args.seed });
    return { loss: result.loss, numExamples: result.numExamples, steps: result.steps };
  },
  evaluate(model: tf.LayersModel, data: EncodedData): { loss: number; stats: BinaryStats } {
    const scores = predictScores(model, data.x, data.n, data.width);
    return binaryEvaluation(scores, data.y);
  },
};

/** The binary kind's statistics from scores and 0/1 labels (float64 sums). */
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
