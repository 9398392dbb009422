/**
 * The fused dense trainer (models/fused-mlp*.ts) against TensorFlow.js: every tensor's gradient
 * against tf.variableGrads of train.ts's own batch loss (lossFunction), one Adam / SGD step
 * against tf.train.adam / sgd, and trainLocal's loss curve and weights, tfjs vs fused.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '../../models/tf.ts';
import { initBackend } from '../../models/backend.ts';
import { bceLoss, huberLoss, mseLoss, tweedieLoss, type OutputLoss } from '../../models/losses.ts';
import { createModel, getWeights, setWeights } from '../../models/model-factory.ts';
import { lossFunction, trainLocal } from '../../models/train.ts';
import { FusedMlp } from '../../models/fused-mlp.ts';
import { FusedAdam, FusedSgd } from '../../models/fused-mlp-optim.ts';
import { readParams } from '../../models/fused-mlp-weights.ts';
import { fusedLayoutOf, fusedTrainerWanted, trainLocalFused } from '../../models/fused-mlp-train.ts';
import type { EncodedData } from '../../models/encode.ts';
import { TrainingConfig } from '../../protocols/training-config.ts';
import { mulberry32 } from '../../protocols/random.ts';
import type { ModelSpec } from '../../protocols/model-spec.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const savedTrainer = process.env.FEDMARK_TRAINER;
afterEach(() => {
  if (savedTrainer === undefined) delete process.env.FEDMARK_TRAINER;
  else process.env.FEDMARK_TRAINER = savedTrainer;
});

/** Rows with about half of the inputs 0 (as one-hot columns are) and targets the loss takes. */
function syntheticData(n: number, width: number, loss: OutputLoss, seed: number): EncodedData {
  const r = mulberry32(seed);
  const x = Float32Array.from({ length: n * width }, () => (r() < 0.4 ? 0 : r() * 4 - 2));
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const signal = x[i * width] - 0.5 * x[i * width + 1];
    if (loss.name === 'bce') y[i] = r() < 1 / (1 + Math.exp(-2 * signal)) ? 1 : 0;
    else if (loss.name === 'tweedie') y[i] = r() < 0.3 ? 0 : Math.exp(0.3 * signal) * r() * 2;
    else y[i] = 1.5 * signal + (r() - 0.5);
  }
  return { x, y, n, width } as EncodedData;
}

/** tfjs's gradient of train.ts's batch loss, flat in protocol order, and the loss. */
function tfGradients(model: tf.LayersModel, loss: OutputLoss, data: EncodedData): { grads: Float32Array; loss: number } {
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const fn = lossFunction(model, loss);
  return tf.tidy(() => {
    const x = tf.tensor2d(data.x, [data.n, data.width]);
    const y = tf.tensor2d(data.y, [data.n, 1]);
    const { value, grads } = tf.variableGrads(() => fn(x, y), variables);
    const flat = new Float32Array(variables.reduce((s, v) => s + v.size, 0));
    let offset = 0;
    for (const v of variables) {
      flat.set(grads[v.name].dataSync() as Float32Array, offset);
      offset += v.size;
    }
    return { grads: flat, loss: value.dataSync()[0] };
  });
}

/** max |a - b| / max(1, |b|): absolute for small values, relative for large ones. */
function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return worst;
}

const LOSSES: Array<[string, OutputLoss]> = [
  ['bce', bceLoss],
  ['mse', mseLoss],
  ['huber', huberLoss(0.5)],
  ['tweedie', tweedieLoss(1.5)],
];

function modelFor(spec: ModelSpec, width: number, loss: OutputLoss, seed = 3): tf.LayersModel {
  return createModel(spec, width, seed, loss.output);
}

describe('fused MLP gradients vs TensorFlow.js autodiff', () => {
  for (const activation of ['relu', 'tanh'] as const) {
    for (const [name, loss] of LOSSES) {
      it(`${activation} hidden layers, ${name} loss, batches of 1, 7 and 64, WASM SIMD and JavaScript kernels: every tensor to 1e-5`, () => {
        const width = 12;
        const model = modelFor({ kind: 'mlp', hidden: [16, 8], activation }, width, loss);
        const layout = fusedLayoutOf(model, loss);
        expect(layout).toEqual({ widths: [width, 16, 8, 1], hidden: [activation, activation] });
        for (const rows of [1, 7, 64]) {
          const data = syntheticData(rows, width, loss, rows);
          // An all-zero row: with zero initial biases its hidden outputs are exactly 0, where
          // tanh still passes gradient down (tanh'(0) = 1) and ReLU does not.
          if (rows > 1) data.x.fill(0, width, 2 * width);
          const expected = tfGradients(model, loss, data);
          for (const simd of [true, false]) {
            const net = new FusedMlp(layout!, rows, { simd });
            expect(net.kernels !== null).toBe(simd);
            readParams(model, net);
            const sum = net.lossAndGradient(data.x, data.y, rows, loss);
            expect(maxError(net.grads, expected.grads)).toBeLessThan(1e-5);
            expect(Math.abs(sum / rows - expected.loss)).toBeLessThan(1e-5 * Math.max(1, expected.loss));
            // Not vacuous: every tensor has a non-zero gradient somewhere.
            for (let l = 0; l < net.layers; l++) {
              expect(net.grads.subarray(net.kernelOffsets[l], net.biasOffsets[l]).some((g) => g !== 0)).toBe(true);
              expect(net.grads.subarray(net.biasOffsets[l], net.biasOffsets[l] + net.widths[l + 1]).some((g) => g !== 0)).toBe(true);
            }
          }
        }
        model.dispose();
      });
    }
  }

  it('the 40-64-32-1 MLP of the benchmark, widths SIMD cannot take (6, 5: JavaScript kernels), a SIMD layer over 6 inputs, and a logistic regression, batch 64', () => {
    const specs = [{ kind: 'mlp', hidden: [64, 32] }, { kind: 'mlp', hidden: [8, 6, 5], activation: 'tanh' }, { kind: 'mlp', hidden: [6, 8] }, { kind: 'mlp', hidden: [6, 8], activation: 'tanh' }, { kind: 'logreg' }];
    for (const spec of specs as ModelSpec[]) {
      const model = modelFor(spec, 40, bceLoss, 11);
      const data = syntheticData(64, 40, bceLoss, 5);
      const net = new FusedMlp(fusedLayoutOf(model, bceLoss)!, 64);
      readParams(model, net);
      net.lossAndGradient(data.x, data.y, 64, bceLoss);
      expect(maxError(net.grads, tfGradients(model, bceLoss, data).grads)).toBeLessThan(1e-5);
      model.dispose();
    }
  });
});

describe('fused optimizers vs TensorFlow.js', () => {
  /**
   * Three steps of a tfjs optimizer and of ours on the same weights and gradients: the flat
   * parameters of a [12, 4, 1] network (57 values, not a multiple of 4), WASM or JavaScript.
   */
  function compareSteps(makeTf: () => tf.Optimizer, makeOurs: (net: FusedMlp) => FusedAdam | FusedSgd, simd: boolean): number {
    const r = mulberry32(9);
    const net = new FusedMlp({ widths: [12, 4, 1], hidden: ['relu'] }, 1, { simd });
    expect(net.kernels !== null).toBe(simd);
    const size = net.params.length;
    const start = Float32Array.from({ length: size }, () => r() * 2 - 1);
    const variable = tf.variable(tf.tensor1d(start));
    net.params.set(start);
    const tfOptimizer = makeTf();
    const ours = makeOurs(net);
    for (let step = 0; step < 3; step++) {
      // Gradients of mixed scales, one of them exactly 0 (Adam's epsilon matters there).
      const g = Float32Array.from({ length: size }, (_, i) => (i === 0 ? 0 : (r() * 2 - 1) * 10 ** ((i % 5) - 3)));
      tf.tidy(() => tfOptimizer.applyGradients([{ name: variable.name, tensor: tf.tensor1d(g) }]));
      net.grads.set(g);
      ours.step();
    }
    const error = maxError(net.params, variable.dataSync());
    tfOptimizer.dispose();
    variable.dispose();
    return error;
  }

  for (const simd of [true, false]) {
    const kernels = simd ? 'WASM' : 'JavaScript';
    it(`Adam (${kernels}): three steps match tf.train.adam to 1e-5 (bias correction, epsilon after the square root)`, () => {
      expect(compareSteps(() => tf.train.adam(0.01), (net) => new FusedAdam(net, 0.01), simd)).toBeLessThan(1e-5);
      expect(compareSteps(() => tf.train.adam(0.3), (net) => new FusedAdam(net, 0.3), simd)).toBeLessThan(1e-5);
    });

    it(`SGD (${kernels}): three steps match tf.train.sgd to 1e-6`, () => {
      expect(compareSteps(() => tf.train.sgd(0.1), (net) => new FusedSgd(net, 0.1), simd)).toBeLessThan(1e-6);
    });
  }
});

describe('trainLocal on the fused trainer', () => {
  const config = TrainingConfig.parse({ batchSize: 32, learningRate: 0.01, seed: 4 });

  /** trainLocal's loss after 1..epochs epochs (fresh model each time) and the final weights, per trainer. */
  async function curve(trainer: 'tfjs' | 'fused', spec: ModelSpec, loss: OutputLoss, data: EncodedData, epochs: number, extra: Partial<TrainingConfig> = {}, mu = 0) {
    process.env.FEDMARK_TRAINER = trainer;
    const losses: number[] = [];
    let weights: Float32Array = new Float32Array();
    for (let e = 1; e <= epochs; e++) {
      const model = modelFor(spec, data.width, loss, 21);
      const global = getWeights(model);
      const proximal = mu > 0 ? { mu, global } : undefined;
      const result = await trainLocal(model, data, { ...config, ...extra, localEpochs: e }, { loss, seed: 8, proximal });
      expect(result.steps).toBe(e * Math.ceil(data.n / Math.min(data.n, extra.batchSize ?? config.batchSize)));
      losses.push(result.loss);
      weights = Float32Array.from(getWeights(model).flatMap((t) => Array.from(t.values)));
      model.dispose();
    }
    return { losses, weights };
  }

  const cases: Array<[string, ModelSpec, OutputLoss, Partial<TrainingConfig>, number]> = [
    ['ReLU MLP, bce, Adam', { kind: 'mlp', hidden: [16, 8] }, bceLoss, {}, 0],
    ['tanh MLP, huber, Adam', { kind: 'mlp', hidden: [16, 8], activation: 'tanh' }, huberLoss(1), {}, 0],
    // Width 6: no SIMD layer, so the JavaScript kernels and optimizer run.
    ['ReLU MLP of width 6, tweedie, SGD, FedProx mu 0.2', { kind: 'mlp', hidden: [6] }, tweedieLoss(1.3), { optimizer: 'sgd', learningRate: 0.05 }, 0.2],
    ['ReLU MLP, mse, Adam, FedProx mu 0.5', { kind: 'mlp', hidden: [16, 8] }, mseLoss, {}, 0.5],
    ['logreg, bce, batch larger than the data', { kind: 'logreg' }, bceLoss, { batchSize: 1000 }, 0],
  ];
  for (const [label, spec, loss, extra, mu] of cases) {
    it(`${label}: 4 epochs of loss curve and final weights match tfjs to ~1e-4`, async () => {
      // 300 rows in batches of 32: the last batch has 12 rows.
      const data = syntheticData(300, 10, loss, 17);
      const tfjs = await curve('tfjs', spec, loss, data, 4, extra, mu);
      const fused = await curve('fused', spec, loss, data, 4, extra, mu);
      expect(maxError(fused.losses, tfjs.losses)).toBeLessThan(1e-4);
      expect(maxError(fused.weights, tfjs.weights)).toBeLessThan(1e-4);
      expect(tfjs.losses[3]).toBeLessThan(tfjs.losses[0]); // it learns
    });
  }

  it('falls back to TensorFlow.js for a model it does not cover (output activation not the loss\'s)', async () => {
    process.env.FEDMARK_TRAINER = 'fused';
    const model = createModel({ kind: 'mlp', hidden: [4] }, 10, 1, 'sigmoid');
    expect(fusedLayoutOf(model, mseLoss)).toBeNull();
    const data = syntheticData(40, 10, mseLoss, 2);
    expect(await trainLocalFused(model, data, config, mseLoss)).toBeNull();
    const result = await trainLocal(model, data, config, { loss: mseLoss });
    expect(Number.isFinite(result.loss)).toBe(true);
    model.dispose();
  });

  it('FEDMARK_TRAINER: fused by default, tfjs on request, a clear error otherwise', () => {
    expect(fusedTrainerWanted({})).toBe(true);
    expect(fusedTrainerWanted({ FEDMARK_TRAINER: '' })).toBe(true);
    expect(fusedTrainerWanted({ FEDMARK_TRAINER: 'tfjs' })).toBe(false);
    expect(fusedTrainerWanted({ FEDMARK_TRAINER: 'fused' })).toBe(true);
    expect(() => fusedTrainerWanted({ FEDMARK_TRAINER: 'torch' })).toThrow(/FEDMARK_TRAINER must be one of tfjs, fused, got "torch"/);
  });

  it('leaves the weights it was given untouched when reading them (setWeights round trip)', () => {
    const model = createModel({ kind: 'mlp', hidden: [4] }, 3, 1);
    const before = getWeights(model);
    const net = new FusedMlp(fusedLayoutOf(model, bceLoss)!, 2);
    readParams(model, net);
    expect(Array.from(net.params)).toEqual(before.flatMap((t) => Array.from(t.values)));
    setWeights(model, before);
    model.dispose();
  });
});
