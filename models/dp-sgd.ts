// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import { randomBytes } from 'node:crypto';
import { GaussianNoise } from '../protocols/privacy/gaussian-noise.ts';
import type { DpSgdConfig } from '../protocols/privacy/study-privacy.ts';
import { dpSgdStepsPerRound } from '../protocols/privacy/study-privacy.ts';
import type { EncodedData } from './encode.ts';
import { bceLoss, type OutputLoss } from './losses.ts';
import { globalTensors, type Proximal } from './train.ts';
import { activate, activationDerivative, asHiddenActivation, type HiddenActivation } from './activations.ts';
import { isDenseModel, type DenseModel } from './dense-model.ts';
import { trainModelDpSgd } from './dense-ops.ts';
import { provideTfjs } from './tfjs-side.ts';

/**
 * Record-level DP-SGD on a node (Abadi et al. 2016, "Deep Learning with Differential Privacy"):
 * each step Poisson-samples rows with rate q, clips every row's gradient to L2 norm C, sums, adds
 * N(0, (sigma C)^2) to each coordinate, and divides by a fixed expected batch size B (so the
 * sampled batch size leaks nothing): the study's public expectedBatchSize, never q n with the
 * node's private row count n (see trainDpSgd).
 *
 * Per-example clipping is vectorized for dense stacks: the gradient of one row for a dense layer
 * is the outer product a_i^T delta_i of its input activations and the loss gradient at the
 * layer's pre-activations, so its Frobenius norm is |a_i| |delta_i| (Goodfellow 2015, "Efficient
 * Per-Example Gradient Computations"). One batched forward and backward pass gives every row's
 * norm, and the clipped sum is A^T (c * Delta): a matmul, never a per-row backward pass.
 *
 * The backward pass starts from d loss / d z at the output unit, the loss's `gradient`
 * (losses.ts): sigmoid(z) - y for binary cross-entropy; for regression (identity output) z - t
 * (mse, and log1p: mse on the transformed target), clamp(z - t, -d, d) (huber) and
 * -t e^((1-p) z) + e^((2-p) z) (tweedie, log link).
 */

export interface DpSgdOptions {
  /** The loss (default binary cross-entropy, sigmoid output); data.y holds its targets. */
  loss?: OutputLoss;
  /** FedProx's proximal term (mu / 2) |w - global|^2, when mu > 0. */
  proximal?: Proximal;
}

export interface DpSgdResult {
  steps: number;
  /** Rows actually sampled, summed over steps. */
  sampledRows: number;
  /** Fraction of sampled rows whose gradient exceeded C (a health signal for choosing C). */
  clippedFraction: number;
  /** Mean training loss of the sampled rows (before the update). */
  loss: number;
}

interface Layer {
  kernel: tf.Variable;
  bias: tf.Variable;
  /** The hidden layers' activation; null for the output layer (its loss handles it). */
  activation: HiddenActivation | null;
}

function denseLayers(model: tf.LayersModel, output: 'sigmoid' | 'linear' = 'sigmoid'): Layer[] {
  return model.layers.map((layer, i) => {
    const config = layer.getConfig();
    const last = i === model.layers.length - 1;
    if (layer.getClassName() !== 'Dense' || layer.weights.length !== 2) throw new Error(`DP-SGD supports dense stacks only; layer ${layer.name} is a ${layer.getClassName()}`);
    const hidden = asHiddenActivation(config.activation);
    if (last ? config.activation !== output : hidden === null) throw new Error(`DP-SGD expects ReLU or tanh hidden layers and a ${output} output; layer ${layer.name} has ${String(config.activation)}`);
    return { kernel: layer.weights[0].read() as tf.Variable, bias: layer.weights[1].read() as tf.Variable, activation: last ? null : hidden };
  });
}

/** Uniforms in [0, 1) from the OS CSPRNG: the batch a step samples must be secret too. */
function secureUniforms(n: number): Float64Array {
  const bytes = randomBytes(n * 4);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes.readUInt32LE(i * 4) / 4294967296;
  return out;
}

/**
 * Per-example gradient norms and the clipped gradient sum for one batch, batched.
 * Returns tensors the caller disposes (inside a tidy).
 */
export function clippedGradientSum(layers: Layer[], x: tf.Tensor2D, y: tf.Tensor2D, clipNorm: number, lossFn: OutputLoss = bceLoss): { grads: tf.Tensor[]; norms: tf.Tensor1D; loss: tf.Scalar } {
  // Forward, keeping each layer's input activations.
  const inputs: tf.Tensor2D[] = [];
  const preActivations: tf.Tensor2D[] = [];
  let h = x;
  for (const layer of layers) {
    inputs.push(h);
    const z = tf.add(tf.matMul(h, layer.kernel as tf.Tensor2D), layer.bias) as tf.Tensor2D;
    preActivations.push(z);
    h = layer.activation ? activate(layer.activation, z) : z;
  }
  const logits = h;
  const loss = lossFn.mean(logits, y);
  // Backward by hand: d(per-row loss)/d(z) (for BCE sigmoid(z) - y), times f'(z) of each hidden
  // layer (ReLU: 1 where z > 0; tanh: 1 - h^2, from the next layer's input h = tanh z).
  const deltas: tf.Tensor2D[] = new Array(layers.length);
  let delta = lossFn.gradient(logits, y) as tf.Tensor2D;
  for (let l = layers.length - 1; l >= 0; l--) {
    deltas[l] = delta;
    if (l > 0) {
      const back = tf.matMul(delta, layers[l].kernel as tf.Tensor2D, false, true);
      delta = tf.mul(back, activationDerivative(layers[l - 1].activation!, preActivations[l - 1], inputs[l])) as tf.Tensor2D;
    }
  }
  // |g_i|^2 = sum over layers of (|a_i|^2 + 1) |delta_i|^2  (the +1 is the bias gradient).
  let squared: tf.Tensor1D = tf.zeros([x.shape[0]]);
  for (let l = 0; l < layers.length; l++) {
    const a2 = tf.sum(tf.square(inputs[l]), 1);
    const d2 = tf.sum(tf.square(deltas[l]), 1);
    squared = tf.add(squared, tf.mul(tf.add(a2, 1), d2)) as tf.Tensor1D;
  }
  const norms = tf.sqrt(squared) as tf.Tensor1D;
  const factors = tf.minimum(1, tf.div(clipNorm, tf.maximum(norms, 1e-12))).reshape([-1, 1]);
  const grads: tf.Tensor[] = [];
  for (let l = 0; l < layers.length; l++) {
    const scaled = tf.mul(deltas[l], factors);
    grads.push(tf.matMul(inputs[l], scaled, true, false)); // kernel: A^T (c * Delta)
    grads.push(tf.sum(scaled, 0)); // bias
  }
  return { grads, norms, loss };
}

/**
 * The same clipped sum, one row at a time with autodiff: the straightforward way, kept to test
 * the vectorized one against and to measure it in the bench.
 */
export function clippedGradientSumNaive(layers: Layer[], x: tf.Tensor2D, y: tf.Tensor2D, clipNorm: number, lossFn: OutputLoss = bceLoss): tf.Tensor[] {
  const variables = layers.flatMap((l) => [l.kernel, l.bias]);
  let sums: tf.Tensor[] = variables.map((v) => tf.zerosLike(v));
  for (let i = 0; i < x.shape[0]; i++) {
    const next = tf.tidy(() => {
      const xi = x.slice([i, 0], [1, -1]);
      const yi = y.slice([i, 0], [1, -1]);
      const { grads } = tf.variableGrads(() => {
        let h: tf.Tensor2D = xi;
        for (const layer of layers) {
          const z = tf.add(tf.matMul(h, layer.kernel as tf.Tensor2D), layer.bias) as tf.Tensor2D;
          h = layer.activation === 'tanh' ? tf.tanh(z) : layer.activation === 'relu' ? tf.relu(z) : z;
        }
        return lossFn.mean(h, yi);
      }, variables);
      const ordered = variables.map((v) => grads[v.name]);
      const norm = Math.sqrt(ordered.reduce((s, g) => s + (tf.sum(tf.square(g)).dataSync()[0] ?? 0), 0));
      const factor = Math.min(1, clipNorm / Math.max(norm, 1e-12));
      return sums.map((s, k) => tf.add(s, tf.mul(ordered[k], factor)));
    });
    for (const s of sums) s.dispose();
    sums = next;
  }
  return sums;
}

/**
 * Runs one round of DP-SGD on the model, in place.
 *
 * FedProx (options.proximal, mu > 0): each step also moves by -lr mu (w - global), the gradient
 * of (mu / 2) |w - global|^2, added AFTER the noise and not clipped. It is data-independent: a
 * function of the current weights (themselves the output of the earlier private steps) and of
 * the public global model, never of a row. Adding it is post-processing of the private gradient,
 * so it costs no privacy, and clipping it would only bias it (it bounds no row's influence).
 */
export async function trainDpSgd(model: tf.LayersModel | DenseModel, data: EncodedData, config: DpSgdConfig, noise: GaussianNoise = new GaussianNoise(), options: DpSgdOptions = {}): Promise<DpSgdResult> {
  // A dense model trains as a TensorFlow.js copy of itself (dense-ops.ts), weights copied back.
  if (isDenseModel(model)) return trainModelDpSgd(model, data, config, noise, options);
  const lossFn = options.loss ?? bceLoss;
  const layers = denseLayers(model, lossFn.output);
  const mu = options.proximal?.mu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`DP-SGD: proximal mu must be finite and >= 0, got ${mu}`);
  const { n, width } = data;
  if (n === 0) throw new RangeError('DP-SGD: no rows to train on');
  const steps = dpSgdStepsPerRound(config);
  const q = config.samplingRate;
  // The fixed, public denominator (issue 10): the study's expectedBatchSize, which the node always
  // passes (client-node/train.ts, stepDenominator: declared, else training.batchSize), so the
  // private row count n never scales the released update. This is Opacus's `expected_batch_size`
  // (opacus.PrivacyEngine.make_private with poisson_sampling=True: DPOptimizer divides the noised
  // sum by expected_batch_size, never by the sampled batch). Only a direct library call without it
  // (tests, the bench) falls back to q n, which Opacus also computes by default from len(dataset).
  const expectedBatch = config.expectedBatchSize ?? q * n;
  const noiseStd = config.noiseMultiplier * config.clipNorm;
  const dimension = layers.reduce((sum, l) => sum + l.kernel.size + l.bias.size, 0);
  const gridStep = GaussianNoise.gridStep(noiseStd, config.noiseMultiplier, dimension);
  const xAll = tf.tensor2d(data.x, [n, width], 'float32');
  const yAll = tf.tensor2d(data.y, [n, 1], 'float32');
  const globals = mu > 0 ? globalTensors(model, options.proximal!.global) : [];
  let sampledRows = 0;
  let clippedRows = 0;
  let lossSum = 0;
  try {
    for (let step = 0; step < steps; step++) {
      const u = secureUniforms(n);
      const chosen: number[] = [];
      for (let i = 0; i < n; i++) if (u[i] < q) chosen.push(i);
      sampledRows += chosen.length;
      const stats = tf.tidy(() => {
        const variables = layers.flatMap((l) => [l.kernel, l.bias]);
        let grads: tf.Tensor[];
        let clippedCount = 0;
        let batchLoss = 0;
        if (chosen.length > 0) {
          const index = tf.tensor1d(chosen, 'int32');
          const result = clippedGradientSum(layers, tf.gather(xAll, index) as tf.Tensor2D, tf.gather(yAll, index) as tf.Tensor2D, config.clipNorm, lossFn);
          grads = result.grads;
          const norms = result.norms.dataSync();
          for (const v of norms) if (v > config.clipNorm) clippedCount++;
          batchLoss = result.loss.dataSync()[0] * chosen.length;
        } else {
          grads = variables.map((v) => tf.zerosLike(v));
        }
        variables.forEach((v, k) => {
          // The Gaussian mechanism on a fixed-point grid: the clipped sum is snapped to the grid and
          // an exact discrete Gaussian added (gaussian-noise.ts has the floating-point argument).
          const values = Float64Array.from(grads[k].dataSync());
          noise.privatize(values, gridStep);
          const noisyGrad = tf.tensor(Float32Array.from(values), v.shape, 'float32');
          let step = tf.mul(noisyGrad, config.learningRate / expectedBatch);
          // Proximal gradient mu (w - global): data-independent, no privacy cost (see above).
          if (mu > 0) step = tf.add(step, tf.mul(tf.sub(v, globals[k]), config.learningRate * mu));
          v.assign(tf.sub(v, step));
        });
        return { clippedCount, batchLoss };
      });
      clippedRows += stats.clippedCount;
      lossSum += stats.batchLoss;
      if (step % 16 === 15) await new Promise<void>((r) => setImmediate(r));
    }
  } finally {
    xAll.dispose();
    yAll.dispose();
    for (const g of globals) g.dispose();
  }
  return { steps, sampledRows, clippedFraction: sampledRows ? clippedRows / sampledRows : 0, loss: sampledRows ? lossSum / sampledRows : Number.NaN };
}

export { denseLayers as dpSgdLayers };

// The node's dense models reach it through models/tfjs-side.ts without importing TensorFlow.js.
provideTfjs({ trainDpSgd });
