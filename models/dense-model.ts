/**
 * The node's model of a dense study (binary, regression, forecast): the stack of dense layers
 * models/model-factory.ts builds in TensorFlow.js, held as its weights alone, in protocol order
 * (dense_0/kernel [in, out] row-major, dense_0/bias, dense_1/kernel, ...: the fused network's
 * layout, models/fused-mlp.ts). Issue 13: a node trains and evaluates it with the fused trainer
 * and never loads TensorFlow.js (~0.4 CPU-s per process to import, more for its wasm backend);
 * DP-SGD and FEDMARK_TRAINER=tfjs build a TensorFlow.js copy of it when they run (dense-ops.ts).
 */
import { initialWeights, modelTensorSpecs, type ModelSpec } from '../protocols/model-spec.ts';
import { describeSpecMismatch, describeTensorInconsistency, specsOf, TensorError, type TensorSpec, type WeightSet } from '../protocols/tensors.ts';
import type { FusedActivation, FusedLayout } from './fused-mlp.ts';

export class DenseModel {
  /** Weights in protocol order, float32. */
  readonly params: Float32Array;
  readonly layout: FusedLayout;
  private readonly tensorSpecs: TensorSpec[];
  private readonly offsets: number[];

  constructor(
    /** What model-factory's createModel would build from: the spec, its input width, the output unit. */
    readonly spec: ModelSpec,
    readonly inputWidth: number,
    readonly output: 'sigmoid' | 'linear',
  ) {
    if (!Number.isInteger(inputWidth) || inputWidth <= 0) throw new RangeError(`createModel: inputWidth must be a positive integer, got ${inputWidth}`);
    this.tensorSpecs = modelTensorSpecs(spec, inputWidth);
    const hidden: FusedActivation = spec.kind === 'mlp' ? (spec.activation ?? 'relu') : 'relu';
    const widths = spec.kind === 'mlp' ? [inputWidth, ...spec.hidden, 1] : [inputWidth, 1];
    this.layout = { widths, hidden: widths.slice(2).map(() => hidden) };
    this.offsets = [];
    let size = 0;
    for (const s of this.tensorSpecs) {
      this.offsets.push(size);
      size += s.shape.reduce((a, b) => a * b, 1);
    }
    this.params = new Float32Array(size);
  }

  /** Names and shapes of the model's tensors (modelTensorSpecs). */
  specs(): TensorSpec[] {
    return this.tensorSpecs.map((s) => ({ name: s.name, shape: [...s.shape] }));
  }

  /** A copy of the weights, named and ordered as modelTensorSpecs. */
  getWeights(): WeightSet {
    return this.tensorSpecs.map((s, i) => {
      const size = s.shape.reduce((a, b) => a * b, 1);
      return { name: s.name, shape: [...s.shape], values: this.params.slice(this.offsets[i], this.offsets[i] + size) };
    });
  }

  /**
   * Loads weights, as model-factory's setWeights does (same checks, same messages): matched by
   * name, exactly the model's tensors with their shapes, finite values; float64 rounded to float32.
   * `finite: false` skips the finiteness check: a trained TensorFlow.js copy's weights coming back,
   * which the caller checks (a diverged training is client-node/train.ts's TrainingFailedError).
   */
  setWeights(weights: WeightSet, { finite = true }: { finite?: boolean } = {}): void {
    for (const t of weights) {
      const problem = describeTensorInconsistency(t);
      if (problem !== null) throw new TensorError(`setWeights: ${problem}`);
    }
    const mismatch = describeSpecMismatch(this.tensorSpecs, specsOf(weights));
    if (mismatch !== null) throw new TensorError(`setWeights: ${mismatch}`);
    for (const t of finite ? weights : []) {
      const v = t.values;
      for (let i = 0; i < v.length; i++) {
        if (!Number.isFinite(v[i])) throw new TensorError(`setWeights: tensor "${t.name}" holds a non-finite value (${v[i]}) at index ${i}`);
      }
    }
    const byName = new Map(weights.map((t) => [t.name, t] as const));
    this.tensorSpecs.forEach((s, i) => this.params.set(byName.get(s.name)!.values, this.offsets[i]));
  }

  /** Nothing to free (a TensorFlow.js model's counterpart). */
  dispose(): void {}
}

export function isDenseModel(model: unknown): model is DenseModel {
  return model instanceof DenseModel;
}

/**
 * model-factory's createModel without TensorFlow.js: the same layers and the same initial weights
 * (initialWeights of modelTensorSpecs for the seed: the coordinator's round-0 model).
 */
export function createDenseModel(spec: ModelSpec, inputWidth: number, seed: number, output: 'sigmoid' | 'linear' = 'sigmoid'): DenseModel {
  const model = new DenseModel(spec, inputWidth, output);
  model.setWeights(initialWeights(modelTensorSpecs(spec, inputWidth), seed));
  return model;
}
