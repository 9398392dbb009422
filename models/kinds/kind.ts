import type { KindModel } from '../dense-ops.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { EvaluationStats, KindName } from '../../protocols/model-kinds/kind.ts';
import type { FitInstructions } from '../../protocols/strategies/strategy.ts';
import type { DpSgdConfig } from '../../protocols/privacy/study-privacy.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { GaussianNoise } from '../../protocols/privacy/gaussian-noise.ts';
import type { EncodedData } from '../encode.ts';

/**
 * A model kind, the node's half (its dense model, models/dense-model.ts, trained by the fused trainer or TensorFlow.js). The coordinator's half (what an evaluation
 * reports and how it pools) is protocols/model-kinds/kind.ts; the coordinator never imports this.
 */
export interface NodeModelKind {
  readonly name: KindName;
  /**
   * The study's model with its round-0 weights (the coordinator's, for the same seed): a
   * dense model (models/dense-model.ts) for dense kinds, or the kind's own object (recommendation's factors) that
   * then comes with getWeights / setWeights below.
   */
  createModel(study: StudyConfig, inputWidth: number): KindModel;
  /** The model's weights in protocol order (default: the dense model's or a TensorFlow.js model's, models/dense-ops.ts readWeights). */
  getWeights?(model: KindModel): WeightSet;
  /**
   * Loads weights into the model (default: models/dense-ops.ts writeWeights). A kind with node-local
   * tensors (recommendation's user factors) takes only the shared ones and keeps its local ones.
   */
  setWeights?(model: KindModel, weights: WeightSet): void;
  /**
   * Local training from `global` (already loaded into `model`) under the strategy's instructions:
   * plain (Adam/SGD) or DP-SGD when `dpSgd` is given; FedProx's proximal term
   * (mu / 2) |w - global|^2 when instructions.proximalMu > 0.
   */
  train(model: KindModel, data: EncodedData, args: TrainArgs): Promise<KindTrainResult>;
  /**
   * The kind's sufficient statistics on `data` (never a ratio), and the mean loss. With `dp` (a
   * study under DP), the kind's noised statistics instead (binary: noisedBinaryEvaluation); a kind
   * without a noised form throws (such studies are refused at creation).
   */
  evaluate(model: KindModel, data: EncodedData, dp?: EvaluationNoise): { loss: number; stats: EvaluationStats };
}

/** The study's evaluation noise (privacy.evaluation) and the sampler to draw it from. */
export interface EvaluationNoise {
  bins: number;
  noiseMultiplier: number;
  /** Regression: the study's residual clip (privacy.evaluation.residualClip; default residualClipOf). */
  residualClip?: number;
  noise?: GaussianNoise;
}

export interface TrainArgs {
  study: StudyConfig;
  instructions: FitInstructions;
  global: WeightSet;
  /** Seed of this round's batch order (e.g. training seed + round). */
  seed: number;
  dpSgd?: DpSgdConfig;
}

export interface KindTrainResult {
  /** Mean training loss of the last epoch (or of DP-SGD's sampled rows). */
  loss: number;
  numExamples: number;
  steps: number;
  /** DP-SGD only: fraction of sampled rows whose gradient was clipped. */
  clippedFraction?: number;
}
