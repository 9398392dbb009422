import { describe, expect, it } from 'vitest';
import { EvaluationReport, NodeStatusReport, RELEASE_FIELDS, REQUIRED_RELEASE, StudyConfig, UpdateMeta, type ReleaseField } from '../../protocols/messages.ts';
import { EVALUATION_RELEASE, Release, STATUS_RELEASE, UPDATE_META_RELEASE, type TrainedFacts } from '../../client-node/release.ts';
import { instructionsOf } from '../../client-node/task.ts';
import type { Task } from '../../protocols/messages.ts';

const dpSgd = { accountant: 'rdp' as const, delta: 1e-5, epsilonRound: 0.3, epsilonTotal: 0.9, noiseMultiplier: 1.1, samplingRate: 0.05, steps: 40, clipNorm: 1 };
/** What a node knows after training, with a local-only extra on its data report (the class balance). */
const trained: TrainedFacts = {
  numExamples: 120,
  loss: 0.41,
  steps: 8,
  trainSeconds: 0.25,
  dpSgd,
  data: { rows: 150, droppedNoConsent: 3, droppedFeatures: ['age'], missingFilled: { a: 2 }, unseenCategories: { c: 1 }, positives: 31 } as TrainedFacts['data'],
};
const evaluated = {
  numExamples: 30,
  loss: 0.5,
  stats: { kind: 'binary' as const, histogram: { bins: 2, positives: [1, 5], negatives: [20, 4] }, brierSum: 3.1, logLossSum: 15 },
  // fedmark node --personalize (final round): the fine-tuned copy's statistics on the same rows.
  personalized: { numExamples: 30, stats: { kind: 'binary' as const, histogram: { bins: 2, positives: [0, 6], negatives: [22, 2] }, brierSum: 2.1, logLossSum: 11 } },
};

describe('the release step', () => {
  it('maps every field of what a node sends to exactly one release name, and every name to a field', () => {
    expect(Object.keys(UPDATE_META_RELEASE).sort()).toEqual(Object.keys(UpdateMeta.shape).sort());
    expect(Object.keys(EVALUATION_RELEASE).sort()).toEqual(Object.keys(EvaluationReport.shape).sort());
    const named: string[] = ['update.weights', ...Object.values(UPDATE_META_RELEASE), ...Object.values(EVALUATION_RELEASE), ...Object.values(STATUS_RELEASE)];
    expect(named.sort()).toEqual([...RELEASE_FIELDS].sort());
    // A status report's other fields are its state and the words for it, not data.
    expect(Object.keys(NodeStatusReport.shape).sort()).toEqual(['data', 'message', 'state']);
  });

  it('with the default list (every field) sends everything it knows, and only the protocol fields of the data report', () => {
    const release = Release.of(StudyConfig.parse({ name: 's', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, rounds: 1 }));
    const meta = release.update(trained);
    expect(meta).toEqual({ numExamples: 120, loss: 0.41, steps: 8, trainSeconds: 0.25, dpSgd, data: { rows: 150, droppedNoConsent: 3, droppedFeatures: ['age'], missingFilled: { a: 2 }, unseenCategories: { c: 1 } } });
    expect(JSON.stringify(meta)).not.toContain('positives');
    expect(release.evaluation(evaluated)).toEqual(evaluated);
    expect(release.status({ state: 'ready', data: trained.data })).toEqual({ state: 'ready', data: meta.data });
  });

  it('with only the required fields sends only them', () => {
    const release = new Release(REQUIRED_RELEASE);
    expect(release.update(trained)).toEqual({ numExamples: 120 });
    expect(release.evaluation(evaluated)).toEqual({ numExamples: 30, stats: evaluated.stats });
    expect(release.status({ state: 'ready', data: trained.data })).toEqual({ state: 'ready' });
    expect(release.status({ state: 'privacy-ceiling', message: 'over the ceiling', data: trained.data })).toEqual({ state: 'privacy-ceiling', message: 'over the ceiling' });
  });

  it('leaves out each optional field on its own', () => {
    const optional = RELEASE_FIELDS.filter((f) => !REQUIRED_RELEASE.includes(f));
    for (const left of optional) {
      const release = new Release(RELEASE_FIELDS.filter((f) => f !== left));
      const sent = { ...flatten('update', release.update(trained)), ...flatten('evaluation', release.evaluation(evaluated)), ...flatten('status', release.status({ state: 'ready', data: trained.data })) };
      const names = Object.keys(sent).filter((k) => k !== 'status.state');
      expect(names).not.toContain(left);
      expect(names.sort()).toEqual(RELEASE_FIELDS.filter((f) => f !== left && f !== 'update.weights').sort());
    }
  });

  it('sends no DP-SGD spend for a node that did not train with DP-SGD, even when the list allows it', () => {
    const { dpSgd: _, ...plain } = trained;
    expect(new Release(RELEASE_FIELDS).update(plain)).not.toHaveProperty('dpSgd');
  });

  it('refuses a list without the required fields, or naming one twice', () => {
    expect(() => new Release(['update.weights', 'update.numExamples', 'evaluation.numExamples'])).toThrow(/release must include/);
    expect(() => new Release([...REQUIRED_RELEASE, 'update.loss', 'update.loss'])).toThrow(/twice/);
    expect(() => new Release([...REQUIRED_RELEASE, 'update.labels' as ReleaseField])).toThrow();
  });

  it('builds messages the strict protocol schemas accept', () => {
    const release = new Release(RELEASE_FIELDS);
    expect(UpdateMeta.parse(release.update(trained))).toBeTruthy();
    expect(EvaluationReport.parse(release.evaluation(evaluated))).toBeTruthy();
    expect(NodeStatusReport.strict().parse(release.status({ state: 'data-error', message: 'line 3: empty file' }))).toEqual({ state: 'data-error', message: 'line 3: empty file' });
  });
});

describe("the release step's weights (update.weights)", () => {
  const trained = [
    { name: 'dense_0/kernel', shape: [2, 1], values: Float32Array.from([1, 2]) },
    { name: 'dense_0/bias', shape: [1], values: Float32Array.from([3]) },
  ];

  it("are the model kind's shared tensors: every tensor for binary and regression", () => {
    for (const kind of ['binary', 'regression'] as const) {
      const out = new Release([...REQUIRED_RELEASE], kind).weights(trained);
      expect(out.map((t) => t.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);
      expect(out[0].values).toBe(trained[0].values);
    }
  });

  it('follow the study: Release.of reads the task kind', () => {
    const study = StudyConfig.parse({ name: 's', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, rounds: 1 });
    expect(Release.of(study).weights(trained)).toHaveLength(2);
  });
});

describe("a fit task's instructions", () => {
  const config = StudyConfig.parse({ name: 's', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, rounds: 1, training: { localEpochs: 3, learningRate: 0.05, batchSize: 16 } });
  const task = (extra: Partial<Task>): Task => ({ kind: 'fit', studyId: 's', round: 1, modelVersion: 0, modelSha256: '0'.repeat(64), deadline: '', config, ...extra });

  it("are the strategy's when the task carries them", () => {
    const instructions = { localEpochs: 1, learningRate: 0.1, batchSize: 8, proximalMu: 0.2 };
    expect(instructionsOf(task({ instructions }))).toEqual(instructions);
  });

  it("fall back to the study's training config (and FedProx's mu)", () => {
    expect(instructionsOf(task({}))).toEqual({ localEpochs: 3, learningRate: 0.05, batchSize: 16, proximalMu: 0 });
    expect(instructionsOf(task({ config: { ...config, strategy: { name: 'fedprox', mu: 0.5 } } }))).toEqual({ localEpochs: 3, learningRate: 0.05, batchSize: 16, proximalMu: 0.5 });
  });
});

/** { numExamples: 1, data: {...} } -> { 'update.numExamples': 1, 'update.data': {...} } */
function flatten(prefix: string, message: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(message).map(([k, v]) => [`${prefix}.${k}`, v]));
}
