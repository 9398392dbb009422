import type { StudyConfig } from '../../protocols/messages.ts';
import { scoreHistogram } from '../../protocols/metrics.ts';
import { outputActivation } from '../../protocols/model-spec.ts';
import type { BinaryStats, NoisedBinaryStats } from '../../protocols/model-kinds/kind.ts';
import { createDenseModel } from '../dense-model.ts';
import { predictModel, trainModel, trainModelDpSgd, type KindModel } from '../dense-ops.ts';
import { bceLoss, type OutputLoss } from '../losses.ts';
import type { EncodedData } from '../encode.ts';
import type { EvaluationNoise, KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';
import { GaussianNoise } from '../../protocols/privacy/gaussian-noise.ts';

const EPSILON = 1e-7;

/**
 * Local training shared by the kinds: DP-SGD when args.dpSgd is given (its own learning rate,
 * steps and sampling: the privacy config fixes them), else trainLocal with the strategy's
 * instructions overriding the study's localEpochs, learningRate and batchSize; FedProx's
 * proximal term in both when instructions.proximalMu > 0. `data.y` holds the loss's targets.
 */
export async function trainWith(model: KindModel, data: EncodedData, args: TrainArgs, loss: OutputLoss): Promise<KindTrainResult> {
  const mu = args.instructions.proximalMu ?? 0;
  const proximal = mu > 0 ? { mu, global: args.global } : undefined;
  if (args.dpSgd !== undefined) {
    const dp = await trainModelDpSgd(model, data, args.dpSgd, undefined, { loss, proximal });
    return { loss: dp.loss, numExamples: data.n, steps: dp.steps, clippedFraction: dp.clippedFraction };
  }
  const { localEpochs, learningRate, batchSize } = args.instructions;
  const result = await trainModel(model, data, { ...args.study.training, localEpochs, learningRate, batchSize }, { seed: args.seed, loss, proximal });
  return { loss: result.loss, numExamples: result.numExamples, steps: result.steps };
}

/** Binary classification: one sigmoid output unit, binary cross-entropy. */
export const binaryKind: NodeModelKind = {
  name: 'binary',
  createModel(study: StudyConfig, inputWidth: number): KindModel {
    return createDenseModel(study.model, inputWidth, study.seed, outputActivation(study.task));
  },
  train(model: KindModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult> {
    return trainWith(model, data, args, bceLoss);
  },
  evaluate(model: KindModel, data: EncodedData, dp?: EvaluationNoise): { loss: number; stats: BinaryStats | NoisedBinaryStats } {
    const scores = predictModel(model, data.x, data.n, data.width);
    if (dp) return { loss: Number.NaN, stats: noisedBinaryEvaluation(scores, data.y, dp) };
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

/**
 * The binary kind's statistics under DP (issue 10): a `bins`-bin score histogram per label with
 * discrete Gaussian noise on every count, and nothing else (no loss, no Brier or log-loss sums).
 *
 * The mechanism: adding or removing one validation row changes one of the 2 x bins counts by 1,
 * so the histogram has L2 sensitivity 1 and N(0, z^2) noise per count is the Gaussian mechanism
 * with multiplier z (Dwork & Roth 2014, Thm A.1; RDP alpha / (2 z^2), Mironov 2017, Prop. 7). The
 * noise is the exact discrete Gaussian of gaussian-noise.ts (Canonne, Kamath, Steinke 2020) on the
 * grid step gridStep(z, z, 2 bins), which accounts for snapping the counts to that grid, so the
 * integer mechanism's multiplier is exactly z; the result is then rounded to integers
 * (post-processing). The node's ledger is charged before this runs (client-node/train.ts).
 */
export function noisedBinaryEvaluation(scores: ArrayLike<number>, labels: ArrayLike<number>, dp: EvaluationNoise): NoisedBinaryStats {
  const exact = scoreHistogram(scores, labels, dp.bins);
  const z = dp.noiseMultiplier;
  const values = Float64Array.from([...exact.positives, ...exact.negatives]);
  (dp.noise ?? new GaussianNoise()).privatize(values, GaussianNoise.gridStep(z, z, values.length));
  const counts = Array.from(values, (v) => Math.round(v));
  return {
    kind: 'binary',
    noise: { mechanism: 'discrete-gaussian', noiseStd: z },
    histogram: { bins: dp.bins, positives: counts.slice(0, dp.bins), negatives: counts.slice(dp.bins) },
  };
}
