/**
 * What the node does with its model, whichever it is: its own dense model (dense-model.ts, the
 * default: the fused trainer, no TensorFlow.js) or a TensorFlow.js model (tests, tools). DP-SGD
 * and FEDMARK_TRAINER=tfjs train a TensorFlow.js copy of a dense model (its twin) built on the
 * spot and copy the weights back, so their numbers are exactly TensorFlow.js's as before.
 */
import type { DpSgdConfig } from '../protocols/privacy/study-privacy.ts';
import type { GaussianNoise } from '../protocols/privacy/gaussian-noise.ts';
import type { TrainingConfig } from '../protocols/training-config.ts';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import type * as tf from './tf.ts';
import type { DpSgdOptions, DpSgdResult } from './dp-sgd.ts';
import type { EncodedData } from './encode.ts';
import type { OutputLoss } from './losses.ts';
import type { TrainOptions, TrainResult } from './train.ts';
import { DenseModel, isDenseModel } from './dense-model.ts';
import { FusedMlp } from './fused-mlp.ts';
import { FLOAT32_EPSILON, flattenWeights, runFusedTraining } from './fused-mlp-loop.ts';
import { loadTensorFlow, tfjsSide, type TfjsSide } from './tfjs-side.ts';
import { fusedTrainerWanted } from './trainer-choice.ts';

/** A model kind's model: the node's dense model, or a TensorFlow.js one. */
export type KindModel = tf.LayersModel | DenseModel;

/** Rows per forward-pass block when predicting. */
export const PREDICT_BATCH_ROWS = 8192;

export function modelSpecs(model: KindModel): TensorSpec[] {
  return isDenseModel(model) ? model.specs() : tfjsSide('modelSpecsOf')(model);
}

export function readWeights(model: KindModel): WeightSet {
  return isDenseModel(model) ? model.getWeights() : tfjsSide('getWeights')(model);
}

export function writeWeights(model: KindModel, weights: WeightSet): void {
  if (isDenseModel(model)) model.setWeights(weights);
  else tfjsSide('setWeights')(model, weights);
}

/** trainLocal (models/train.ts) for either model: the fused trainer on a dense model unless FEDMARK_TRAINER=tfjs. */
export async function trainModel(model: KindModel, data: EncodedData, config: TrainingConfig, options: TrainOptions & { loss: OutputLoss }): Promise<TrainResult> {
  if (!isDenseModel(model)) return (await loadTensorFlow()).trainLocal(model, data, config, options);
  checkDenseData(model, data, 'trainLocal');
  if (data.n === 0) throw new RangeError('trainLocal: no rows to train on');
  if (!fusedTrainerWanted() || model.output !== options.loss.output) {
    const side = await loadTensorFlow();
    return withTwin(side, model, (twin) => side.trainLocal(twin, data, config, options));
  }
  const maxRows = Math.max(1, Math.min(config.batchSize, data.n));
  const net = takeTrainingNet(model, maxRows);
  net.params.set(model.params);
  const global = options.proximal ? () => flattenWeights(net, options.proximal!.global, 'proximal term') : undefined;
  const result = await runFusedTraining(net, data, config, options.loss, options, global, FLOAT32_EPSILON);
  model.params.set(net.params.subarray(0, model.params.length));
  // Kept only after a training that ended normally, and zeroed first: a kept network holds none of
  // this training's rows, gradients or moments between rounds.
  net.reset();
  trainingNets.set(model, net);
  return result;
}

/**
 * The network a dense model trains with, kept between trainings (issue 13, a node's CPU per
 * round): a node trains the same model with the same batch size every round, and a new FusedMlp
 * each time cost a WebAssembly memory and instance, ~0.35-0.55 ms of a node's ~7-8.5 ms a round
 * (a demo-sized training 0.62-0.76 ms CPU with a new network, 0.21-0.28 ms with a kept one).
 * Taken out of the cache for the training's length, so two trainings of one model at once never
 * share one; put back zeroed (FusedMlp.reset), so it is a new network's state in every way, and
 * holds nothing of the last training's rows while it waits (test/models/train-net-reuse.test.ts).
 */
const trainingNets = new WeakMap<DenseModel, FusedMlp>();

function takeTrainingNet(model: DenseModel, maxRows: number): FusedMlp {
  const kept = trainingNets.get(model);
  trainingNets.delete(model);
  if (kept?.maxRows !== maxRows) return new FusedMlp(model.layout, maxRows); // a model's layout is fixed when it is made
  return kept;
}

/** DP-SGD (models/dp-sgd.ts, TensorFlow.js) for either model: loaded now if it was not. */
export async function trainModelDpSgd(model: KindModel, data: EncodedData, config: DpSgdConfig, noise: GaussianNoise | undefined, options: DpSgdOptions): Promise<DpSgdResult> {
  const side = await loadTensorFlow();
  if (!isDenseModel(model)) return side.trainDpSgd(model, data, config, noise, options);
  return withTwin(side, model, (twin) => side.trainDpSgd(twin, data, config, noise, options));
}

/**
 * predictScores (models/train.ts) for either model: the fused forward pass on a dense model unless
 * FEDMARK_TRAINER=tfjs, which needs TensorFlow.js loaded already (the node's initBackend loads it
 * at start when FEDMARK_TRAINER=tfjs).
 */
export function predictModel(model: KindModel, x: Float32Array, n: number, width: number): Float32Array {
  if (!isDenseModel(model)) return tfjsSide('predictScores')(model, x, n, width);
  if (x.length !== n * width) throw new RangeError(`predictScores: x has ${x.length} values, expected ${n} x ${width}`);
  if (width !== model.inputWidth) throw new RangeError(`predictScores: the data are ${width} wide but the model takes ${model.inputWidth} inputs`);
  if (!fusedTrainerWanted()) {
    const side = { createModel: tfjsSide('createModel'), setWeights: tfjsSide('setWeights'), getWeights: tfjsSide('getWeights'), predictScores: tfjsSide('predictScores') };
    const twin = twinOf(side, model);
    try {
      return side.predictScores(twin, x, n, width);
    } finally {
      twin.dispose();
    }
  }
  const net = predictionNet(model, Math.max(1, Math.min(n, PREDICT_BATCH_ROWS)));
  net.params.set(model.params);
  return forwardScores(net, x, n, width, model.output === 'sigmoid');
}

/**
 * The network a dense model predicts with, kept per model and block size: a node evaluates the
 * same validation rows every round, and a new FusedMlp each time (a WebAssembly memory and
 * instance, its buffers) was most of a demo node's evaluation CPU (bench/node-evaluate-cpu.ts).
 * Its weights are overwritten before every use and forward() reads nothing else it kept, so the
 * scores are the same numbers as from a new one (test/models/predict-net-reuse.test.ts).
 */
const predictionNets = new WeakMap<DenseModel, FusedMlp>();

function predictionNet(model: DenseModel, maxRows: number): FusedMlp {
  const kept = predictionNets.get(model);
  if (kept?.maxRows === maxRows) return kept; // a model's layout is fixed when it is made
  const net = new FusedMlp(model.layout, maxRows);
  predictionNets.set(model, net);
  return net;
}

/** The network's outputs for `n` rows, block by block: sigmoid(z) for a sigmoid output unit, else z. */
export function forwardScores(net: FusedMlp, x: Float32Array, n: number, width: number, sigmoid: boolean): Float32Array {
  const scores = new Float32Array(n);
  for (let start = 0; start < n; start += net.maxRows) {
    const rows = Math.min(net.maxRows, n - start);
    const z = net.forward(x.subarray(start * width, (start + rows) * width), rows);
    if (!sigmoid) scores.set(z, start);
    else for (let i = 0; i < rows; i++) scores[start + i] = 1 / (1 + Math.exp(-z[i]));
  }
  return scores;
}

function checkDenseData(model: DenseModel, data: EncodedData, what: string): void {
  if (data.width !== model.inputWidth) throw new RangeError(`${what}: the data are ${data.width} wide but the model takes ${model.inputWidth} inputs (another feature spec?)`);
  if (data.x.length !== data.n * data.width || data.y.length !== data.n) {
    throw new RangeError(`${what}: inconsistent data (n=${data.n}, width=${data.width}, x has ${data.x.length} values, y ${data.y.length})`);
  }
}

type TwinSide = Pick<TfjsSide, 'createModel' | 'setWeights' | 'getWeights'>;

/** A TensorFlow.js model with the dense model's layers and weights. */
function twinOf(side: TwinSide, model: DenseModel): tf.LayersModel {
  const twin = side.createModel(model.spec, model.inputWidth, 0, model.output);
  side.setWeights(twin, model.getWeights());
  return twin;
}

/** Runs `work` on a twin of the dense model and copies the twin's weights back. */
async function withTwin<T>(side: TwinSide, model: DenseModel, work: (twin: tf.LayersModel) => Promise<T>): Promise<T> {
  const twin = twinOf(side, model);
  try {
    const result = await work(twin);
    model.setWeights(side.getWeights(twin), { finite: false });
    return result;
  } finally {
    twin.dispose();
  }
}
