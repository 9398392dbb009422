import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { initBackend } from '../../models/backend.ts';
import { nodeKindFor } from '../../models/kinds/index.ts';
import { getWeights } from '../../models/model-factory.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';
import { RELEASE_FIELDS, StudyConfig, type StudyConfigInput, type Task } from '../../protocols/messages.ts';
import { isNoised, statsRows } from '../../protocols/model-kinds/kind.ts';
import { dpSgdStepsPerRound } from '../../protocols/privacy/study-privacy.ts';
import { mulberry32 } from '../../protocols/random.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import type { LoadedData } from '../../client-node/data.ts';
import { fineTune, personalize, personalizedPath, personalizesAt, withPersonalized } from '../../client-node/personalize.ts';
import { NodePrivacyLedger } from '../../client-node/privacy-ledger.ts';
import { Release } from '../../client-node/release.ts';
import { evaluate } from '../../client-node/train.ts';

const log = pino({ level: 'silent' });
const FEATURES = {
  target: { column: 'y', positive: '1' },
  features: [
    { name: 'a', kind: 'numeric' as const, mean: 0, std: 1, fill: 0 },
    { name: 'b', kind: 'numeric' as const, mean: 0, std: 1, fill: 0 },
  ],
};
const DP_SGD = { noiseMultiplier: 1.1, clipNorm: 1, samplingRate: 0.1 };

function task(overrides: Partial<StudyConfigInput> = {}, round = 3): Task {
  const config = StudyConfig.parse({ name: 'p', model: { kind: 'logreg' }, features: FEATURES, rounds: 3, training: { localEpochs: 1, learningRate: 0.5, batchSize: 16 }, ...overrides });
  return { kind: 'evaluate', studyId: 'study_p', round, modelVersion: round, modelSha256: 'a'.repeat(64), deadline: new Date().toISOString(), config };
}

/** A node's rows: a region where the label follows b (the global model, all zeros, knows nothing). */
function rows(n: number, seed: number) {
  const random = mulberry32(seed);
  const x = new Float32Array(n * 2);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[2 * i] = random() * 2 - 1;
    x[2 * i + 1] = random() * 2 - 1;
    y[i] = x[2 * i + 1] + 0.3 * (random() - 0.5) > 0 ? 1 : 0;
  }
  const report = { rows: n, positives: y.reduce((s, v) => s + v, 0), missingFilled: {}, unseenCategories: {} };
  return { x, y, n, width: 2, report };
}
const data: LoadedData = { mtimeMs: 0, train: rows(400, 1), validation: rows(200, 2), report: { rows: 600, missingFilled: {}, unseenCategories: {} } };

const globalOf = (t: Task): WeightSet => getWeights(nodeKindFor(t.config).createModel(t.config, encodedWidth(t.config.features)));
const settings = (stateDir: string) => ({ personalize: true, personalizeEpochs: 3, stateDir });
const ledgerIn = (dir: string) => NodePrivacyLedger.for({ data: join(dir, 'data.csv'), stateDir: dir, ledgerDir: join(dir, 'ledgers') }, 'rdp', 1e-5);

beforeAll(async () => {
  await initBackend('wasm');
});

describe('regional personalization on the node (fedmark node --personalize)', () => {
  it('runs only at the evaluation task of the final round, with the flag', () => {
    expect(personalizesAt({ personalize: true }, task())).toBe(true);
    expect(personalizesAt({ personalize: true }, task({}, 2))).toBe(false);
    expect(personalizesAt({ personalize: true }, { ...task(), kind: 'fit' })).toBe(false);
    expect(personalizesAt({ personalize: false }, task())).toBe(false);
  });

  it('fine-tunes a copy, keeps it in a local file that differs from the global model, and releases exact statistics on the same rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-personal-'));
    const t = task();
    const global = globalOf(t);
    const kind = nodeKindFor(t.config);
    const release = Release.of(t.config);
    const p = await personalize(kind, t, data, global, settings(dir), release, undefined, log);
    expect(p.path).toBe(personalizedPath(settings(dir), t));
    expect(p.path).toBe(join(dir, 'personalized', 'study_p-v3.fmw'));
    const saved = decodeWeights(new Uint8Array(readFileSync(p.path)));
    expect(saved.map((w) => w.name)).toEqual(global.map((w) => w.name));
    expect(Math.max(...saved.flatMap((w, i) => Array.from(w.values, (v, j) => Math.abs(v - global[i].values[j]))))).toBeGreaterThan(0.01);
    // The region's label follows b: the fine-tuned copy learns it, the untrained global model cannot.
    expect(p.personalizedMetrics.auc!).toBeGreaterThan(0.9);
    expect(p.personalizedMetrics.auc!).toBeGreaterThan(p.globalMetrics.auc! + 0.2);
    expect(p.withheld).toBeUndefined();
    expect(p.release!.numExamples).toBe(data.validation.n);
    expect(isNoised(p.release!.stats)).toBe(false);
    // The release step sends counts and statistics, nothing else of it.
    const globalEval = evaluate(kind, kind.createModel(t.config, 2), data, global);
    const report = release.evaluation({ ...globalEval, personalized: { ...p.release!, spent: { epsilonEvaluation: 1, epsilonTotal: 1 } } });
    expect(Object.keys(report.personalized!).sort()).toEqual(['numExamples', 'stats']);
    expect(report.personalized!.stats).toEqual(p.release!.stats);
  });

  it('a release list without evaluation.personalized: the model is kept, nothing leaves, and the reason says so', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-personal-'));
    const t = task({ release: RELEASE_FIELDS.filter((f) => f !== 'evaluation.personalized') });
    const kind = nodeKindFor(t.config);
    const release = Release.of(t.config);
    const p = await personalize(kind, t, data, globalOf(t), settings(dir), release, undefined, log);
    expect(existsSync(p.path)).toBe(true);
    expect(p.release).toBeUndefined();
    expect(p.withheld).toMatch(/does not name evaluation\.personalized/);
    // Even facts that carry it are cut by the release step.
    const globalEval = evaluate(kind, kind.createModel(t.config, 2), data, globalOf(t));
    const withIt = await withPersonalized(globalEval, async () => ({ ...p, release: { numExamples: 1, stats: globalEval.stats } }), t, log);
    expect(release.evaluation(withIt)).not.toHaveProperty('personalized');
  });

  it('under DP-SGD: the statistics are noised, and the ledger is charged one more evaluation (and the fine-tuning as one more DP-SGD round)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-personal-'));
    const t = task({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd: DP_SGD } });
    const kind = nodeKindFor(t.config);
    const release = Release.of(t.config);
    const ledger = ledgerIn(dir);
    const globalEval = evaluate(kind, kind.createModel(t.config, 2), data, globalOf(t), { ledger, task: t }, log);
    const before = ledger.all.length;
    const epsilonBefore = ledger.epsilon();
    const p = await personalize(kind, t, data, globalOf(t), settings(dir), release, ledger, log);
    const added = ledger.all.slice(before).map(({ samplingRate, noiseMultiplier, steps, studyId, round }) => ({ samplingRate, noiseMultiplier, steps, studyId, round }));
    expect(added).toEqual([
      { studyId: 'study_p', round: 3, samplingRate: DP_SGD.samplingRate, noiseMultiplier: DP_SGD.noiseMultiplier, steps: dpSgdStepsPerRound({ ...DP_SGD, learningRate: 0.1 }) },
      // One evaluation: (q = 1, z = privacy.evaluation's default 5, 1 step), as the global one.
      { studyId: 'study_p', round: 3, samplingRate: 1, noiseMultiplier: 5, steps: 1 },
    ]);
    expect(ledger.epsilon()).toBeGreaterThan(epsilonBefore);
    expect(isNoised(p.release!.stats)).toBe(true);
    expect(p.release!.numExamples).toBe(statsRows(p.release!.stats));
    expect(p.release!.spent!.epsilonTotal).toBeCloseTo(ledger.epsilon(), 10);
    const report = release.evaluation({ ...globalEval, personalized: p.release });
    expect(isNoised(report.personalized!.stats)).toBe(true);
    // Exact statistics never leave under DP.
    expect(() => release.evaluation({ ...globalEval, personalized: { numExamples: 200, stats: evaluate(kind, kind.createModel(t.config, 2), data, globalOf(t)).stats } })).toThrow(/noised/);
  });

  it('under central DP only: nothing leaves (no record-level protection for the fine-tuning) and nothing is charged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-personal-'));
    const t = task({ privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } });
    const ledger = ledgerIn(dir);
    const p = await personalize(nodeKindFor(t.config), t, data, globalOf(t), settings(dir), Release.of(t.config), ledger, log);
    expect(p.release).toBeUndefined();
    expect(p.withheld).toMatch(/central DP without DP-SGD/);
    expect(ledger.all).toHaveLength(0);
    expect(existsSync(p.path)).toBe(true);
  });

  it('a failed personalization never costs the round: the global evaluation goes as it is', async () => {
    const t = task();
    const evaluation = { numExamples: 3, stats: { kind: 'binary' as const, histogram: { bins: 2, positives: [1, 1], negatives: [1, 0] }, brierSum: 1, logLossSum: 1 } };
    expect(await withPersonalized(evaluation, async () => Promise.reject(new Error('disk full')), t, log)).toBe(evaluation);
  });
});

describe('fine-tuning with early stopping (fineTune)', () => {
  /** A kind whose "model" is one number, the epoch it reached; its loss on the check rows is scripted per epoch. */
  function scripted(losses: number[]) {
    const seen: Array<{ rows: number; learningRate: number; epochs: number }> = [];
    const state = { epoch: 0 };
    const kind = {
      name: 'binary' as const,
      createModel: () => state as never,
      getWeights: () => [{ name: 'epoch', shape: [1], values: Float32Array.of(state.epoch) }],
      setWeights: (_m: unknown, w: WeightSet) => void (state.epoch = w[0].values[0]),
      train: async (_m: unknown, d: { n: number }, a: { instructions: { learningRate: number; localEpochs: number } }) => {
        seen.push({ rows: d.n, learningRate: a.instructions.learningRate, epochs: a.instructions.localEpochs });
        state.epoch++;
        return { loss: 0, numExamples: d.n, steps: 1 };
      },
      evaluate: () => ({ loss: losses[state.epoch], stats: { kind: 'binary' as const, histogram: { bins: 2, positives: [0, 0], negatives: [0, 0] }, brierSum: 0, logLossSum: 0 } }),
    };
    return { kind, state, seen };
  }
  const args = (epochs: number) => ({ study: task().config, instructions: { localEpochs: epochs, learningRate: 0.5, batchSize: 16, proximalMu: 0 }, global: [], seed: 1 });

  it('keeps the epoch with the lowest loss on a fifth of the training rows, at a tenth of the learning rate', async () => {
    const { kind, state, seen } = scripted([0.9, 0.5, 0.3, 0.4, 0.6]);
    await fineTune(kind, state as never, data.train, args(4));
    expect(state.epoch).toBe(2);
    expect(seen).toEqual(Array.from({ length: 4 }, () => ({ rows: 320, learningRate: 0.05, epochs: 1 })));
  });

  it('data that is not plain rows (another kind layout) trains for every epoch at the study rate', async () => {
    const { kind, state, seen } = scripted([0.9, 0.1, 0.2, 0.3]);
    await fineTune(kind, state as never, { ...data.train, recommend: {} } as never, args(3));
    expect(state.epoch).toBe(1);
    expect(seen).toEqual([{ rows: 400, learningRate: 0.5, epochs: 3 }]);
  });
});
