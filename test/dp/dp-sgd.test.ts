import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '../../models/tf.ts';
import { fileURLToPath } from 'node:url';
import { clippedGradientSum, clippedGradientSumNaive, dpSgdLayers, trainDpSgd } from '../../models/dp-sgd.ts';
import { createModel, encodeTable, evaluateModel, inferFeatureSpec, initBackend, readCsvTable, splitRows, subset } from '../../models/index.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));

describe('DP-SGD on a node', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('vectorized per-example clipping equals clipping one example at a time', () => {
    const model = createModel({ kind: 'mlp', hidden: [8, 4] }, 6, 3);
    const layers = dpSgdLayers(model);
    const x = tf.randomNormal([17, 6], 0, 3, 'float32', 1) as tf.Tensor2D;
    const y = tf.tensor2d(Array.from({ length: 17 }, (_, i) => [i % 3 === 0 ? 1 : 0]));
    for (const clip of [0.05, 0.5, 100]) {
      const fast = tf.tidy(() => clippedGradientSum(layers, x, y, clip).grads.map((g) => Array.from(g.dataSync())));
      const slow = clippedGradientSumNaive(layers, x, y, clip);
      slow.forEach((g, k) => {
        const expected = Array.from(g.dataSync());
        expected.forEach((v, i) => expect(fast[k][i]).toBeCloseTo(v, 4));
        g.dispose();
      });
    }
    model.dispose();
  });

  it('per-example norms bound each row: the clipped sum of n rows has norm at most n C', () => {
    const model = createModel({ kind: 'logreg' }, 4, 1);
    const layers = dpSgdLayers(model);
    // Rows the model gets badly wrong, with huge features: unclipped gradients far above C.
    const x = tf.tensor2d([[1e4, 1e4, 1e4, 1e4], [-1e5, -1e5, -1e5, -1e5], [3e3, 3e3, 3e3, 3e3]]);
    const w = tf.tidy(() => tf.sum(layers[0].kernel).dataSync()[0]);
    const y = tf.tensor2d([[w > 0 ? 0 : 1], [w > 0 ? 1 : 0], [w > 0 ? 0 : 1]]);
    const { grads, norms } = clippedGradientSum(layers, x, y, 0.7);
    expect(Math.min(...norms.dataSync())).toBeGreaterThan(1000);
    const total = Math.sqrt(grads.reduce((s, g) => s + tf.sum(tf.square(g)).dataSync()[0], 0));
    expect(total).toBeLessThanOrEqual(3 * 0.7 + 1e-4);
    model.dispose();
  });

  it('trains a useful model on the churn data at moderate noise, and reports what it did', async () => {
    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const all = encodeTable(table, spec);
    const [trainIdx, testIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
    const train = subset(all, trainIdx);
    const model = createModel({ kind: 'logreg' }, encodedWidth(spec), 42);
    const before = evaluateModel(model, subset(all, testIdx)).auc;
    const result = await trainDpSgd(model, train, { noiseMultiplier: 1, clipNorm: 1, samplingRate: 64 / train.n, stepsPerRound: 200, learningRate: 0.5 });
    const after = evaluateModel(model, subset(all, testIdx)).auc;
    expect(result.steps).toBe(200);
    expect(result.sampledRows / 200).toBeGreaterThan(40); // expected 64 a step
    expect(result.sampledRows / 200).toBeLessThan(90);
    expect(after).toBeGreaterThan(0.7);
    expect(after).toBeGreaterThan(before);
    model.dispose();
  });
  it('one step adds the Gaussian noise of std lr z C / (q n) to every weight (fails when the noise is zeroed)', async () => {
    // All-zero inputs: every row's kernel gradient x_i delta_i is exactly 0, so the kernel moves
    // by the noise alone: lr (g (round(0) + X)) / (q n), std lr z C / (q n) (a hair more: gridStep).
    const width = 4000;
    const n = 50;
    const data = { x: new Float32Array(n * width), y: Float32Array.from({ length: n }, (_, i) => i % 2), n, width } as Parameters<typeof trainDpSgd>[1];
    const model = createModel({ kind: 'logreg' }, width, 1);
    const kernel = dpSgdLayers(model)[0].kernel;
    const before = Float64Array.from(kernel.dataSync());
    const config = { noiseMultiplier: 1.3, clipNorm: 0.8, samplingRate: 0.5, stepsPerRound: 1, learningRate: 0.2 };
    await trainDpSgd(model, data, config);
    const after = kernel.dataSync();
    let sq = 0;
    for (let i = 0; i < width; i++) sq += (after[i] - before[i]) ** 2;
    const expected = ((config.learningRate * config.noiseMultiplier * config.clipNorm) / (config.samplingRate * n)) ** 2;
    // Sample variance of 4000 draws: relative std sqrt(2 / 4000) = 2.2%; float32 weights add ~1e-7.
    expect(Math.abs(sq / width / expected - 1)).toBeLessThan(0.12);
    model.dispose();
  });
});
