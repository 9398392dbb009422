/**
 * Model kinds, node side: losses and their gradients against closed forms, FedProx's proximal
 * step against the hand-computed one (plain SGD and DP-SGD), the numeric target through
 * encode and infer, regression training on synthetic data, DP-SGD for regression.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '../../models/tf.ts';
import { initBackend } from '../../models/backend.ts';
import { readCsvTable } from '../../models/csv-table.ts';
import { encodeTable, splitRows, subset, type EncodedData } from '../../models/encode.ts';
import { DataError } from '../../models/errors.ts';
import { inferFeatureSpec } from '../../models/infer-spec.ts';
import { bceLoss, huberLoss, mseLoss, tweedieLoss, type OutputLoss } from '../../models/losses.ts';
import { createModel, getWeights, setWeights } from '../../models/model-factory.ts';
import { clippedGradientSum, clippedGradientSumNaive, dpSgdLayers } from '../../models/dp-sgd.ts';
import { nodeKindFor } from '../../models/kinds/index.ts';
import { binaryKind } from '../../models/kinds/binary.ts';
import { targetMap } from '../../models/kinds/regression.ts';
import { StudyConfig, type StudyConfigInput } from '../../protocols/messages.ts';
import { poolBinary, poolRegression, type BinaryStats, type RegressionStats } from '../../protocols/model-kinds/kind.ts';
import { mulberry32 } from '../../protocols/random.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { FitInstructions } from '../../protocols/strategies/strategy.ts';
import { thrown } from '../helpers/thrown.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const features = [{ name: 'x1', kind: 'numeric', mean: 0, std: 1, fill: 0 }, { name: 'x2', kind: 'numeric', mean: 0, std: 1, fill: 0 }];

function study(overrides: Partial<StudyConfigInput> & Pick<StudyConfigInput, 'task'>, target: Record<string, unknown> = { column: 'y', kind: 'numeric', center: 0, scale: 1 }): StudyConfig {
  return StudyConfig.parse({ name: 'kinds', model: { kind: 'linear' }, features: { target, features }, rounds: 1, ...overrides });
}

function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** Mean loss and d(mean)/dz by autodiff, per row. */
function tensorLoss(loss: OutputLoss, z: number[], t: number[]): { mean: number; grad: number[]; handGrad: number[] } {
  return tf.tidy(() => {
    const zt = tf.tensor2d(z, [z.length, 1]);
    const tt = tf.tensor2d(t, [t.length, 1]);
    const mean = loss.mean(zt, tt).dataSync()[0];
    const grad = Array.from(tf.grad((v: tf.Tensor) => loss.mean(v, tt))(zt).dataSync());
    const handGrad = Array.from(loss.gradient(zt, tt).dataSync());
    return { mean, grad, handGrad };
  });
}

describe('losses against closed forms', () => {
  it('huber (delta 1): quadratic inside, linear outside, clamped gradient', () => {
    const huber = huberLoss(1);
    const cases = [
      { z: 0.3, t: 0, loss: 0.045, d: 0.3 },
      { z: 3, t: 0.5, loss: 2, d: 1 }, // |r| = 2.5: 1 * (2.5 - 0.5)
      { z: -2, t: 0, loss: 1.5, d: -1 },
    ];
    for (const c of cases) {
      expect(huber.value(c.z, c.t)).toBeCloseTo(c.loss, 12);
      expect(huber.derivative(c.z, c.t)).toBeCloseTo(c.d, 12);
    }
    const { mean, grad, handGrad } = tensorLoss(huber, cases.map((c) => c.z), cases.map((c) => c.t));
    expect(mean).toBeCloseTo((0.045 + 2 + 1.5) / 3, 5);
    // d(mean)/dz_i = d_i / n: autodiff agrees with the hand-written gradient DP-SGD uses.
    cases.forEach((c, i) => {
      expect(grad[i] * 3).toBeCloseTo(c.d, 5);
      expect(handGrad[i]).toBeCloseTo(c.d, 5);
    });
    expect(huberLoss(0.5).value(2, 0)).toBeCloseTo(0.5 * (2 - 0.25), 12);
  });

  it('tweedie (p = 1.5, log link): half the deviance, 0 at mu = y; gradient -y e^(-z/2) + e^(z/2)', () => {
    const tw = tweedieLoss(1.5);
    const cases = [
      { z: 0, t: 1, loss: 0, d: 0 },
      { z: Math.log(2), t: 0, loss: 2 * Math.SQRT2, d: Math.SQRT2 }, // e^(z/2) / (1/2)
      { z: 0, t: 3, loss: 8 - 4 * Math.sqrt(3), d: -2 }, // 3^0.5 / (-1/4) + 3 / (1/2) + 1 / (1/2)
      { z: Math.log(4), t: 2, loss: 6 - 4 * Math.SQRT2, d: 1 }, // -4 sqrt 2 + 2 * 4^(-1/2) / (1/2) + 4^(1/2) / (1/2); -2 / 2 + 2
    ];
    for (const c of cases) {
      expect(tw.value(c.z, c.t)).toBeCloseTo(c.loss, 12);
      expect(tw.derivative(c.z, c.t)).toBeCloseTo(c.d, 12);
      // Half of the unit deviance 2 (y^(2-p)/((1-p)(2-p)) - y mu^(1-p)/(1-p) + mu^(2-p)/(2-p)).
      const mu = Math.exp(c.z);
      const deviance = 2 * (c.t ** 0.5 / (-0.5 * 0.5) - (c.t * mu ** -0.5) / -0.5 + mu ** 0.5 / 0.5);
      expect(tw.value(c.z, c.t)).toBeCloseTo(deviance / 2, 12);
    }
    const { mean, grad, handGrad } = tensorLoss(tw, cases.map((c) => c.z), cases.map((c) => c.t));
    expect(mean).toBeCloseTo((0 + 2 * Math.SQRT2 + 8 - 4 * Math.sqrt(3) + 6 - 4 * Math.SQRT2) / 4, 5);
    cases.forEach((c, i) => {
      expect(grad[i] * 4).toBeCloseTo(c.d, 5);
      expect(handGrad[i]).toBeCloseTo(c.d, 5);
    });
  });

  it('mse is r^2 / 2 with gradient r; bce from logits with gradient sigmoid(z) - y', () => {
    expect(mseLoss.value(3, 1)).toBe(2);
    expect(mseLoss.derivative(3, 1)).toBe(2);
    const m = tensorLoss(mseLoss, [3, -1], [1, 0]);
    expect(m.mean).toBeCloseTo((2 + 0.5) / 2, 6);
    expect(m.handGrad).toEqual([2, -1]);
    expect(bceLoss.value(0, 1)).toBeCloseTo(Math.LN2, 12);
    expect(bceLoss.derivative(Math.log(3), 0)).toBeCloseTo(0.75, 12);
  });

  it('log1p: mse on log(1 + y) - log(1 + center), predictions expm1 back', () => {
    const task = { kind: 'regression', loss: 'log1p', huberDelta: 1, tweediePower: 1.5 } as const;
    const map = targetMap(task, { column: 'y', kind: 'numeric', center: Math.E - 1, scale: 5 });
    expect(map.toTraining(Math.E ** 3 - 1)).toBeCloseTo(2, 12); // log(e^3) - log(e)
    expect(map.fromOutput(2)).toBeCloseTo(Math.E ** 3 - 1, 9);
    expect(map.fromOutput(map.toTraining(1234.5))).toBeCloseTo(1234.5, 8);
    expect(() => map.toTraining(-1)).toThrow(/log1p/);
    const tweedie = targetMap({ ...task, loss: 'tweedie' }, { column: 'y', kind: 'numeric', center: 50, scale: 5 });
    expect(tweedie.toTraining(100)).toBe(2);
    expect(tweedie.fromOutput(Math.log(2))).toBeCloseTo(100, 9);
    const mse = targetMap({ ...task, loss: 'mse' }, { column: 'y', kind: 'numeric', center: 50, scale: 5 });
    expect(mse.toTraining(60)).toBe(2);
    expect(mse.fromOutput(-1)).toBe(45);
  });
});

/** 3 rows, 2 features, for closed-form steps. */
const tiny: EncodedData = {
  x: Float32Array.from([1, 2, -1, 0.5, 0.5, -2]),
  y: Float32Array.from([1, -1, 2]),
  n: 3,
  width: 2,
  report: { rows: 3, positives: 0, missingFilled: {}, unseenCategories: {} },
};
const w0 = { kernel: [0.5, -0.25], bias: 0.1 };
const wg = { kernel: [0.2, 0.3], bias: -0.4 };
const weightSet = (w: typeof w0): WeightSet => [
  { name: 'dense_0/kernel', shape: [2, 1], values: Float32Array.from(w.kernel) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([w.bias]) },
];

/** Mean r^2 / 2 at w0 by hand. */
function handLoss(): number {
  let sum = 0;
  for (let i = 0; i < 3; i++) sum += (tiny.x[2 * i] * w0.kernel[0] + tiny.x[2 * i + 1] * w0.kernel[1] + w0.bias - tiny.y[i]) ** 2 / 2;
  return sum / 3;
}

/** One full-batch step of mean(r^2/2) + (mu/2)|w - wg|^2 by hand, in float64. */
function handStep(lr: number, mu: number): number[] {
  const gk = [0, 0];
  let gb = 0;
  for (let i = 0; i < 3; i++) {
    const x = [tiny.x[2 * i], tiny.x[2 * i + 1]];
    const r = x[0] * w0.kernel[0] + x[1] * w0.kernel[1] + w0.bias - tiny.y[i];
    gk[0] += (r * x[0]) / 3;
    gk[1] += (r * x[1]) / 3;
    gb += r / 3;
  }
  return [
    w0.kernel[0] - lr * (gk[0] + mu * (w0.kernel[0] - wg.kernel[0])),
    w0.kernel[1] - lr * (gk[1] + mu * (w0.kernel[1] - wg.kernel[1])),
    w0.bias - lr * (gb + mu * (w0.bias - wg.bias)),
  ];
}

const flat = (w: WeightSet) => w.flatMap((t) => Array.from(t.values));

describe('FedProx: the proximal gradient mu (w - w_global)', () => {
  const lr = 0.1;
  const mu = 0.5;
  const regression = study({ task: { kind: 'regression', loss: 'mse' }, training: { optimizer: 'sgd' } });

  it('one SGD step equals w - lr (grad L + mu (w - w_g)); the reported loss leaves the proximal term out', async () => {
    const kind = nodeKindFor(regression);
    const model = kind.createModel(regression, 2);
    setWeights(model, weightSet(w0));
    const instructions = FitInstructions.parse({ localEpochs: 1, learningRate: lr, batchSize: 3, proximalMu: mu });
    const result = await kind.train(model, tiny, { study: regression, instructions, global: weightSet(wg), seed: 1 });
    const after = flat(getWeights(model));
    handStep(lr, mu).forEach((v, i) => expect(after[i]).toBeCloseTo(v, 6));
    // Without the proximal term the step differs (by lr mu |w - w_g|, about 0.03 here).
    const plain = handStep(lr, 0);
    expect(Math.max(...plain.map((v, i) => Math.abs(v - after[i])))).toBeGreaterThan(0.01);
    // Data loss at w0: mean r^2 / 2 with r = (-0.9, 0.475, -1.15), without (mu/2)|w0 - wg|^2 = 0.18.
    expect(handLoss()).toBeCloseTo((0.81 + 0.225625 + 1.3225) / 6, 12);
    expect(result.loss).toBeCloseTo(handLoss(), 5);
    expect(result.steps).toBe(1);
    model.dispose();
  });

  it('the instructions override the study training config (mu 0: the plain step)', async () => {
    const kind = nodeKindFor(regression);
    const model = kind.createModel(regression, 2);
    setWeights(model, weightSet(w0));
    const instructions = FitInstructions.parse({ localEpochs: 1, learningRate: lr, batchSize: 64 });
    await kind.train(model, tiny, { study: regression, instructions, global: weightSet(wg), seed: 1 });
    const after = flat(getWeights(model));
    handStep(lr, 0).forEach((v, i) => expect(after[i]).toBeCloseTo(v, 6));
    model.dispose();
  });

  it('DP-SGD adds the same proximal gradient after the noise (sampling 1, no clipping, ~no noise)', async () => {
    const kind = nodeKindFor(regression);
    const model = kind.createModel(regression, 2);
    setWeights(model, weightSet(w0));
    const instructions = FitInstructions.parse({ localEpochs: 1, learningRate: 0.01, batchSize: 1, proximalMu: mu });
    const dpSgd = { noiseMultiplier: 1e-9, clipNorm: 100, samplingRate: 1, stepsPerRound: 1, learningRate: lr };
    const result = await kind.train(model, tiny, { study: regression, instructions, global: weightSet(wg), seed: 1, dpSgd });
    const after = flat(getWeights(model));
    handStep(lr, mu).forEach((v, i) => expect(after[i]).toBeCloseTo(v, 6));
    expect(result.clippedFraction).toBe(0);
    model.dispose();
  });

  it('the binary kind applies it too (logistic regression, one SGD step)', async () => {
    const binary = StudyConfig.parse({ name: 'b', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features }, rounds: 1, training: { optimizer: 'sgd' } });
    const labels: EncodedData = { ...tiny, y: Float32Array.from([1, 0, 1]) };
    const step = async (proximalMu: number) => {
      const model = binaryKind.createModel(binary, 2);
      setWeights(model, weightSet(w0));
      await binaryKind.train(model, labels, { study: binary, instructions: FitInstructions.parse({ localEpochs: 1, learningRate: lr, batchSize: 3, proximalMu }), global: weightSet(wg), seed: 1 });
      const w = flat(getWeights(model));
      model.dispose();
      return w;
    };
    const plain = await step(0);
    const prox = await step(mu);
    const w0flat = [...w0.kernel, w0.bias];
    const wgflat = [...wg.kernel, wg.bias];
    prox.forEach((v, i) => expect(v).toBeCloseTo(plain[i] - lr * mu * (w0flat[i] - wgflat[i]), 6));
  });
});

describe('numeric target: encode and infer', () => {
  const csv = 'x1,x2,y\n1,2,10.5\n3,NA,-4\n0,1,7\n';

  it('infers center = mean, scale = population std with task regression; binary callers unchanged', () => {
    const spec = inferFeatureSpec(readCsvTable({ text: csv }), { target: 'y', task: 'regression' });
    const mean = (10.5 - 4 + 7) / 3;
    const std = Math.sqrt(((10.5 - mean) ** 2 + (-4 - mean) ** 2 + (7 - mean) ** 2) / 3);
    expect(spec.target).toEqual({ column: 'y', kind: 'numeric', center: mean, scale: std });
    expect(spec.features.map((f) => f.name)).toEqual(['x1', 'x2']);
    expect(inferFeatureSpec(readCsvTable({ text: 'a,y\n1,yes\n2,no\n' }), { target: 'y' }).target).toEqual({ column: 'y', positive: 'yes' });
    expect(() => inferFeatureSpec(readCsvTable({ text: 'a,y\n1,lots\n2,3\n' }), { target: 'y', task: 'regression' })).toThrow(/must be numeric.*"lots"/);
  });

  it('encodes the raw target; a missing one is missing-label, text is non-numeric, with line and column', () => {
    const spec = inferFeatureSpec(readCsvTable({ text: csv }), { target: 'y', task: 'regression' });
    const data = encodeTable(readCsvTable({ text: csv }), spec);
    expect(Array.from(data.y)).toEqual([10.5, -4, 7]);
    expect(data.report.positives).toBe(0);
    const missing = thrown(DataError, () => encodeTable(readCsvTable({ text: 'x1,x2,y\n1,2,3\n1,2,NA\n' }), spec));
    expect([missing.kind, missing.line, missing.column]).toEqual(['missing-label', 3, 'y']);
    const text = thrown(DataError, () => encodeTable(readCsvTable({ text: 'x1,x2,y\n1,2,3\n1,2,3\n1,2,abc\n' }), spec));
    expect([text.kind, text.line, text.column]).toEqual(['non-numeric', 4, 'y']);
    expect(text.message).toMatch(/"abc"/);
  });
});

function synthetic(n: number, seed: number, y: (x1: number, x2: number, random: () => number) => number): string {
  const random = mulberry32(seed);
  const lines = ['x1,x2,y'];
  for (let i = 0; i < n; i++) {
    const x1 = normal(random);
    const x2 = normal(random);
    lines.push(`${x1},${x2},${y(x1, x2, random)}`);
  }
  return lines.join('\n');
}

async function fitAndEvaluate(csv: string, task: StudyConfigInput['task'], model: StudyConfigInput['model'], instructions: Partial<FitInstructions>, dpSgd?: Parameters<ReturnType<typeof nodeKindFor>['train']>[2]['dpSgd']) {
  const table = readCsvTable({ text: csv });
  const spec = inferFeatureSpec(table, { target: 'y', task: 'regression' });
  const all = encodeTable(table, spec);
  const [trainIdx, testIdx] = splitRows(all.n, [0.75, 0.25], 3);
  const cfg = StudyConfig.parse({ name: 'r', task, model, features: spec, rounds: 1 });
  const kind = nodeKindFor(cfg);
  const net = kind.createModel(cfg, all.width);
  const fit = FitInstructions.parse({ localEpochs: 10, learningRate: 0.01, batchSize: 32, ...instructions });
  const started = performance.now();
  const result = await kind.train(net, subset(all, trainIdx), { study: cfg, instructions: fit, global: getWeights(net), seed: 5, dpSgd });
  const seconds = (performance.now() - started) / 1000;
  const { stats, loss } = kind.evaluate(net, subset(all, testIdx));
  net.dispose();
  const pooled = poolRegression([stats as RegressionStats], spec.target.center);
  return { pooled, loss, result, seconds };
}

describe('regression training on synthetic data', () => {
  it('linear / mse on y = 3 x1 + 2 + noise (sd 0.5) reaches held-out R^2 > 0.9', async () => {
    const csv = synthetic(1600, 1, (x1, _x2, r) => 3 * x1 + 2 + 0.5 * normal(r));
    const { pooled, result, seconds } = await fitAndEvaluate(csv, { kind: 'regression', loss: 'mse' }, { kind: 'linear' }, { localEpochs: 10, learningRate: 0.02 });
    console.info(`linear/mse: R2 ${pooled.r2!.toFixed(4)} rmse ${pooled.rmse!.toFixed(4)} (baseline ${pooled.baselineRmse!.toFixed(4)}) bias ${pooled.bias!.toFixed(4)}, train loss ${result.loss.toFixed(4)}, ${seconds.toFixed(1)} s`);
    expect(pooled.r2).toBeGreaterThan(0.9);
    expect(pooled.rmse).toBeLessThan(0.6);
  });

  it('huber is robust to outliers on the same line (5% of targets +50): it fits the line, mse the mean', async () => {
    const csv = synthetic(1600, 2, (x1, _x2, r) => 3 * x1 + 2 + 0.5 * normal(r) + (r() < 0.05 ? 50 : 0));
    const { pooled } = await fitAndEvaluate(csv, { kind: 'regression', loss: 'huber', huberDelta: 0.5 }, { kind: 'linear' }, { localEpochs: 10, learningRate: 0.02 });
    const mse = await fitAndEvaluate(csv, { kind: 'regression', loss: 'mse' }, { kind: 'linear' }, { localEpochs: 10, learningRate: 0.02 });
    console.info(`linear/huber: MAE ${pooled.mae!.toFixed(4)} bias ${pooled.bias!.toFixed(4)}; linear/mse: MAE ${mse.pooled.mae!.toFixed(4)} bias ${mse.pooled.bias!.toFixed(4)}; baseline MAE ${pooled.baselineMae!.toFixed(4)}`);
    // The outliers add 50 x 5% = 2.5 to the mean: huber ignores them (bias about -2.5), mse follows them.
    expect(pooled.bias).toBeLessThan(-1.5);
    expect(Math.abs(mse.pooled.bias!)).toBeLessThan(1);
    expect(pooled.mae).toBeLessThan(0.8 * mse.pooled.mae!);
  });

  it('tweedie (mlp) beats the mean-only baseline on a zero-inflated heavy-tailed target; log1p trains too', async () => {
    // Spend: 0 with probability 1 - sigmoid(x2); else lognormal with median 20 e^(0.8 x1), sd 1 on the log scale.
    const csv = synthetic(2400, 4, (x1, x2, r) => (r() < 1 / (1 + Math.exp(-x2)) ? Math.round(100 * 20 * Math.exp(0.8 * x1 + normal(r))) / 100 : 0));
    const tw = await fitAndEvaluate(csv, { kind: 'regression', loss: 'tweedie', tweediePower: 1.5 }, { kind: 'mlp', hidden: [16] }, { localEpochs: 10, learningRate: 0.01 });
    console.info(`mlp/tweedie: R2 ${tw.pooled.r2!.toFixed(4)} rmse ${tw.pooled.rmse!.toFixed(3)} (baseline ${tw.pooled.baselineRmse!.toFixed(3)}) MAE ${tw.pooled.mae!.toFixed(3)} (baseline ${tw.pooled.baselineMae!.toFixed(3)}) bias ${tw.pooled.bias!.toFixed(3)}, ${tw.seconds.toFixed(1)} s`);
    expect(tw.pooled.rmse).toBeLessThan(tw.pooled.baselineRmse!);
    expect(tw.pooled.r2).toBeGreaterThan(0.1);
    const lg = await fitAndEvaluate(csv, { kind: 'regression', loss: 'log1p' }, { kind: 'mlp', hidden: [16] }, { localEpochs: 5, learningRate: 0.01 });
    console.info(`mlp/log1p: R2 ${lg.pooled.r2!.toFixed(4)} rmse ${lg.pooled.rmse!.toFixed(3)} MAE ${lg.pooled.mae!.toFixed(3)} (baseline ${lg.pooled.baselineMae!.toFixed(3)})`);
    expect(lg.pooled.mae).toBeLessThan(lg.pooled.baselineMae!);
  });
});

describe('DP-SGD for regression', () => {
  it('the vectorized clipped gradient sum equals the per-row autodiff one for mse, huber and tweedie', () => {
    const model = createModel({ kind: 'mlp', hidden: [5] }, 3, 9, 'linear');
    const random = mulberry32(3);
    const rows = 7;
    for (const loss of [mseLoss, huberLoss(0.3), tweedieLoss(1.4)]) {
      tf.tidy(() => {
        const x = tf.tensor2d(Array.from({ length: rows * 3 }, () => 2 * normal(random)), [rows, 3]);
        const y = tf.tensor2d(Array.from({ length: rows }, () => (random() < 0.3 ? 0 : 3 * random())), [rows, 1]);
        const layers = dpSgdLayers(model, 'linear');
        const fast = clippedGradientSum(layers, x, y, 0.8, loss).grads.map((g) => Array.from(g.dataSync()));
        const slow = clippedGradientSumNaive(layers, x, y, 0.8, loss).map((g) => Array.from(g.dataSync()));
        fast.forEach((g, k) => g.forEach((v, i) => expect(v, `${loss.name} tensor ${k}`).toBeCloseTo(slow[k][i], 4)));
      });
    }
    model.dispose();
  });

  it('a DP-SGD regression round runs and learns the line (sigma 0.5, C 1)', async () => {
    const csv = synthetic(1600, 6, (x1, _x2, r) => 3 * x1 + 2 + 0.5 * normal(r));
    const dpSgd = { noiseMultiplier: 0.5, clipNorm: 1, samplingRate: 64 / 1200, stepsPerRound: 300, learningRate: 0.5 };
    const { pooled, result } = await fitAndEvaluate(csv, { kind: 'regression', loss: 'mse' }, { kind: 'linear' }, {}, dpSgd);
    console.info(`DP-SGD linear/mse: R2 ${pooled.r2!.toFixed(4)}, clipped ${result.clippedFraction!.toFixed(3)}, steps ${result.steps}`);
    expect(result.steps).toBe(300);
    expect(pooled.r2).toBeGreaterThan(0.8);
  });

  it('a binary model refuses a regression loss (the output activation is the task\'s)', () => {
    const model = createModel({ kind: 'logreg' }, 2, 1);
    expect(() => dpSgdLayers(model, 'linear')).toThrow(/linear output/);
    model.dispose();
  });
});

describe('nodeKindFor', () => {
  it('binary by default; regression for a regression task; a transform at odds with the loss is refused by name', () => {
    const binary = StudyConfig.parse({ name: 'b', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features }, rounds: 1 });
    expect(nodeKindFor(binary).name).toBe('binary');
    expect(nodeKindFor(study({ task: { kind: 'regression', loss: 'huber' } })).name).toBe('regression');
    expect(() => nodeKindFor(study({ task: { kind: 'regression', loss: 'log1p' } }, { column: 'y', kind: 'numeric', center: 1, scale: 1, transform: 'log' }))).toThrow(/features\.target\.transform.*log1p/);
    expect(() => nodeKindFor(study({ task: { kind: 'regression', loss: 'tweedie' } }, { column: 'y', kind: 'numeric', center: 0, scale: 1 }))).toThrow(/features\.target\.center/);
  });

  it('binary evaluation: histogram, Brier and log-loss sums that pool like the central ones', () => {
    const random = mulberry32(5);
    const model = binaryKind.createModel(StudyConfig.parse({ name: 'b', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features }, rounds: 1 }), 2);
    const n = 600;
    const x = Float32Array.from({ length: 2 * n }, () => normal(random));
    const y = Float32Array.from({ length: n }, (_, i) => (x[2 * i] + 0.5 * normal(random) > 0 ? 1 : 0));
    const data: EncodedData = { x, y, n, width: 2, report: { rows: n, positives: 0, missingFilled: {}, unseenCategories: {} } };
    const central = binaryKind.evaluate(model, data);
    const parts = [[0, 100], [100, 350], [350, 600]].map(([a, b]) => binaryKind.evaluate(model, subset(data, Array.from({ length: b - a }, (_, i) => a + i))).stats as BinaryStats);
    const pooled = poolBinary(parts);
    const whole = poolBinary([central.stats as BinaryStats]);
    expect(pooled.auc).toBe(whole.auc);
    expect(pooled.logLoss!).toBeCloseTo(central.loss, 9);
    expect(pooled.brier!).toBeCloseTo(whole.brier!, 9);
    model.dispose();
  });
});
