import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '../../models/tf.ts';
import { activate, activationDerivative, asHiddenActivation } from '../../models/activations.ts';
import { clippedGradientSum, clippedGradientSumNaive, dpSgdLayers } from '../../models/dp-sgd.ts';
import { createModel, getWeights, initBackend, predictScores, trainLocal } from '../../models/index.ts';
import { ModelSpec } from '../../protocols/model-spec.ts';
import { TrainingConfig } from '../../protocols/training-config.ts';

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

describe('tanh hidden layers (tempered sigmoid, Papernot et al. 2021)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('the spec names the activation only when asked: an old MLP spec parses to the same object', () => {
    expect(ModelSpec.parse({ kind: 'mlp', hidden: [4] })).toEqual({ kind: 'mlp', hidden: [4] });
    expect(ModelSpec.parse({ kind: 'mlp', hidden: [4], activation: 'tanh' })).toEqual({ kind: 'mlp', hidden: [4], activation: 'tanh' });
    const bad = ModelSpec.safeParse({ kind: 'mlp', hidden: [4], activation: 'gelu' });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0].path).toEqual(['activation']);
    expect(asHiddenActivation('tanh')).toBe('tanh');
    expect(asHiddenActivation('sigmoid')).toBeNull();
  });

  it('createModel builds tanh hidden layers: the output is sigmoid(w2 . tanh(x W1 + b1) + b2), in closed form', () => {
    const model = createModel({ kind: 'mlp', hidden: [3], activation: 'tanh' }, 2, 7);
    expect(model.layers.map((l) => l.getConfig().activation)).toEqual(['tanh', 'sigmoid']);
    const [k1, b1, k2, b2] = getWeights(model).map((t) => t.values);
    const x = [0.7, -1.9];
    let logit = b2[0];
    for (let j = 0; j < 3; j++) logit += k2[j] * Math.tanh(x[0] * k1[j] + x[1] * k1[3 + j] + b1[j]);
    expect(predictScores(model, Float32Array.from(x), 1, 2)[0]).toBeCloseTo(sigmoid(logit), 6);
    model.dispose();
  });

  it("tanh's derivative 1 - tanh^2 equals TensorFlow.js's autodiff of tanh; ReLU's is the step", () => {
    const zs = [-3, -0.5, 0, 0.2, 1.5, 4];
    const z = tf.tensor2d(zs, [2, 3]);
    const auto = tf.grad((t: tf.Tensor) => tf.sum(tf.tanh(t)))(z).dataSync();
    const mine = activationDerivative('tanh', z, activate('tanh', z)).dataSync();
    zs.forEach((v, i) => {
      expect(mine[i]).toBeCloseTo(auto[i], 6);
      expect(mine[i]).toBeCloseTo(1 - Math.tanh(v) ** 2, 6);
    });
    expect(Array.from(activationDerivative('relu', z, activate('relu', z)).dataSync())).toEqual(zs.map((v) => (v > 0 ? 1 : 0)));
  });

  it("DP-SGD's vectorized per-example clipped sum through tanh layers equals TensorFlow.js autodiff one row at a time", () => {
    const model = createModel({ kind: 'mlp', hidden: [8, 5], activation: 'tanh' }, 6, 3);
    const layers = dpSgdLayers(model);
    const x = tf.randomNormal([13, 6], 0, 2, 'float32', 5) as tf.Tensor2D;
    const y = tf.tensor2d(Array.from({ length: 13 }, (_, i) => [i % 3 === 0 ? 1 : 0]));
    // 100: nothing clipped (the raw per-example gradients); 0.05: every row clipped.
    for (const clip of [0.05, 0.5, 100]) {
      const fast = tf.tidy(() => clippedGradientSum(layers, x, y, clip).grads.map((g) => Array.from(g.dataSync())));
      const slow = clippedGradientSumNaive(layers, x, y, clip);
      slow.forEach((g, k) => {
        Array.from(g.dataSync()).forEach((v, i) => expect(fast[k][i]).toBeCloseTo(v, 4));
        g.dispose();
      });
    }
    model.dispose();
  });

  it('one row, one tanh unit: the first kernel gradient is (sigmoid(z) - y) w2 (1 - tanh^2(w1 x + b1)) x', () => {
    const model = createModel({ kind: 'mlp', hidden: [1], activation: 'tanh' }, 1, 11);
    const [w1, b1, w2, b2] = getWeights(model).map((t) => t.values[0]);
    const xv = 1.3;
    const yv = 1;
    const h = Math.tanh(w1 * xv + b1);
    const d = sigmoid(w2 * h + b2) - yv;
    const { grads, norms } = clippedGradientSum(dpSgdLayers(model), tf.tensor2d([[xv]]), tf.tensor2d([[yv]]), 1e6);
    const [g1, gb1, g2, gb2] = grads.map((g) => g.dataSync()[0]);
    expect(g1).toBeCloseTo(d * w2 * (1 - h * h) * xv, 5);
    expect(gb1).toBeCloseTo(d * w2 * (1 - h * h), 5);
    expect(g2).toBeCloseTo(d * h, 5);
    expect(gb2).toBeCloseTo(d, 5);
    expect(norms.dataSync()[0]).toBeCloseTo(Math.hypot(g1, gb1, g2, gb2), 5);
    model.dispose();
  });

  it('plain (non-DP) training runs on a tanh MLP and lowers the loss', async () => {
    const n = 64;
    const xs = Float32Array.from({ length: n * 2 }, (_, i) => Math.sin(i * 1.7));
    const ys = Float32Array.from({ length: n }, (_, i) => (xs[2 * i] + xs[2 * i + 1] > 0 ? 1 : 0));
    const data = { x: xs, y: ys, n, width: 2 } as Parameters<typeof trainLocal>[1];
    const model = createModel({ kind: 'mlp', hidden: [4], activation: 'tanh' }, 2, 1);
    const config = TrainingConfig.parse({ localEpochs: 1, learningRate: 0.05, batchSize: 16 });
    const first = await trainLocal(model, data, config, { seed: 1 });
    const later = await trainLocal(model, data, { ...config, localEpochs: 20 }, { seed: 2 });
    expect(later.loss).toBeLessThan(first.loss);
    model.dispose();
  });
});
