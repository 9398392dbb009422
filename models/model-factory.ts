// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import { initialWeights, modelTensorSpecs, type ModelSpec } from '../protocols/model-spec.ts';
import {
  describeSpecMismatch,
  describeTensorInconsistency,
  formatShape,
  specsOf,
  TensorError,
  type TensorSpec,
  type WeightSet,
} from '../protocols/tensors.ts';
import { isDenseModel, type DenseModel } from './dense-model.ts';
import { provideTfjs } from './tfjs-side.ts';

/** Seed of the initial weights when createModel is not given one (the StudyConfig default). */
export const DEFAULT_MODEL_SEED = 42;

/**
 * A tf.sequential stack of dense layers named `dense_0`, `dense_1`, ...: ReLU (or the spec's `activation`) hidden layers and
 * one output unit, sigmoid by default (binary classification) or `output: 'linear'` (identity,
 * regression); `logreg` and `linear` are that output layer alone. Initial weights are
 * `initialWeights(modelTensorSpecs(model, inputWidth), seed)` from protocols/model-spec.ts
 * (Glorot-uniform kernels, zero biases), so a model is reproducible from its spec and seed, and
 * equal to the coordinator's round-0 model for the same seed.
 *
 * Call initBackend first. Free the model with `model.dispose()`.
 */
export function createModel(model: ModelSpec, inputWidth: number, seed: number = DEFAULT_MODEL_SEED, output: 'sigmoid' | 'linear' = 'sigmoid'): tf.LayersModel {
  if (!Number.isInteger(inputWidth) || inputWidth <= 0) throw new RangeError(`createModel: inputWidth must be a positive integer, got ${inputWidth}`);
  const units = model.kind === 'mlp' ? [...model.hidden, 1] : [1];
  const hidden = model.kind === 'mlp' ? (model.activation ?? 'relu') : 'relu';
  const net = tf.sequential();
  units.forEach((u, i) => {
    net.add(
      tf.layers.dense({
        name: `dense_${i}`,
        units: u,
        activation: i === units.length - 1 ? output : hidden,
        // Overwritten right below: zeros cost nothing to make.
        kernelInitializer: 'zeros',
        biasInitializer: 'zeros',
        ...(i === 0 ? { inputShape: [inputWidth] } : {}),
      }),
    );
  });
  setWeights(net, initialWeights(modelTensorSpecs(model, inputWidth), seed));
  return net;
}

interface DenseWeights {
  kernel: tf.LayerVariable;
  bias: tf.LayerVariable;
}

/** The model's variables in protocol order: dense_0/kernel, dense_0/bias, dense_1/kernel, ... */
function denseWeights(model: tf.LayersModel): DenseWeights[] {
  return model.layers.map((layer, i) => {
    const weights = layer.weights;
    if (layer.getClassName() !== 'Dense' || weights.length !== 2) {
      throw new TensorError(`layer ${i} (${layer.name}) is a ${layer.getClassName()} with ${weights.length} weights; expected Dense with kernel and bias`);
    }
    const [kernel, bias] = weights;
    if (kernel.shape.length !== 2 || bias.shape.length !== 1) {
      throw new TensorError(`layer ${i} (${layer.name}): unexpected weight shapes ${formatShape(kernel.shape as number[])} and ${formatShape(bias.shape as number[])}`);
    }
    return { kernel, bias };
  });
}

/** Names and shapes of the model's tensors, as modelTensorSpecs would list them. */
export function modelSpecsOf(model: tf.LayersModel | DenseModel): TensorSpec[] {
  if (isDenseModel(model)) return model.specs();
  const specs: TensorSpec[] = [];
  denseWeights(model).forEach(({ kernel, bias }, i) => {
    specs.push({ name: `dense_${i}/kernel`, shape: [...(kernel.shape as number[])] });
    specs.push({ name: `dense_${i}/bias`, shape: [...(bias.shape as number[])] });
  });
  return specs;
}

/** A copy of the model's weights (float32), named and ordered as modelTensorSpecs. */
export function getWeights(model: tf.LayersModel | DenseModel): WeightSet {
  if (isDenseModel(model)) return model.getWeights();
  const out: WeightSet = [];
  denseWeights(model).forEach(({ kernel, bias }, i) => {
    for (const [suffix, variable] of [['kernel', kernel], ['bias', bias]] as const) {
      // read() is the variable itself (not a new tensor): nothing to dispose. dataSync may hand out
      // the backend's own buffer (cpu backend), hence the copy.
      const values = new Float32Array(variable.read().dataSync() as Float32Array);
      out.push({ name: `dense_${i}/${suffix}`, shape: [...(variable.shape as number[])], values });
    }
  });
  return out;
}

/**
 * Loads weights into the model. Tensors are matched by name (order does not matter) and must be
 * exactly the model's (modelTensorSpecs), with matching shapes and finite values; otherwise a
 * TensorError names the tensor. Float64 values are rounded to float32.
 */
export function setWeights(model: tf.LayersModel | DenseModel, weights: WeightSet): void {
  if (isDenseModel(model)) return model.setWeights(weights);
  const expected = modelSpecsOf(model);
  for (const t of weights) {
    const problem = describeTensorInconsistency(t);
    if (problem !== null) throw new TensorError(`setWeights: ${problem}`);
  }
  const mismatch = describeSpecMismatch(expected, specsOf(weights));
  if (mismatch !== null) throw new TensorError(`setWeights: ${mismatch}`);
  const byName = new Map(weights.map((t) => [t.name, t] as const));
  for (const t of weights) {
    const v = t.values;
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) throw new TensorError(`setWeights: tensor "${t.name}" holds a non-finite value (${v[i]}) at index ${i}`);
    }
  }
  const layers = denseWeights(model);
  tf.tidy(() => {
    layers.forEach((_, i) => {
      const kernel = byName.get(`dense_${i}/kernel`)!;
      const bias = byName.get(`dense_${i}/bias`)!;
      // The variables take a reference to these tensors' data; tidy drops ours.
      model.layers[i].setWeights([toTensor(kernel.values, kernel.shape), toTensor(bias.values, bias.shape)]);
    });
  });
}

function toTensor(values: Float32Array | Float64Array, shape: number[]): tf.Tensor {
  // Always a copy: the cpu backend keeps the array it is given, and the caller may reuse theirs.
  return tf.tensor(Float32Array.from(values), shape, 'float32');
}

// The node's dense models reach these through models/tfjs-side.ts without importing TensorFlow.js.
provideTfjs({ createModel, getWeights, setWeights, modelSpecsOf });
