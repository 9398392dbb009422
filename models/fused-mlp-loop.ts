/**
 * The fused trainer's loop (models/fused-mlp.ts) with no TensorFlow.js in sight: shared by
 * trainLocalFused (a TensorFlow.js model's weights copied in and out, fused-mlp-train.ts) and the
 * node's own dense model (dense-model.ts), which never loads TensorFlow.js (issue 13).
 */
import type { TrainingConfig } from '../protocols/training-config.ts';
import { mulberry32, shuffleInPlace } from '../protocols/random.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { EncodedData } from './encode.ts';
import type { OutputLoss } from './losses.ts';
import type { FusedMlp } from './fused-mlp.ts';
import { FusedAdam, FusedSgd, type FusedOptimizer, type FusedProximal } from './fused-mlp-optim.ts';
import type { TrainOptions, TrainResult } from './train.ts';

/**
 * Adam's epsilon: TensorFlow.js's backend epsilon (tf.backend().epsilon()), 1e-7 on its float32
 * backends (cpu, wasm, tensorflow), the ones a node uses.
 */
export const FLOAT32_EPSILON = 1e-7;

/** A fresh optimizer as trainLocal's `makeOptimizer`, with the backend's epsilon for Adam. */
function makeOptimizer(config: TrainingConfig, net: FusedMlp, proximal: FusedProximal | undefined, epsilon: number): FusedOptimizer {
  if (config.optimizer === 'sgd') return new FusedSgd(net, config.learningRate, proximal);
  return new FusedAdam(net, config.learningRate, proximal, { epsilon });
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * trainLocal's loop on `net`, whose params hold the starting weights (the caller checked the
 * data): the same seeded shuffle every epoch, batches as consecutive slices of it, a fresh
 * optimizer, the mean data loss of the last epoch. `global` is FedProx's global model in net's
 * layout (flattenWeights), needed when options.proximal has mu > 0.
 */
export async function runFusedTraining(net: FusedMlp, data: EncodedData, config: TrainingConfig, loss: OutputLoss, options: TrainOptions, global: (() => Float32Array) | undefined, epsilon: number): Promise<TrainResult> {
  const { n, width, x, y } = data;
  const batchSize = Math.max(1, Math.min(config.batchSize, n));
  const mu = options.proximal?.mu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`trainLocal: proximal mu must be finite and >= 0, got ${mu}`);
  const proximal = mu > 0 && global ? { mu, global: global() } : undefined;
  const optimizer = makeOptimizer(config, net, proximal, epsilon);
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
  return { loss: lastLoss, numExamples: n, steps };
}

/** A WeightSet (by name, protocol names) flattened into net's layout; checks names and shapes. */
export function flattenWeights(net: FusedMlp, weights: WeightSet, what: string): Float32Array {
  const byName = new Map(weights.map((t) => [t.name, t] as const));
  const flat = new Float32Array(net.params.length);
  for (let l = 0; l < net.layers; l++) {
    const shapes: Array<[string, number[], number]> = [
      [`dense_${l}/kernel`, [net.widths[l], net.widths[l + 1]], net.kernelOffsets[l]],
      [`dense_${l}/bias`, [net.widths[l + 1]], net.biasOffsets[l]],
    ];
    for (const [name, shape, offset] of shapes) {
      const t = byName.get(name);
      if (t === undefined) throw new RangeError(`${what}: the global model has no tensor "${name}"`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new RangeError(`${what}: tensor "${name}" is [${t.shape.join(', ')}] in the global model, [${shape.join(', ')}] in the local one`);
      }
      flat.set(t.values, offset);
    }
  }
  return flat;
}
