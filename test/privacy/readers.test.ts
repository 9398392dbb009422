import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkFitTask } from '../../client-node/policy.ts';
import { readerViews, readerSees, type StudyEpsilons } from '../../coordinator/privacy/readers.ts';
import { StudyConfig, type Task } from '../../protocols/messages.ts';
import { PolicyProfile } from '../../protocols/policy/jurisdiction-policy.ts';
import { clientLevelDeltaProblem, clientLevelNoiseSwamp, privacyWarnings, recordLevelDeltaProblem } from '../../protocols/privacy/study-checks.ts';
import { updateNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';

/**
 * The reader table (coordinator/privacy/readers.ts): for each role, what it sees of a study and
 * the bound that holds against it, derived from the study's config; and the numeric checks of
 * protocols/privacy/study-checks.ts (delta below 1/n, noise that swamps the federation).
 */

const base = {
  name: 'readers',
  model: { kind: 'logreg' },
  rounds: 10,
  features: { target: { column: 'y', positive: '1' }, features: [{ name: 'x', kind: 'numeric', mean: 0, std: 1, fill: 0 }] },
};
const study = (extra: Record<string, unknown>) => StudyConfig.parse({ ...base, ...extra });
const central = (q: number, extra: Record<string, unknown> = {}) => ({ privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: q } }, ...extra });
const eps: StudyEpsilons = { amplified: 1.5, participationKnown: 4.2, dpSgdMax: 2.5 };
const bound = (config: StudyConfig, reader: 'admin' | 'auditor' | 'analyst' | 'node') => readerViews(config, eps, reader)[0];

describe('every reader gets the bound that holds for it', () => {
  it('no DP: no reader gets any bound (null, never 0)', () => {
    for (const v of readerViews(study({}), eps)) expect([v.clientLevel, v.recordLevel]).toEqual([null, null]);
  });

  it('no DP: every release is exact; the auditor would see per-node row counts and losses (the table still lists them)', () => {
    const seen = readerSees(study({}), 'auditor').map((e) => e.id);
    expect(seen).toEqual(expect.arrayContaining(['node-row-counts', 'node-losses', 'round-row-totals', 'pooled-evaluation']));
  });

  it('central DP, q = 0.5: the operator and the auditor get no bound, with the reason; a node gets the amplified epsilon', () => {
    const config = study(central(0.5));
    expect(bound(config, 'admin').clientLevel).toMatchObject({ epsilon: null, figure: 'none', reason: expect.stringMatching(/coordinator decrypts it/) });
    const auditor = bound(config, 'auditor').clientLevel!;
    expect(auditor.epsilon).toBeNull();
    // Under DP the count is the constant 1 and losses are not released (default release list).
    // Per-node norms and clipped bits are withheld from it under central DP (readers.ts perNodeNormsWithheld).
    expect(auditor.reason).toMatch(/^this reader sees validation metrics pooled from each node's noised histograms \(privacy.evaluation: noise calibrated to one row, not to a whole node\): /);
    expect(auditor.reason).not.toMatch(/row counts|losses|norm/);
    const analyst = bound(config, 'analyst').clientLevel!;
    expect(analyst.epsilon).toBeNull();
    expect(analyst.reason).not.toMatch(/norm/);
    for (const reader of ['auditor', 'analyst', 'node'] as const) expect(readerSees(config, reader).map((e) => e.id)).not.toContain('node-update-norms');
    expect(readerSees(config, 'admin').map((e) => e.id)).toContain('node-update-norms');
    // Under DP-SGD alone a norm is post-processing of the noised update: shown, and no row-level exposure.
    const dpSgdOnly = study({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05 } } });
    expect(readerSees(dpSgdOnly, 'auditor').find((e) => e.id === 'node-update-norms')).toMatchObject({ rowLevel: false });
    expect(bound(config, 'node').clientLevel).toEqual({ epsilon: 1.5, delta: 1e-5, figure: 'amplified', reason: expect.stringMatching(/who was sampled \(q=0.5\) stays hidden/) });
    // Under sampling the round counts are hidden from analysts and nodes (auth/visibility.ts).
    expect(readerSees(config, 'node').map((e) => e.id)).toEqual([]);
    expect(readerSees(config, 'analyst').map((e) => e.id)).not.toContain('round-counts');
  });

  it('at q = 1 a node sees the round counts (nothing to hide about the sample) and keeps the amplified figure, which is then the q = 1 one', () => {
    expect(readerSees(study(central(1)), 'node').map((e) => e.id)).toEqual(['round-counts']);
    expect(bound(study(central(1)), 'node').clientLevel!.figure).toBe('amplified');
  });

  const dpSgd = { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 };
  it('DP-SGD with the default release: every reader, the operator included, gets the largest DP-SGD epsilon at row level', () => {
    const config = study({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd } });
    for (const reader of ['admin', 'auditor', 'analyst', 'node'] as const) {
      expect(bound(config, reader).recordLevel).toMatchObject({ epsilon: 2.5, figure: 'dp-sgd-max' });
      expect(bound(config, reader).clientLevel).toBeNull();
    }
  });

  it('DP-SGD with a loss declared public: readers of per-node losses get no row-level bound, and the reason says so', () => {
    const config = study({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd, publicFields: ['update.loss'] } });
    expect(config.release).toContain('update.loss');
    for (const reader of ['admin', 'auditor', 'analyst'] as const) expect(bound(config, reader).recordLevel).toMatchObject({ epsilon: null, reason: expect.stringMatching(/per-node training losses \(update\.loss\) in the clear/) });
    expect(bound(config, 'node').recordLevel).toMatchObject({ epsilon: 2.5 });
  });
});

describe('delta below 1/n (Dwork & Roth 2014, sec. 2.3)', () => {
  it('client-level: refused at 1/nodes needed (the most of minNodesPerRound and minNodesToStart), with the reason', () => {
    const at = study({ minNodesPerRound: 2, minNodesToStart: 5, privacy: { accountant: 'rdp', delta: 0.2, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } });
    expect(clientLevelDeltaProblem(at)).toMatch(/delta 0.2 is not below 1\/5 \(the 5 nodes this study needs/);
    expect(clientLevelDeltaProblem(study({ minNodesPerRound: 2, minNodesToStart: 5, privacy: { accountant: 'rdp', delta: 0.19, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } }))).toBeNull();
  });

  it('record-level: refused when delta >= 1/rows', () => {
    const config = study({ privacy: { accountant: 'rdp', delta: 0.001, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 } } });
    expect(recordLevelDeltaProblem(config, 1000)).toMatch(/delta 0.001 is not below 1\/1000/);
    expect(recordLevelDeltaProblem(config, 999)).toBeNull();
  });

  const root = mkdtempSync(join(tmpdir(), 'fedmark-delta-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  it('the node refuses to train (privacy-ceiling) before touching its ledger', () => {
    const config = study({ privacy: { accountant: 'rdp', delta: 0.001, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 } } });
    const task: Task = { kind: 'fit', studyId: 'study_delta', round: 1, modelVersion: 0, modelSha256: '0'.repeat(64), deadline: new Date(Date.now() + 60_000).toISOString(), config };
    const data = join(root, 'rows.csv');
    writeFileSync(data, 'x,y\n1,1\n');
    const options = { stateDir: root, data, ledgerDir: join(root, 'ledgers'), maxEpsilonDelta: 1e-5 };
    const policy = PolicyProfile.parse({ jurisdiction: 'US-TX', version: 1 });
    const refused = checkFitTask(task, policy, options, 5000);
    expect(refused).toMatchObject({ allowed: false, state: 'privacy-ceiling', message: expect.stringMatching(/refusing to train: the study's delta 0.001 is not below 1\/5000/) });
    expect(checkFitTask(task, policy, options, 500).allowed).toBe(true);
  });
});

describe('client-level noise that swamps the federation is said with numbers', () => {
  it('noise norm z_delta C sqrt(d) / (q nodes) against a signal of at most C', () => {
    // The case: 10 partners, z ~ 0.9 (epsilon ~8 over a study), C = 1, a model of 800 parameters.
    const config = study({ minNodesPerRound: 10, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 0.9, clipping: { kind: 'fixed', norm: 1 } } } });
    const swamp = clientLevelNoiseSwamp(config, 800)!;
    expect(swamp.noiseNorm).toBeCloseTo((0.9 * 1 * Math.sqrt(800)) / 10, 12);
    expect(swamp.message).toMatch(/^client-level DP: noise norm per round 2\.5 against a signal of at most 1\.0 .*the model will not learn with 10 nodes; it would need about 26 nodes; use record-level DP \(DP-SGD\) for few partners$/);
    // 100 parameters: 0.9 x 10 / 10 = 0.9 < 1: no warning.
    expect(clientLevelNoiseSwamp(config, 100)).toBeNull();
  });

  it('adaptive clipping: the update noise is z_delta (larger than z), and the warning names the charged multiplier', () => {
    const central = { noiseMultiplier: 2.85, clipping: { kind: 'adaptive', initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 2 } };
    const config = study({ minNodesPerRound: 10, privacy: { accountant: 'pld', delta: 1e-5, central } });
    const zDelta = updateNoiseMultiplier(StudyConfig.parse(config).privacy!.central!);
    expect(clientLevelNoiseSwamp(config, 100)!.noiseNorm).toBeCloseTo((zDelta * 10) / 10, 12);
    expect(privacyWarnings(config, 100)[1]).toMatch(/adaptive clipping: the ledger charges noise multiplier 1\.794, not 2\.85/);
  });
});
