import { calibrateSigma, computeEpsilonDetails } from './calibrate.ts';
import { epsilonFromRdp, rdpCurve } from './rdp-accountant.ts';
import { DpSgdConfig } from './study-privacy.ts';
import type { ModelSpec } from '../model-spec.ts';

/**
 * Record-level DP-SGD presets: the settings `npm run bench -- --only privacy` measured best on the
 * 10-region churn federation (README, "Benchmarks": the privacy-utility table). A preset fixes
 * everything but the target epsilon; dpSgdPresetPlan calibrates the noise multiplier to it.
 *
 * What the tuning follows:
 * - Large expected batches with more noise, few steps (De et al. 2022, "Unlocking High-Accuracy
 *   Differentially Private Image Classification through Scale"; Anil et al. 2021 for BERT): the
 *   noise on a step's mean gradient is z C / (q n), and for a fixed budget z grows far more slowly
 *   than q, so a bigger batch buys a cleaner gradient; fewer steps cost less epsilon.
 * - A linear model on good features where it keeps up (Tramer & Boneh 2021, "Differentially
 *   Private Learning Needs Better Features (or Much More Data)"): the noise norm grows with
 *   sqrt(parameters), 82 for logistic regression against 3,201 for the 32-16 MLP.
 * - The PLD accountant (tighter than RDP): a smaller noise multiplier for the same epsilon.
 */
export interface DpSgdPreset {
  /** Rounds the preset was tuned for (the calibration spends the budget over exactly these). */
  rounds: number;
  /** Poisson sampling rate of rows per step (expected batch = rate x rows)... */
  samplingRate?: number;
  /** ...or the expected batch on the smallest node (samplingRate = expectedBatch / its rows). */
  expectedBatch?: number;
  /** Expected epochs per round: stepsPerRound = round(epochsPerRound / samplingRate). */
  epochsPerRound: number;
  clipNorm: number;
  learningRate: number;
  accountant: 'rdp' | 'pld';
  /**
   * The MLP's hidden activation the preset was tuned with (absent: ReLU). Part of the model, not
   * of the privacy section: apply it with dpSgdPresetModel. It costs no privacy.
   */
  activation?: 'relu' | 'tanh';
}

/**
 * Measured on the 10-region churn federation (about 400 training rows a node), with the
 * partition column and the columns that repeat another (the four *_charge columns are minutes x
 * a rate; area_code) excluded from the features. Half of a node's rows in every step, few epochs,
 * a learning rate of 2 to 5 (plain SGD on the clipped, noised mean gradient).
 */
export const DP_SGD_PRESETS = {
  /** The 32-16 MLP at epsilon above 4 (tuned at 8): 4 expected epochs a round. */
  mlp: { rounds: 20, samplingRate: 0.5, epochsPerRound: 4, clipNorm: 1, learningRate: 3, accountant: 'pld' },
  /**
   * The 32-16 MLP at epsilon 4 and below (tuned at 3): 2 expected epochs a round, less noise per
   * step, tanh hidden layers (Papernot et al. 2021, "Tempered Sigmoid Activations for Deep
   * Learning with Differential Privacy": bounded activations keep per-example gradients small, so
   * clipping at 0.5 loses little): 0.872 AUC against 0.845 with ReLU, clip 1, lr 2.
   */
  'mlp-strong': { rounds: 20, samplingRate: 0.5, epochsPerRound: 2, clipNorm: 0.5, learningRate: 4, accountant: 'pld', activation: 'tanh' },
  /** Logistic regression (model kind `logreg`), any epsilon from 3 to 8. */
  logreg: { rounds: 20, samplingRate: 0.5, epochsPerRound: 2, clipNorm: 1, learningRate: 5, accountant: 'pld' },
  /** What the demo's `--dp-sgd` ran before tuning (expected batch 32 on the smallest node, one epoch a round, RDP). */
  legacy: { rounds: 20, expectedBatch: 32, epochsPerRound: 1, clipNorm: 1, learningRate: 0.5, accountant: 'rdp' },
} as const satisfies Record<string, DpSgdPreset>;

export type DpSgdPresetName = keyof typeof DP_SGD_PRESETS;

/** The preset for a model kind and a target epsilon: 'logreg', or 'mlp-strong' (epsilon <= 4) / 'mlp'. */
export function dpSgdPresetFor(model: 'logreg' | 'mlp', epsilon: number): DpSgdPresetName {
  if (model === 'logreg') return 'logreg';
  return epsilon <= 4 ? 'mlp-strong' : 'mlp';
}

/**
 * The study's model with the preset's hidden activation (an MLP only; a one-layer model has no
 * hidden layer): what `npm start -- --dp-sgd` and the bench train.
 */
export function dpSgdPresetModel(preset: DpSgdPreset, model: ModelSpec): ModelSpec {
  if (model.kind !== 'mlp' || preset.activation === undefined) return model;
  return { ...model, activation: preset.activation };
}

export interface DpSgdPlan {
  dpSgd: DpSgdConfig;
  /** Record-level epsilon each node spends over the study, by the preset's accountant. */
  epsilonSpent: number;
  /** The accountant whose bound epsilonSpent is (PLD reports RDP's when that is smaller). */
  accountant: 'rdp' | 'pld';
  steps: number;
}

/**
 * The study's DP-SGD section from a preset: sampling rate from the smallest node's training rows,
 * noise multiplier calibrated so that `rounds` rounds cost `epsilon` at `delta`.
 * nodeRows: the rows each node trains on (after its validation share is set aside).
 */
export function dpSgdPresetPlan(preset: DpSgdPreset, target: { epsilon: number; delta: number; rounds?: number; nodeRows: number[] }): DpSgdPlan {
  const rounds = target.rounds ?? preset.rounds;
  const smallest = Math.min(...target.nodeRows);
  if (!(smallest > 0)) throw new RangeError('dpSgdPresetPlan: every node needs training rows');
  const samplingRate = Math.min(1, preset.samplingRate ?? preset.expectedBatch! / smallest);
  const stepsPerRound = Math.max(1, Math.round(preset.epochsPerRound / samplingRate));
  const steps = rounds * stepsPerRound;
  const noiseMultiplier = calibrateSigma({ q: samplingRate, steps, delta: target.delta, epsilon: target.epsilon, accountant: preset.accountant });
  const spent = computeEpsilonDetails({ q: samplingRate, sigma: noiseMultiplier, steps, delta: target.delta }, preset.accountant);
  // The fixed, public step denominator (expectedBatchSize): the smallest node's expected batch,
  // stated in the study. Without it nodes divide by training.batchSize (32 by default), which
  // with q = 0.5 would multiply the learning rate by about 6.
  const expectedBatchSize = Math.max(1, Math.round(samplingRate * smallest));
  const dpSgd = DpSgdConfig.parse({ noiseMultiplier, clipNorm: preset.clipNorm, samplingRate, stepsPerRound, learningRate: preset.learningRate, expectedBatchSize });
  return { dpSgd, epsilonSpent: spent.epsilon, accountant: spent.accountant, steps };
}

/**
 * A node's whole record-level spend under DP: `rounds` rounds of DP-SGD plus one noised
 * evaluation a round (a Gaussian mechanism, q = 1, one step), composed the way the node's ledger
 * composes mixed entries (client-node/privacy-ledger.ts): RDP curves added, converted once
 * (Mironov 2017, Prop. 1 and 3).
 */
export function trainingAndEvaluationEpsilon(q: number, sigma: number, steps: number, evaluation: { noiseMultiplier: number; rounds: number }, delta: number): number {
  const total = Float64Array.from(rdpCurve(q, sigma, steps));
  const evaluations = rdpCurve(1, evaluation.noiseMultiplier, evaluation.rounds);
  for (let i = 0; i < total.length; i++) total[i] += evaluations[i];
  return epsilonFromRdp(total, delta).epsilon;
}

/**
 * A DP-SGD plan that leaves room for the noised evaluations: `evaluationShare` of the target goes
 * to evaluating every round (its noise multiplier calibrated to that share alone), and the DP-SGD
 * noise is then raised by bisection until training and evaluation together, composed as the
 * ledger composes them, spend at most the target. Throws when the evaluations alone exceed it.
 */
export function dpSgdPlanWithEvaluation(preset: DpSgdPreset, target: { epsilon: number; delta: number; rounds: number; nodeRows: number[]; evaluationShare?: number }) {
  const share = target.evaluationShare ?? 0.25;
  const evaluationNoise = calibrateSigma({ q: 1, steps: target.rounds, delta: target.delta, epsilon: share * target.epsilon, accountant: 'rdp' });
  const base = dpSgdPresetPlan({ ...preset, accountant: 'rdp' }, target);
  const { samplingRate: q, stepsPerRound } = base.dpSgd;
  const steps = target.rounds * (stepsPerRound ?? 1);
  const spent = (sigma: number) => trainingAndEvaluationEpsilon(q, sigma, steps, { noiseMultiplier: evaluationNoise, rounds: target.rounds }, target.delta);
  let lo = base.dpSgd.noiseMultiplier;
  let hi = lo;
  while (spent(hi) > target.epsilon) {
    hi *= 2;
    if (hi > 1e6) throw new RangeError(`the noised evaluations alone spend more than epsilon ${target.epsilon}`);
  }
  // lo spends more than the target (it was calibrated for training alone); hi spends at most it.
  for (let i = 0; i < 60 && hi - lo > 1e-6 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (spent(mid) > target.epsilon) lo = mid;
    else hi = mid;
  }
  const dpSgd = DpSgdConfig.parse({ ...base.dpSgd, noiseMultiplier: hi });
  return { dpSgd, evaluation: { noiseMultiplier: evaluationNoise }, epsilonSpent: spent(hi), steps };
}
