/**
 * The fused dense trainer and forward pass are the DEFAULT path (issue 13): with FEDMARK_TRAINER
 * unset, trainLocal and predictScores (so a node's training and evaluation, through the model
 * kinds) give bit for bit what the fused code gives, not what TensorFlow.js gives; with
 * FEDMARK_TRAINER=tfjs they give TensorFlow.js's numbers; the two agree to float rounding. A
 * model the fused code does not cover still goes through TensorFlow.js.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type * as tf from '../../models/tf.ts';
import { initBackend } from '../../models/backend.ts';
import { bceLoss, mseLoss } from '../../models/losses.ts';
import { createModel, getWeights } from '../../models/model-factory.ts';
import { predictScores, trainLocal } from '../../models/train.ts';
import { trainLocalFused } from '../../models/fused-mlp-train.ts';
import { predictScoresFused } from '../../models/fused-mlp-predict.ts';
import { binaryKind } from '../../models/kinds/binary.ts';
import type { EncodedData } from '../../models/encode.ts';
import { TrainingConfig } from '../../protocols/training-config.ts';
import { mulberry32 } from '../../protocols/random.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const saved = process.env.FEDMARK_TRAINER;
afterEach(() => {
  if (saved === undefined) delete process.env.FEDMARK_TRAINER;
  else process.env.FEDMARK_TRAINER = saved;
});

function data(n: number, width: number, seed: number): EncodedData {
  const r = mulberry32(seed);
  const x = Float32Array.from({ length: n * width }, () => (r() < 0.4 ? 0 : r() * 4 - 2));
  const y = Float32Array.from({ length: n }, (_, i) => (x[i * width] - x[i * width + 1] + r() - 0.5 > 0 ? 1 : 0));
  return { x, y, n, width } as EncodedData;
}

const flat = (model: tf.LayersModel) => Float32Array.from(getWeights(model).flatMap((t) => Array.from(t.values)));
const config = TrainingConfig.parse({ batchSize: 32, learningRate: 0.01, seed: 4, localEpochs: 3 });
const rows = data(300, 12, 5);

/** Trains a fresh 12-16-8-1 model with `train` and returns its weights and loss. */
async function trained(train: (model: tf.LayersModel) => Promise<{ loss: number } | null>) {
  const model = createModel({ kind: 'mlp', hidden: [16, 8] }, rows.width, 9, 'sigmoid');
  try {
    const result = await train(model);
    return { loss: result!.loss, weights: flat(model) };
  } finally {
    model.dispose();
  }
}

describe('the fused trainer is the default', () => {
  it('trainLocal with FEDMARK_TRAINER unset is the fused trainer bit for bit, and not TensorFlow.js', async () => {
    delete process.env.FEDMARK_TRAINER;
    const byDefault = await trained((m) => trainLocal(m, rows, config, { seed: 3 }));
    const fused = await trained((m) => trainLocalFused(m, rows, config, bceLoss, { seed: 3 }));
    process.env.FEDMARK_TRAINER = 'tfjs';
    const tfjs = await trained((m) => trainLocal(m, rows, config, { seed: 3 }));
    expect(byDefault.weights).toEqual(fused.weights);
    expect(byDefault.loss).toBe(fused.loss);
    // TensorFlow.js rounds differently (a different summation order): not the same bits...
    expect(tfjs.weights).not.toEqual(fused.weights);
    // ...but the same training to float rounding.
    for (let i = 0; i < tfjs.weights.length; i++) expect(Math.abs(tfjs.weights[i] - fused.weights[i])).toBeLessThan(1e-4);
  });

  it('a node trains through the default path too (binary kind)', async () => {
    delete process.env.FEDMARK_TRAINER;
    const study = { training: config } as never;
    const instructions = { localEpochs: 3, learningRate: 0.01, batchSize: 32 };
    const viaKind = await trained(async (m) => binaryKind.train(m, rows, { study, instructions, global: getWeights(m), seed: 3 } as never));
    const fused = await trained((m) => trainLocalFused(m, rows, config, bceLoss, { seed: 3 }));
    expect(viaKind.weights).toEqual(fused.weights);
  });

  it('predictScores with FEDMARK_TRAINER unset is the fused forward pass (sigmoid and linear outputs), tfjs on request', () => {
    for (const output of ['sigmoid', 'linear'] as const) {
      const model = createModel({ kind: 'mlp', hidden: [16, 8] }, rows.width, 2, output);
      // Counts TensorFlow.js's forward passes on this model (the fused path never makes one).
      let tfjsCalls = 0;
      const predict = model.predict.bind(model);
      model.predict = (...args: Parameters<typeof predict>) => (tfjsCalls++, predict(...args));
      delete process.env.FEDMARK_TRAINER;
      const byDefault = predictScores(model, rows.x, rows.n, rows.width);
      expect(tfjsCalls).toBe(0);
      const fused = predictScoresFused(model, rows.x, rows.n, rows.width, 64)!;
      process.env.FEDMARK_TRAINER = 'tfjs';
      const tfjs = predictScores(model, rows.x, rows.n, rows.width);
      expect(tfjsCalls).toBe(1);
      expect(byDefault).toEqual(fused);
      for (let i = 0; i < rows.n; i++) expect(Math.abs(tfjs[i] - fused[i])).toBeLessThan(1e-5);
      if (output === 'sigmoid') expect(fused.every((p) => p > 0 && p < 1)).toBe(true);
      model.dispose();
    }
  });

  it('blocks of rows give the same scores as one block (the last block smaller)', () => {
    const model = createModel({ kind: 'logreg' }, rows.width, 2, 'sigmoid');
    expect(predictScoresFused(model, rows.x, rows.n, rows.width, 7)).toEqual(predictScoresFused(model, rows.x, rows.n, rows.width, 1000));
    expect(predictScoresFused(model, rows.x, 0, rows.width, 7)).toEqual(new Float32Array(0));
    model.dispose();
  });

  it('a model the fused code does not cover falls back to TensorFlow.js by default', async () => {
    delete process.env.FEDMARK_TRAINER;
    // A sigmoid output trained with an identity-output loss: not a layout the fused trainer takes.
    const model = createModel({ kind: 'mlp', hidden: [4] }, rows.width, 1, 'sigmoid');
    expect(await trainLocalFused(model, rows, config, mseLoss)).toBeNull();
    const result = await trainLocal(model, rows, config, { loss: mseLoss });
    expect(Number.isFinite(result.loss)).toBe(true);
    model.dispose();
  });
});
