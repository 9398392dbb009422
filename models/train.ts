import * as tf from './tf.ts';
import { rocAuc } from '../protocols/metrics.ts';
import type { TrainingConfig } from '../protocols/training-config.ts';
import type { EncodedData } from './encode.ts';
import { mulberry32, shuffleInPlace } from '../protocols/random.ts';

export interface TrainResult {
  /** Mean training loss (binary cross-entropy) over the last epoch, as the batches went by. */
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
}

const PREDICT_BATCH_ROWS = 8192;
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
function prepare(model: tf.LayersModel, config: TrainingConfig): tf.Optimizer {
  const key = `${config.optimizer}:${config.learningRate}`;
  const optimizer = makeOptimizer(config);
  if (compiled.get(model)?.key !== key) {
    model.compile({ optimizer, loss: 'binaryCrossentropy' });
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

function checkData(model: tf.LayersModel, data: EncodedData, what: string): void {
  const width = inputWidthOf(model);
  if (data.width !== width) throw new RangeError(`${what}: the data are ${data.width} wide but the model takes ${width} inputs (another feature spec?)`);
  if (data.x.length !== data.n * data.width || data.y.length !== data.n) {
    throw new RangeError(`${what}: inconsistent data (n=${data.n}, width=${data.width}, x has ${data.x.length} values, y ${data.y.length})`);
  }
}

/**
 * The training loss of a batch. For a stack of dense layers with ReLU (or linear) hidden layers
 * and a sigmoid output (what createModel builds), a direct forward pass with fused
 * matMul+bias+activation kernels that stops at the logits, and the cross-entropy computed from
 * the logits: fewer kernels per step than the layers API (kernel dispatch, not arithmetic, is
 * what a step costs at these sizes) and no log(0) to clip. Any other model: model.apply and
 * Keras's binary cross-entropy.
 */
function lossFunction(model: tf.LayersModel): (x: tf.Tensor, y: tf.Tensor) => tf.Scalar {
  const stack = denseStack(model);
  if (stack === null) {
    return (x, y) => tf.metrics.binaryCrossentropy(y, model.apply(x, { training: true }) as tf.Tensor).mean() as tf.Scalar;
  }
  return (x, y) => {
    let h = x as tf.Tensor2D;
    for (let l = 0; l < stack.length; l++) {
      const { kernel, bias, activation } = stack[l];
      h = tf.fused.matMul({ a: h, b: kernel, bias, activation }) as tf.Tensor2D;
    }
    return tf.losses.sigmoidCrossEntropy(y, h) as tf.Scalar;
  };
}

type DenseStep = { kernel: tf.Tensor2D; bias: tf.Tensor1D; activation: 'relu' | 'linear' };

/** The dense layers of a model whose last layer is a 1-unit sigmoid, or null for any other model. */
function denseStack(model: tf.LayersModel): DenseStep[] | null {
  const steps: DenseStep[] = [];
  const layers = model.layers;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const config = layer.getConfig();
    if (layer.getClassName() !== 'Dense' || config.useBias !== true || layer.weights.length !== 2) return null;
    const activation = config.activation;
    const last = i === layers.length - 1;
    if (last ? activation !== 'sigmoid' || config.units !== 1 : activation !== 'relu' && activation !== 'linear') return null;
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
 * `config.batchSize` (the last one smaller), binary cross-entropy, Adam or SGD at
 * `config.learningRate` (fresh optimizer state every call, see `prepare`).
 *
 * Our own loop rather than `model.fit`: tfjs's fit shuffles with Math.random (no seed), while
 * here each epoch's order is a seeded shuffle, so a round is reproducible. The data go to the
 * backend once per call; each epoch gathers them in shuffled order once and batches are slices.
 * Training yields to the event loop now and then: leave the model alone (no setWeights, no
 * dispose) until the promise settles.
 */
export async function trainLocal(model: tf.LayersModel, data: EncodedData, config: TrainingConfig, options: TrainOptions = {}): Promise<TrainResult> {
  checkData(model, data, 'trainLocal');
  const { n, width } = data;
  if (n === 0) throw new RangeError('trainLocal: no rows to train on');
  const batchSize = Math.max(1, Math.min(config.batchSize, n));
  const optimizer = prepare(model, config);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const batchLoss = lossFunction(model);
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
            return lossSum.add(cost!.mul(size)) as tf.Scalar;
          });
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
  }
  return { loss, numExamples: n, steps };
}

/** Predicted probabilities for `n` rows of row-major inputs `x` (`width` wide), in batches. */
export function predictScores(model: tf.LayersModel, x: Float32Array, n: number, width: number): Float32Array {
  if (x.length !== n * width) throw new RangeError(`predictScores: x has ${x.length} values, expected ${n} x ${width}`);
  const expected = inputWidthOf(model);
  if (width !== expected) throw new RangeError(`predictScores: the data are ${width} wide but the model takes ${expected} inputs`);
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
export function evaluateModel(model: tf.LayersModel, data: EncodedData): EvaluationResult {
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
