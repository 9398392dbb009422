/**
 * trainLocal's loop on the fused trainer (models/fused-mlp.ts) instead of TensorFlow.js, for
 * the models it covers: a stack of Dense layers with biases, ReLU / tanh / linear hidden
 * layers, and one output unit with the loss's activation (what createModel builds). Same
 * semantics as models/train.ts's trainLocal, so that swapping one for the other changes results
 * only by float rounding: the same seeded shuffle of the rows every epoch, batches as
 * consecutive slices of it (the last one smaller), the mean loss of a batch, a fresh optimizer
 * state per call, the reported loss the mean data loss over the last epoch.
 *
 * The default (issue 13: at these sizes TensorFlow.js's per-op overhead, not arithmetic, is what a
 * step costs); FEDMARK_TRAINER=tfjs forces TensorFlow.js. `fusedTrainerWanted` reads it.
 */
import * as tf from './tf.ts';
import type { TrainingConfig } from '../protocols/training-config.ts';
import { mulberry32, shuffleInPlace } from '../protocols/random.ts';
import type { EncodedData } from './encode.ts';
import type { OutputLoss } from './losses.ts';
import { FusedMlp, type FusedActivation, type FusedLayout } from './fused-mlp.ts';
import { FusedAdam, FusedSgd, type FusedOptimizer, type FusedProximal } from './fused-mlp-optim.ts';
import { globalsFlat, readParams, writeParams } from './fused-mlp-weights.ts';
import type { TrainOptions, TrainResult } from './train.ts';

export const TRAINERS = ['tfjs', 'fused'] as const;

/**
 * True unless FEDMARK_TRAINER=tfjs: the fused trainer (and its forward pass for predictions) is
 * the default wherever it covers the model; a clear error for an unknown value.
 */
export function fusedTrainerWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.FEDMARK_TRAINER;
  if (value === undefined || value === '' || value === 'fused') return true;
  if (value === 'tfjs') return false;
  throw new RangeError(`FEDMARK_TRAINER must be one of ${TRAINERS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** The model's layout if the fused trainer can train it with this loss, else null. */
export function fusedLayoutOf(model: tf.LayersModel, loss: OutputLoss): FusedLayout | null {
  return denseLayoutOf(model, loss.output);
}

/**
 * The layout of a stack of Dense layers with biases, ReLU / tanh / linear hidden layers and one
 * output unit whose activation is `output` (any of sigmoid / linear when undefined), else null.
 */
export function denseLayoutOf(model: tf.LayersModel, output?: 'sigmoid' | 'linear'): FusedLayout | null {
  const widths: number[] = [];
  const hidden: FusedActivation[] = [];
  const layers = model.layers;
  if (layers.length === 0) return null;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const config = layer.getConfig();
    if (layer.getClassName() !== 'Dense' || config.useBias !== true || layer.weights.length !== 2) return null;
    const [inWidth, outWidth] = layer.weights[0].shape as number[];
    if (i === 0) widths.push(inWidth);
    widths.push(outWidth);
    const activation = config.activation;
    if (i === layers.length - 1) {
      const wanted = output ?? (activation === 'sigmoid' ? 'sigmoid' : 'linear');
      if (activation !== wanted || outWidth !== 1) return null;
    } else if (activation === 'relu' || activation === 'tanh' || activation === 'linear') {
      hidden.push(activation);
    } else {
      return null;
    }
  }
  return { widths, hidden };
}

/** A fresh optimizer as trainLocal's `makeOptimizer`, with tfjs's backend epsilon for Adam. */
function makeOptimizer(config: TrainingConfig, net: FusedMlp, proximal: FusedProximal | undefined): FusedOptimizer {
  if (config.optimizer === 'sgd') return new FusedSgd(net, config.learningRate, proximal);
  return new FusedAdam(net, config.learningRate, proximal, { epsilon: tf.backend().epsilon() });
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * trainLocal on the fused trainer, or null when the model is not one it covers (the caller
 * then trains with TensorFlow.js). The caller has checked the data against the model.
 */
export async function trainLocalFused(model: tf.LayersModel, data: EncodedData, config: TrainingConfig, loss: OutputLoss, options: TrainOptions = {}): Promise<TrainResult | null> {
  const layout = fusedLayoutOf(model, loss);
  if (layout === null) return null;
  const { n, width, x, y } = data;
  const batchSize = Math.max(1, Math.min(config.batchSize, n));
  const mu = options.proximal?.mu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`trainLocal: proximal mu must be finite and >= 0, got ${mu}`);
  const net = new FusedMlp(layout, batchSize);
  readParams(model, net);
  const proximal = mu > 0 ? { mu, global: globalsFlat(model, net, options.proximal!.global) } : undefined;
  const optimizer = makeOptimizer(config, net, proximal);
  const random = mulberry32(options.seed ?? config.seed);
  const yieldEveryMs = options.yieldEveryMs ?? 50;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const xb = net.input; // gathered in place: no copy into the network
  const yb = new Float32Array(batchSize);
  let steps = 0;
  let lastLoss = Number.NaN;
  let lastYield = performance.now();
  for (let epoch = 0; epoch < config.localEpochs; epoch++) {
    shuffleInPlace(order, random);
    let lossSum = 0;
    for (let start = 0; start < n; start += batchSize) {
      const size = Math.min(batchSize, n - start);
      for (let r = 0; r < size; r++) {
        const row = order[start + r];
        const from = row * width;
        const to = r * width;
        for (let c = 0; c < width; c++) xb[to + c] = x[from + c];
        yb[r] = y[row];
      }
      lossSum += net.lossAndGradient(xb, yb, size, loss);
      optimizer.step();
      steps++;
      if (performance.now() - lastYield >= yieldEveryMs) {
        await nextTick();
        lastYield = performance.now();
      }
    }
    if (epoch === config.localEpochs - 1) lastLoss = lossSum / n;
  }
  writeParams(net, model);
  return { loss: lastLoss, numExamples: n, steps };
}
