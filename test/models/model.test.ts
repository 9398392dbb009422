import * as tf from '../../models/tf.ts';
import { beforeAll, describe, expect, it } from 'vitest';
import { initialWeights, modelTensorSpecs, type ModelSpec } from '../../protocols/model-spec.ts';
import { TrainingConfig } from '../../protocols/training-config.ts';
import { TensorError, type WeightSet } from '../../protocols/tensors.ts';
import { initBackend } from '../../models/backend.ts';
import type { EncodedData } from '../../models/encode.ts';
import { createModel, getWeights, setWeights } from '../../models/model-factory.ts';
import { evaluateModel, predictScores, trainLocal } from '../../models/train.ts';
import { mulberry32 } from '../../protocols/random.ts';

const MLP: ModelSpec = { kind: 'mlp', hidden: [8, 4] };
const LOGREG: ModelSpec = { kind: 'logreg' };

/** A learnable toy problem: y = 1 when x0 + x1 > 0.3, with a little noise. */
function toyData(n: number, width: number, seed: number): EncodedData {
  const random = mulberry32(seed);
  const x = new Float32Array(n * width);
  const y = new Float32Array(n);
  let positives = 0;
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < width; c++) x[r * width + c] = random() * 2 - 1;
    y[r] = x[r * width] + x[r * width + 1] + (random() - 0.5) * 0.2 > 0.3 ? 1 : 0;
    positives += y[r];
  }
  return { x, y, n, width, report: { rows: n, positives, missingFilled: {}, unseenCategories: {} } };
}

function weightsEqual(a: WeightSet, b: WeightSet): boolean {
  return a.length === b.length && a.every((t, i) => t.name === b[i].name && t.values.every((v, k) => v === b[i].values[k]));
}

beforeAll(async () => {
  expect(await initBackend('wasm')).toBe('wasm');
});

describe('createModel', () => {
  it('builds the tensors modelTensorSpecs lists, with the seeded initial weights', () => {
    for (const spec of [LOGREG, MLP]) {
      const model = createModel(spec, 6, 7);
      const weights = getWeights(model);
      expect(weights.map((t) => ({ name: t.name, shape: t.shape }))).toEqual(modelTensorSpecs(spec, 6));
      expect(weightsEqual(weights, initialWeights(modelTensorSpecs(spec, 6), 7) as WeightSet)).toBe(true);
      model.dispose();
    }
  });

  it('computes sigmoid(relu(x W0 + b0) W1 + b1 ...)', () => {
    const model = createModel({ kind: 'mlp', hidden: [2] }, 2);
    setWeights(model, [
      { name: 'dense_0/kernel', shape: [2, 2], values: new Float32Array([1, -1, 2, 0.5]) },
      { name: 'dense_0/bias', shape: [2], values: new Float32Array([0, -1]) },
      { name: 'dense_1/kernel', shape: [2, 1], values: new Float32Array([1, 2]) },
      { name: 'dense_1/bias', shape: [1], values: new Float32Array([-0.5]) },
    ]);
    // x = [1, 1]: hidden = relu([1 + 2, -1 + 0.5 - 1]) = [3, 0]; logit = 3 - 0.5 = 2.5
    const scores = predictScores(model, new Float32Array([1, 1, 0, 0]), 2, 2);
    expect(scores[0]).toBeCloseTo(1 / (1 + Math.exp(-2.5)), 6);
    // x = [0, 0]: hidden = relu([0, -1]) = [0, 0]; logit = -0.5
    expect(scores[1]).toBeCloseTo(1 / (1 + Math.exp(0.5)), 6);
    model.dispose();
  });
});

describe('getWeights / setWeights', () => {
  it('round-trips, matching tensors by name whatever their order', () => {
    const model = createModel(MLP, 5, 1);
    const other = getWeights(createModel(MLP, 5, 2));
    setWeights(model, [...other].reverse());
    expect(weightsEqual(getWeights(model), other)).toBe(true);
    // Float64 input is accepted (rounded to float32).
    setWeights(model, other.map((t) => ({ ...t, values: Float64Array.from(t.values) })));
    expect(weightsEqual(getWeights(model), other)).toBe(true);
    model.dispose();
  });

  it('returns copies: changing them, or the arrays given, does not touch the model', () => {
    const model = createModel(LOGREG, 3);
    const given = getWeights(model);
    setWeights(model, given);
    given[0].values[0] = 123;
    const read = getWeights(model);
    expect(read[0].values[0]).not.toBe(123);
    read[0].values[0] = 456;
    expect(getWeights(model)[0].values[0]).not.toBe(456);
    model.dispose();
  });

  it('names the offending tensor', () => {
    const model = createModel(MLP, 5);
    const good = getWeights(model);
    const wrongShape = good.map((t) => (t.name === 'dense_1/kernel' ? { ...t, shape: [4, 8], values: new Float32Array(32) } : t));
    expect(() => setWeights(model, wrongShape)).toThrow(TensorError);
    expect(() => setWeights(model, wrongShape)).toThrow(/dense_1\/kernel.*expected shape \[8,4\], got \[4,8\]/);
    expect(() => setWeights(model, good.slice(1))).toThrow(/missing tensor "dense_0\/kernel"/);
    expect(() => setWeights(model, [...good, { name: 'extra', shape: [1], values: new Float32Array(1) }])).toThrow(/unexpected tensor "extra"/);
    const nan = good.map((t) => (t.name === 'dense_2/bias' ? { ...t, values: new Float32Array([Number.NaN]) } : t));
    expect(() => setWeights(model, nan)).toThrow(/"dense_2\/bias" holds a non-finite value/);
    const short = good.map((t) => (t.name === 'dense_0/bias' ? { ...t, values: new Float32Array(3) } : t));
    expect(() => setWeights(model, short)).toThrow(/dense_0\/bias.*needs 8 values, got 3/);
    // Nothing was half-applied.
    expect(weightsEqual(getWeights(model), good)).toBe(true);
    model.dispose();
  });
});

describe('trainLocal', () => {
  const data = toyData(300, 6, 3);
  const config = TrainingConfig.parse({ localEpochs: 3, batchSize: 32, learningRate: 0.05, seed: 5 });

  it('learns, and reports examples, steps and the last epoch loss', async () => {
    const model = createModel(MLP, 6);
    const before = evaluateModel(model, data);
    const result = await trainLocal(model, data, config);
    expect(result.numExamples).toBe(300);
    expect(result.steps).toBe(3 * Math.ceil(300 / 32));
    expect(Number.isFinite(result.loss)).toBe(true);
    const after = evaluateModel(model, data);
    expect(after.loss).toBeLessThan(before.loss);
    expect(after.auc).toBeGreaterThan(0.9);
    expect(after.scores).toHaveLength(300);
    model.dispose();
  });

  it('trains on the same function the model predicts with (fused training path = model.predict)', async () => {
    const model = createModel(MLP, 6, 11);
    const expected = evaluateModel(model, data).loss;
    // With a negligible learning rate the weights stay put, so the training loss is the loss of
    // the initial model, computed by the fused forward pass.
    const { loss } = await trainLocal(model, data, { ...config, localEpochs: 1, learningRate: 1e-12 });
    expect(loss).toBeCloseTo(expected, 5);
    model.dispose();
  });

  it('is reproducible: same weights, data, config and seed give the same model', async () => {
    const results: WeightSet[] = [];
    for (let i = 0; i < 2; i++) {
      const model = createModel(MLP, 6);
      await trainLocal(model, data, config);
      results.push(getWeights(model));
      model.dispose();
    }
    expect(weightsEqual(results[0], results[1])).toBe(true);
    const model = createModel(MLP, 6);
    await trainLocal(model, data, config, { seed: 6 });
    expect(weightsEqual(getWeights(model), results[0])).toBe(false);
    model.dispose();
  });

  it('trains with sgd too, and refuses data of the wrong width', async () => {
    const model = createModel(LOGREG, 6);
    const result = await trainLocal(model, data, { ...config, optimizer: 'sgd', learningRate: 0.5 });
    expect(result.loss).toBeLessThan(Math.log(2));
    await expect(trainLocal(model, toyData(10, 5, 1), config)).rejects.toThrow(/5 wide but the model takes 6 inputs/);
    await expect(trainLocal(model, toyData(0, 6, 1), config)).rejects.toThrow(/no rows/);
    model.dispose();
  });

  it('lets the event loop run while it trains', async () => {
    const model = createModel(MLP, 6);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    await trainLocal(model, data, config, { yieldEveryMs: 0 });
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    model.dispose();
  });

  it('does not leak tensors over many rounds (train, get/set weights, evaluate)', async () => {
    const model = createModel(MLP, 6);
    const round = async (r: number) => {
      setWeights(model, getWeights(model));
      await trainLocal(model, data, { ...config, localEpochs: 1, optimizer: r % 2 ? 'adam' : 'sgd' }, { seed: r });
      evaluateModel(model, data);
    };
    await round(0);
    await round(1);
    const baseline = tf.memory().numTensors;
    for (let r = 2; r < 30; r++) await round(r);
    expect(tf.memory().numTensors).toBe(baseline);
    model.dispose();
    const afterDispose = tf.memory().numTensors;
    createModel(MLP, 6).dispose();
    expect(tf.memory().numTensors).toBe(afterDispose);
  });
});

describe('evaluateModel', () => {
  it('predicts in batches larger data sets and gives NaN AUC for a single class', () => {
    const model = createModel(LOGREG, 6);
    const big = toyData(20_000, 6, 9);
    const { scores, auc, loss } = evaluateModel(model, big);
    expect(scores).toHaveLength(20_000);
    expect(Number.isFinite(auc) && Number.isFinite(loss)).toBe(true);
    const oneClass = { ...big, y: new Float32Array(big.n) };
    expect(evaluateModel(model, oneClass).auc).toBeNaN();
    model.dispose();
  });
});
