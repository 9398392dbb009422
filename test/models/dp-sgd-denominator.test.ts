import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../models/backend.ts';
import type { EncodedData } from '../../models/encode.ts';
import { getWeights, setWeights } from '../../models/model-factory.ts';
import { trainDpSgd } from '../../models/dp-sgd.ts';
import { binaryKind } from '../../models/kinds/binary.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { stepDenominator } from '../../protocols/privacy/study-privacy.ts';
import type { WeightSet } from '../../protocols/tensors.ts';

/**
 * DP-SGD's denominator is the study's fixed, public expected batch size B (Opacus's
 * expected_batch_size), never q n with the node's private row count n (issue 10 item 4). One step
 * at q = 1, no clipping, ~no noise, in closed form for logistic regression:
 *   w1 = w0 - (lr / B) sum_i (sigmoid(w0 . x_i + b0) - y_i) x_i,   b1 = b0 - (lr / B) sum_i (sigmoid(...) - y_i).
 */
const study = StudyConfig.parse({ name: 'd', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }, { name: 'b', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, rounds: 1, training: { batchSize: 16 } });
const rows = (n: number): EncodedData => {
  const x = new Float32Array(2 * n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[2 * i] = ((i % 5) - 2) / 2;
    x[2 * i + 1] = ((i % 3) - 1) / 3;
    y[i] = i % 2;
  }
  return { x, y, n, width: 2, report: { rows: n, missingFilled: {}, unseenCategories: {} } } as EncodedData;
};
const w0: WeightSet = [
  { name: 'dense_0/kernel', shape: [2, 1], values: Float32Array.from([0.5, -0.25]) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([0.1]) },
];
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

function closedForm(data: EncodedData, lr: number, denominator: number): number[] {
  const [k0, k1] = w0[0].values;
  const b = w0[1].values[0];
  const g = [0, 0, 0];
  for (let i = 0; i < data.n; i++) {
    const r = sigmoid(k0 * data.x[2 * i] + k1 * data.x[2 * i + 1] + b) - data.y[i];
    g[0] += r * data.x[2 * i];
    g[1] += r * data.x[2 * i + 1];
    g[2] += r;
  }
  return [k0 - (lr / denominator) * g[0], k1 - (lr / denominator) * g[1], b - (lr / denominator) * g[2]];
}

describe('DP-SGD divides by the public expected batch size', () => {
  beforeAll(async () => {
    await initBackend('cpu').catch(() => initBackend('wasm'));
  });

  it('one step equals the closed form with denominator B = expectedBatchSize, whatever the row count', async () => {
    for (const n of [10, 40]) {
      const model = binaryKind.createModel(study, 2);
      setWeights(model, w0);
      const data = rows(n);
      await trainDpSgd(model, data, { noiseMultiplier: 1e-9, clipNorm: 1000, samplingRate: 1, stepsPerRound: 1, learningRate: 0.3, expectedBatchSize: 7 });
      const after = getWeights(model).flatMap((t) => Array.from(t.values));
      const expected = closedForm(data, 0.3, 7);
      expected.forEach((v, i) => expect(after[i]).toBeCloseTo(v, 5));
      // q n would be n: a different step (the old denominator leaked n into the update).
      expect(Math.abs(after[0] - closedForm(data, 0.3, n)[0])).toBeGreaterThan(1e-4);
      model.dispose();
    }
  });

  it("the node's denominator is the study's: expectedBatchSize when declared, else training.batchSize", () => {
    expect(stepDenominator({ noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1, learningRate: 0.1, expectedBatchSize: 50 }, 16)).toBe(50);
    expect(stepDenominator({ noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1, learningRate: 0.1 }, study.training.batchSize)).toBe(16);
    expect(StudyConfig.safeParse({ ...study, privacy: { dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1, expectedBatchSize: -1 } } }).success).toBe(false);
  });
});
