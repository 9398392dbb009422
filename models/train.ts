// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import { rocAuc } from '../protocols/metrics.ts';
import type { TrainingConfig } from '../protocols/training-config.ts';
import type { EncodedData } from './encode.ts';
import { mulberry32, shuffleInPlace } from '../protocols/random.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { bceLoss, type OutputLoss } from './losses.ts';
import { modelSpecsOf } from './model-factory.ts';
import { fusedTrainerWanted, trainLocalFused } from './fused-mlp-train.ts';
import { predictScoresFused } from './fused-mlp-predict.ts';
import { isDenseModel, type DenseModel } from './dense-model.ts';
import { PREDICT_BATCH_ROWS, predictModel, trainModel } from './dense-ops.ts';
import { provideTfjs } from './tfjs-side.ts';

export interface TrainResult {
  /**
   * Mean training loss (the `loss` option's: binary cross-entropy by default) over the last
   * epoch, as the batches went by; the data term only, without FedProx's proximal term.
   */
  loss: number;
  /** Rows trained on (the FedAvg weight of this update). */
  numExamples: number;
  /** Optimizer steps taken: epochs x batches per epoch. */
  steps: number;
}

export interface EvaluationResult {
  /** Mean binary cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7], as Keras does). */
  loss: number;
  /** ROC AUC; NaN when the data hold only one class. */
  auc: number;
  /** Predicted probability of the positive class, one per row. */
  scores: Float32Array;
}

export interface TrainOptions {
  /**
   * Seed of the per-epoch shuffles (default `config.seed`). A node should vary it by round
   * (e.g. `config.seed + round`) so that rounds do not replay the same batch order.
   */
  seed?: number;
  /**
   * Training yields to the event loop when it has run this long (default 50 ms), so a node keeps
   * answering heartbeats and HTTP requests while it trains. Results do not depend on it.
   */
  yieldEveryMs?: number;
  /** The loss, against the output unit's pre-activation (default: binary cross-entropy). */
  loss?: OutputLoss;
  /**
   * FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): with mu > 0
   * the local objective is the data loss plus (mu / 2) |w - global|^2, which keeps a node's
   * local model near the round's global one when nodes' data differ.
   */
  proximal?: Proximal;
}

export interface Proximal {
  mu: number;
  /** The round's global model (the weights training started from). */
  global: WeightSet;
}

/**
 * The global model's tensors in the order of `model.trainableWeights` (dense_0/kernel,
 * dense_0/bias, ...), checked against the model's shapes. The caller disposes them.
 */
export function globalTensors(model: tf.LayersModel, global: WeightSet): tf.Tensor[] {
  const byName = new Map(global.map((t) => [t.name, t] as const));
  return modelSpecsOf(model).map((spec) => {
    const t = byName.get(spec.name);
    if (t === undefined) throw new RangeError(`proximal term: the global model has no tensor "${spec.name}"`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new RangeError(`proximal term: tensor "${spec.name}" is [${t.shape.join(', ')}] in the global model, [${spec.shape.join(', ')}] in the local one`);
    }
    return tf.tensor(Float32Array.from(t.values), spec.shape, 'float32');
  });
}

const EPSILON = 1e-7;

interface Compiled {
  key: string;
}

const compiled = new WeakMap<tf.LayersModel, Compiled>();

function makeOptimizer(config: TrainingConfig): tf.Optimizer {
  return config.optimizer === 'sgd' ? tf.train.sgd(config.learningRate) : tf.train.adam(config.learningRate);
}

/**
 * Compiles the model once per optimizer configuration (kind, learning rate) and gives it a fresh
 * optimizer for this call; trainLocal disposes that optimizer when it is done.
 *
 * Choice: optimizer state (Adam's moment estimates and step count) does NOT carry over from one
 * call to the next. Each round starts from the global model, and moments accumulated on the
 * node's previous local model (maybe several rounds old) describe another point of the loss
 * surface; FedAvg (McMahan et al. 2017) and most implementations start every round's local
 * optimizer afresh. It also means nothing stays allocated between rounds but the weights.
 */
function prepare(model: tf.LayersModel, config: TrainingConfig, loss: OutputLoss): tf.Optimizer {
  const key = `${config.optimizer}:${config.learningRate}:${loss.output}`;
  const optimizer = makeOptimizer(config);
  if (compiled.get(model)?.key !== key) {
    // The compiled loss is never used (our loop computes its own): it only has to be valid.
    model.compile({ optimizer, loss: loss.output === 'sigmoid' ? 'binaryCrossentropy' : 'meanSquaredError' });
    compiled.set(model, { key });
  } else {
    model.optimizer = optimizer;
  }
  return optimizer;
}

function inputWidthOf(model: tf.LayersModel): number {
  const shape = model.inputs[0]?.shape;
  const width = shape?.[shape.length - 1];
  if (typeof width !== 'number') throw new Error('model has no fixed input width');
  return width;
}

function checkData(model: tf.LayersModel | DenseModel, data: EncodedData, what: string): void {
  const width = isDenseModel(model) ? model.inputWidth : inputWidthOf(model);
  if (data.width !== width) throw new RangeError(`${what}: the data are ${data.width} wide but the model takes ${width} inputs (another feature spec?)`);
  if (data.x.length !== data.n * data.width || data.y.length !== data.n) {
    throw new RangeError(`${what}: inconsistent data (n=${data.n}, width=${data.width}, x has ${data.x.length} values, y ${data.y.length})`);
  }
}

/**
 * The training loss of a batch. For a stack of dense layers with ReLU (or linear) hidden layers
 * and the loss's output unit (sigmoid or identity: what createModel builds), a direct forward
 * pass with fused matMul+bias+activation kernels that stops at the output's pre-activation z,
 * and the loss computed from z (for a sigmoid: the cross-entropy from the logits): fewer kernels
 * per step than the layers API (kernel dispatch, not arithmetic, is what a step costs at these
 * sizes) and no log(0) to clip. Any other model: model.apply and the loss from its output.
 */
export function lossFunction(model: tf.LayersModel, loss: OutputLoss = bceLoss): (x: tf.Tensor, y: tf.Tensor) => tf.Scalar {
  const stack = denseStack(model, loss.output);
  if (stack === null) {
    return (x, y) => loss.meanFromOutput(model.apply(x, { training: true }) as tf.Tensor, y);
  }
  return (x, y) => {
    let h = x as tf.Tensor2D;
    for (let l = 0; l < stack.length; l++) {
      const { kernel, bias, activation } = stack[l];
      h = tf.fused.matMul({ a: h, b: kernel, bias, activation }) as tf.Tensor2D;
    }
    return loss.mean(h, y);
  };
}

type DenseStep = { kernel: tf.Tensor2D; bias: tf.Tensor1D; activation: 'relu' | 'linear' };

/** The dense layers of a model whose last layer is a 1-unit `output`, or null for any other model. */
function denseStack(model: tf.LayersModel, output: 'sigmoid' | 'linear'): DenseStep[] | null {
  const steps: DenseStep[] = [];
  const layers = model.layers;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const config = layer.getConfig();
    if (layer.getClassName() !== 'Dense' || config.useBias !== true || layer.weights.length !== 2) return null;
    const activation = config.activation;
    const last = i === layers.length - 1;
    if (last ? activation !== output || config.units !== 1 : activation !== 'relu' && activation !== 'linear') return null;
    steps.push({
      kernel: layer.weights[0].read() as tf.Tensor2D,
      bias: layer.weights[1].read() as tf.Tensor1D,
      activation: last ? 'linear' : (activation as 'relu' | 'linear'),
    });
  }
  return steps.length > 0 ? steps : null;
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Trains the model in place on `data`: `config.localEpochs` passes over the rows in batches of
 * `config.batchSize` (the last one smaller), `options.loss` (binary cross-entropy by default;
 * `data.y` holds its training targets) plus FedProx's proximal term when `options.proximal`
 * has mu > 0, Adam or SGD at
 * `config.learningRate` (fresh optimizer state every call, see `prepare`).
 *
 * Our own loop rather than `model.fit`: tfjs's fit shuffles with Math.random (no seed), while
 * here each epoch's order is a seeded shuffle, so a round is reproducible. The data go to the
 * backend once per call; each epoch gathers them in shuffled order once and batches are slices.
 * Training yields to the event loop now and then: leave the model alone (no setWeights, no
 * dispose) until the promise settles.
 */
export async function trainLocal(model: tf.LayersModel | DenseModel, data: EncodedData, config: TrainingConfig, options: TrainOptions = {}): Promise<TrainResult> {
  if (isDenseModel(model)) return trainModel(model, data, config, { ...options, loss: options.loss ?? bceLoss });
  checkData(model, data, 'trainLocal');
  const { n, width } = data;
  if (n === 0) throw new RangeError('trainLocal: no rows to train on');
  const batchSize = Math.max(1, Math.min(config.batchSize, n));
  const objective = options.loss ?? bceLoss;
  // The hand-written dense trainer (models/fused-mlp-train.ts) by default, same semantics; null
  // for a model it does not cover, which TensorFlow.js then trains (and FEDMARK_TRAINER=tfjs).
  if (fusedTrainerWanted()) {
    const fused = await trainLocalFused(model, data, config, objective, options);
    if (fused !== null) return fused;
  }
  const optimizer = prepare(model, config, objective);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const dataLoss = lossFunction(model, objective);
  const mu = options.proximal?.mu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`trainLocal: proximal mu must be finite and >= 0, got ${mu}`);
  const globals = mu > 0 ? globalTensors(model, options.proximal!.global) : [];
  // The data term of the last batch, kept out of minimize's tidy so the reported loss leaves
  // the proximal term out (it measures the fit, not the distance to the global model).
  let keptDataCost: tf.Scalar | undefined;
  const batchLoss =
    mu > 0
      ? (x: tf.Tensor, y: tf.Tensor): tf.Scalar => {
          const data = dataLoss(x, y);
          keptDataCost = tf.keep(data);
          let squares: tf.Tensor = tf.scalar(0);
          for (let k = 0; k < variables.length; k++) squares = tf.add(squares, tf.sum(tf.square(tf.sub(variables[k], globals[k]))));
          return tf.add(data, tf.mul(squares, mu / 2)) as tf.Scalar;
        }
      : dataLoss;
  const random = mulberry32(options.seed ?? config.seed);
  const yieldEveryMs = options.yieldEveryMs ?? 50;

  const xAll = tf.tensor2d(data.x, [n, width], 'float32');
  const yAll = tf.tensor2d(data.y, [n, 1], 'float32');
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let steps = 0;
  let loss = Number.NaN;
  let lastYield = performance.now();
  try {
    for (let epoch = 0; epoch < config.localEpochs; epoch++) {
      shuffleInPlace(order, random);
      const [xEpoch, yEpoch] = tf.tidy(() => {
        const index = tf.tensor1d(order, 'int32');
        return [tf.gather(xAll, index), tf.gather(yAll, index)];
      });
      // Sum of batch losses x batch sizes, kept on the backend: one read per epoch, not per batch.
      let lossSum: tf.Scalar = tf.scalar(0);
      try {
        for (let start = 0; start < n; start += batchSize) {
          const size = Math.min(batchSize, n - start);
          const nextSum = tf.tidy(() => {
            const xb = xEpoch.slice([start, 0], [size, width]);
            const yb = yEpoch.slice([start, 0], [size, 1]);
            const cost = optimizer.minimize(() => batchLoss(xb, yb), true, variables);
            return lossSum.add((keptDataCost ?? cost!).mul(size)) as tf.Scalar;
          });
          keptDataCost?.dispose();
          keptDataCost = undefined;
          lossSum.dispose();
          lossSum = nextSum;
          steps++;
          if (performance.now() - lastYield >= yieldEveryMs) {
            await nextTick();
            lastYield = performance.now();
          }
        }
        if (epoch === config.localEpochs - 1) loss = (await lossSum.data())[0] / n;
      } finally {
        lossSum.dispose();
        xEpoch.dispose();
        yEpoch.dispose();
      }
    }
  } finally {
    xAll.dispose();
    yAll.dispose();
    optimizer.dispose();
    for (const g of globals) g.dispose();
  }
  return { loss, numExamples: n, steps };
}

/**
 * The model's outputs for `n` rows of row-major inputs `x` (`width` wide), in batches: predicted
 * probabilities for a sigmoid output, the raw output (a transformed target) for an identity one.
 */
export function predictScores(model: tf.LayersModel | DenseModel, x: Float32Array, n: number, width: number): Float32Array {
  if (isDenseModel(model)) return predictModel(model, x, n, width);
  if (x.length !== n * width) throw new RangeError(`predictScores: x has ${x.length} values, expected ${n} x ${width}`);
  const expected = inputWidthOf(model);
  if (width !== expected) throw new RangeError(`predictScores: the data are ${width} wide but the model takes ${expected} inputs`);
  // The fused forward pass for a dense stack it covers (unless FEDMARK_TRAINER=tfjs).
  const fused = fusedTrainerWanted() ? predictScoresFused(model, x, n, width, PREDICT_BATCH_ROWS) : null;
  if (fused !== null) return fused;
  const scores = new Float32Array(n);
  for (let start = 0; start < n; start += PREDICT_BATCH_ROWS) {
    const rows = Math.min(PREDICT_BATCH_ROWS, n - start);
    const batch = tf.tidy(() => {
      const input = tf.tensor2d(x.subarray(start * width, (start + rows) * width), [rows, width], 'float32');
      return (model.predict(input) as tf.Tensor).dataSync();
    });
    scores.set(batch, start);
  }
  return scores;
}

/** Loss and AUC of the model on `data` (for a node: its held-out rows; for tests: a test split). */
export function evaluateModel(model: tf.LayersModel | DenseModel, data: EncodedData): EvaluationResult {
  checkData(model, data, 'evaluateModel');
  const scores = predictScores(model, data.x, data.n, data.width);
  return { loss: logLoss(scores, data.y), auc: rocAuc(scores, data.y), scores };
}

/** Mean binary cross-entropy in float64; NaN for no rows. */
export function logLoss(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (n === 0) return Number.NaN;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.min(1 - EPSILON, Math.max(EPSILON, scores[i]));
    total -= labels[i] > 0.5 ? Math.log(p) : Math.log(1 - p);
  }
  return total / n;
}

// The node's dense models reach these through models/tfjs-side.ts without importing TensorFlow.js.
provideTfjs({ trainLocal, predictScores });
