import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { StudyConfig } from '../../protocols/messages.ts';
import { createDenseModel, DenseModel } from '../../models/dense-model.ts';
import { initBackend } from '../../models/backend.ts';
import { createModel, getWeights, setWeights } from '../../models/model-factory.ts';
import { predictScores, trainLocal } from '../../models/train.ts';
import { trainDpSgd } from '../../models/dp-sgd.ts';
import { nodeKindFor } from '../../models/kinds/index.ts';
import type { EncodedData } from '../../models/encode.ts';

/**
 * Issue 13: a node on the default path (the fused trainer) never loads TensorFlow.js, whose
 * import and wasm backend cost each node ~0.5 CPU-s at start-up; DP-SGD and FEDMARK_TRAINER=tfjs
 * still load it, and a node's dense model gives TensorFlow.js's model's numbers.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function probe(args: string[], env: Record<string, string> = {}): Record<string, unknown> {
  const out = execFileSync(process.execPath, ['bin/run-ts.js', 'test/models/tfjs-lazy-probe.ts', ...args], { cwd: ROOT, env: { ...process.env, FEDMARK_TRAINER: '', ...env }, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

describe('TensorFlow.js is loaded only when something needs it', () => {
  it("importing the node's stages does not load it", () => {
    // node-runner.ts and the data stages import models/backend.ts, infer-spec.ts, errors.ts,
    // encode.ts and csv-table.ts directly, not models/index.ts (which re-exports TensorFlow.js's
    // side for tools and tests).
    const modules = ['client-node/node-runner.ts', 'client-node/data.ts', 'client-node/data-forecast.ts', 'client-node/data-recommend.ts', 'client-node/train.ts', 'client-node/personalize.ts', 'client-node/global-model.ts', 'client-node/identity.ts', 'client-node/release.ts', 'client-node/config.ts', 'models/kinds/index.ts', 'models/backend.ts', 'models/table-sources.ts', 'models/infer-spec.ts', 'models/encode.ts'];
    expect(probe(['graph', ...modules])).toEqual({ tfjsLoaded: false });
  }, 60_000);

  it("a node's fit and evaluation on the default path: initBackend only records the backend", () => {
    const r = probe(['train']);
    expect(r.backend).toBe('wasm (loaded on first use)');
    expect(r.tfjsLoaded).toBe(false);
    expect(r.backendAfter).toBeNull();
    expect(Number.isFinite(r.loss)).toBe(true);
  }, 60_000);

  it('DP-SGD loads it on first use, on the backend initBackend recorded', () => {
    const r = probe(['dp-sgd']);
    expect(r.afterInit).toBe(false);
    expect(r.tfjsLoaded).toBe(true);
    expect(r.backendAfter).toBe('wasm');
  }, 60_000);

  it('FEDMARK_TRAINER=tfjs loads it at initBackend, and trains to the fused trainer\'s numbers (float noise)', () => {
    const tfjs = probe(['train'], { FEDMARK_TRAINER: 'tfjs' });
    expect(tfjs.backend).toBe('wasm');
    expect(tfjs.afterInit).toBe(true);
    const fused = probe(['train']);
    expect(tfjs.loss).toBeCloseTo(fused.loss as number, 5);
    expect(tfjs.evaluationLoss).toBeCloseTo(fused.evaluationLoss as number, 5);
  }, 60_000);
});

describe("the node's dense model gives TensorFlow.js's model's numbers", () => {
  const features = [{ name: 'x1', kind: 'numeric', mean: 0, std: 1, fill: 0 }, { name: 'x2', kind: 'numeric', mean: 0, std: 1, fill: 0 }];
  const study = StudyConfig.parse({ name: 'd', model: { kind: 'mlp', hidden: [8, 4] }, features: { target: { column: 'y', positive: '1' }, features }, rounds: 1 });
  const n = 64;
  const x = Float32Array.from({ length: 2 * n }, (_, i) => Math.cos(3 * i));
  const data: EncodedData = { x, y: Float32Array.from({ length: n }, (_, i) => (x[2 * i] + x[2 * i + 1] > 0 ? 1 : 0)), n, width: 2, report: { rows: n, positives: 0, missingFilled: {}, unseenCategories: {} } };
  const training = { ...study.training, localEpochs: 2, batchSize: 16 };

  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('the kind creates a DenseModel with the round-0 weights of model-factory for the seed', () => {
    const dense = nodeKindFor(study).createModel(study, 2);
    expect(dense).toBeInstanceOf(DenseModel);
    const tf = createModel(study.model, 2, study.seed, 'sigmoid');
    expect(getWeights(dense)).toEqual(getWeights(tf));
    tf.dispose();
  });

  it('fused training and prediction: identical weights and scores', async () => {
    const dense = createDenseModel(study.model, 2, 7, 'sigmoid');
    const tf = createModel(study.model, 2, 7, 'sigmoid');
    const a = await trainLocal(dense, data, training, { seed: 3 });
    const b = await trainLocal(tf, data, training, { seed: 3 });
    expect(a).toEqual(b);
    expect(getWeights(dense)).toEqual(getWeights(tf));
    expect(predictScores(dense, data.x, n, 2)).toEqual(predictScores(tf, data.x, n, 2));
    tf.dispose();
  });

  it('DP-SGD trains a TensorFlow.js twin and copies its weights back', async () => {
    const config = { noiseMultiplier: 1e-9, clipNorm: 100, samplingRate: 1, stepsPerRound: 3, learningRate: 0.2 };
    const dense = createDenseModel(study.model, 2, 5, 'sigmoid');
    const tf = createModel(study.model, 2, 5, 'sigmoid');
    const start = getWeights(dense);
    await trainDpSgd(dense, data, config);
    await trainDpSgd(tf, data, config);
    const [after, expected] = [getWeights(dense), getWeights(tf)];
    expect(after).not.toEqual(start);
    after.forEach((t, i) => t.values.forEach((v, j) => expect(v).toBeCloseTo(expected[i].values[j], 5)));
    tf.dispose();
  });

  it('setWeights refuses what model-factory refuses, with its message', () => {
    const dense = createDenseModel(study.model, 2, 1, 'sigmoid');
    const bad = getWeights(dense);
    bad[0].values[0] = Number.NaN;
    expect(() => setWeights(dense, bad)).toThrow(/setWeights: tensor "dense_0\/kernel" holds a non-finite value/);
    expect(() => setWeights(dense, bad.slice(1))).toThrow(/setWeights/);
  });
});
