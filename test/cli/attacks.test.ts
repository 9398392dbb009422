import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { attackEvaluation, attackUpdate, FAKE_EVALUATION_ROWS, INFLATED_COUNT, SCALE_FACTOR, type AttackName } from '../../client-node/attack.ts';
import { Release } from '../../client-node/release.ts';
import type { Trained } from '../../client-node/train.ts';
import { attackerOutcome } from '../../cli/attack-demo.ts';
import { adaptiveDeadlines, robustStrategy } from '../../cli/attack-plans.ts';
import { DEFAULT_HISTOGRAM_BINS, scoreHistogram } from '../../protocols/metrics.ts';
import { RELEASE_FIELDS } from '../../protocols/messages.ts';
import { poolEvaluation, statsRows, type BinaryStats } from '../../protocols/model-kinds/kind.ts';
import { minimumUpdates, StrategyConfig } from '../../protocols/strategies/config.ts';
import { l2Norm, subtract, type WeightSet } from '../../protocols/tensors.ts';
import { BIN } from '../helpers/processes.ts';

const run = promisify(execFile);

const tensor = (name: string, values: number[]) => ({ name, shape: [values.length], values: Float32Array.from(values) });
const GLOBAL: WeightSet = [tensor('dense_0/kernel', [0.5, -0.25, 1]), tensor('dense_0/bias', [0]), tensor('dense_1/kernel', [2, -1]), tensor('dense_1/bias', [0.5])];
const TRAINED: Trained = {
  weights: [tensor('dense_0/kernel', [0.75, -0.25, 0.5]), tensor('dense_0/bias', [0.125]), tensor('dense_1/kernel', [1.5, -0.5]), tensor('dense_1/bias', [0.25])],
  facts: { numExamples: 320, loss: 0.4, steps: 10, trainSeconds: 0.1 },
};
const values = (w: WeightSet) => w.map((t) => Array.from(t.values));

describe('client-node/attack.ts: what an attacker node sends instead of its honest update', () => {
  it('scale: global + (-1000) x the honest delta, with the honest count', () => {
    const sent = attackUpdate('scale', TRAINED, GLOBAL);
    expect(sent.facts.numExamples).toBe(320);
    const honestDelta = subtract(TRAINED.weights, GLOBAL);
    const delta = subtract(sent.weights, GLOBAL);
    delta.forEach((t, i) => t.values.forEach((v, j) => expect(v).toBeCloseTo(SCALE_FACTOR * honestDelta[i].values[j], 3)));
    expect(l2Norm(delta) / l2Norm(honestDelta)).toBeCloseTo(1000, 2);
  });

  it('sign-flip: the honest delta reversed, the same norm', () => {
    const sent = attackUpdate('sign-flip', TRAINED, GLOBAL);
    const honestDelta = subtract(TRAINED.weights, GLOBAL);
    const delta = subtract(sent.weights, GLOBAL);
    expect(values(delta)).toEqual(values(honestDelta).map((t) => t.map((v) => 0 - v)));
    expect(l2Norm(delta)).toBeCloseTo(l2Norm(honestDelta), 6);
    expect(sent.facts).toEqual(TRAINED.facts);
  });

  it('count-inflation: claims 2e9 examples with only the output layer negated', () => {
    const sent = attackUpdate('count-inflation', TRAINED, GLOBAL);
    expect(sent.facts.numExamples).toBe(INFLATED_COUNT);
    expect(values(sent.weights).slice(0, 2)).toEqual(values(TRAINED.weights).slice(0, 2));
    expect(values(sent.weights).slice(2)).toEqual(values(TRAINED.weights).slice(2).map((t) => t.map((v) => -v)));
    // What leaves: the release step lets the inflated count through (the protocol's schema allows it).
    expect(Release.of({ release: [...RELEASE_FIELDS] }).update({ ...sent.facts, data: { rows: 400, missingFilled: {}, unseenCategories: {} } }).numExamples).toBe(INFLATED_COUNT);
  });

  it('the honest update and evaluation are untouched by the attacks that do not rewrite them', () => {
    expect(attackUpdate('fake-eval', TRAINED, GLOBAL)).toBe(TRAINED);
    const honest = { numExamples: 4, loss: 0.5, stats: binaryStats([0.2, 0.7, 0.4, 0.9], [0, 1, 0, 1]) };
    for (const attack of ['scale', 'sign-flip', 'count-inflation'] as AttackName[]) expect(attackEvaluation(attack, honest)).toBe(honest);
  });

  it('fake-eval: a self-consistent report (bins, rows) that the release step sends and that pools to AUC ~1', () => {
    const honest = { numExamples: 80, loss: 0.5, stats: binaryStats(Array.from({ length: 80 }, (_, i) => (i % 7) / 7), Array.from({ length: 80 }, (_, i) => Number(i % 3 === 0))) };
    const fake = attackEvaluation('fake-eval', honest);
    const report = Release.of({ release: [...RELEASE_FIELDS] }).evaluation(fake);
    expect(report.numExamples).toBe(FAKE_EVALUATION_ROWS);
    expect(statsRows(report.stats)).toBe(report.numExamples);
    expect(report.stats.kind === 'binary' && report.stats.histogram.bins).toBe(DEFAULT_HISTOGRAM_BINS);
    expect(poolEvaluation('binary', [report.stats]).auc).toBe(1);
    // Pooled with nine honest nodes' worth of rows, the lie still reads ~1.
    const pooled = poolEvaluation('binary', [report.stats, ...Array.from({ length: 9 }, () => honest.stats)]);
    expect(pooled.auc).toBeGreaterThan(0.999);
    expect(poolEvaluation('binary', [honest.stats]).auc).toBeLessThan(0.9);
  });
});

describe('attack demo plumbing', () => {
  it('robust strategies tolerate the attackers at the demo minimum of half the nodes', () => {
    for (const malicious of [1, 2]) {
      const trimmed = StrategyConfig.parse(robustStrategy('trimmed-mean', malicious, 10));
      expect(trimmed.name === 'trimmed-mean' && Math.floor(trimmed.trimFraction * 10)).toBeGreaterThan(malicious);
      expect(minimumUpdates(trimmed)).toBeLessThanOrEqual(5);
      const krum = StrategyConfig.parse(robustStrategy('krum', malicious, 10));
      expect(krum.name === 'krum' && krum.byzantine).toBe(malicious);
      expect(minimumUpdates(krum)).toBeLessThanOrEqual(10 - malicious);
    }
  });

  it('deadlines: the demo default until a round was measured, then 4 x the slowest, within [16, 120] s', () => {
    expect(adaptiveDeadlines(null)).toEqual({ round: 120, evaluation: 60 });
    expect(adaptiveDeadlines(1.2)).toEqual({ round: 16, evaluation: 8 });
    expect(adaptiveDeadlines(9.5)).toEqual({ round: 38, evaluation: 19 });
    expect(adaptiveDeadlines(70)).toEqual({ round: 120, evaluation: 60 });
  });

  it("reads the attacker's own log: a round counts once, accepted if an update got in", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-attack-log-'));
    try {
      const file = join(dir, 'node-region-01.log');
      const lines = [
        { msg: 'coordinator refused', round: 1, kind: 'fit', status: 400, code: 'COUNT_OUT_OF_BOUNDS', reason: 'update refused: numExamples 2000000000 is more than the 404 rows' },
        { msg: 'coordinator refused', round: 1, kind: 'fit', status: 400, code: 'COUNT_OUT_OF_BOUNDS', reason: 'update refused: numExamples 2000000000 is more than the 404 rows' },
        { msg: 'coordinator refused', round: 2, kind: 'fit', status: 409, code: 'ROUND_CLOSED', reason: 'late' },
        { msg: 'sent model update', round: 2 },
        { msg: 'sent evaluation (sufficient statistics)', round: 2 },
        { msg: 'coordinator refused', round: 3, kind: 'evaluate', status: 400, code: 'EVALUATION_OUT_OF_BOUNDS', reason: 'evaluation refused' },
      ];
      writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\nnot json\n');
      const outcome = attackerOutcome([file, join(dir, 'missing.log')]);
      expect(outcome).toMatchObject({ updatesAccepted: 1, updatesRefused: 1, updatesLate: 0, evaluationsAccepted: 1, evaluationsRefused: 1, evaluationsLate: 0 });
      // Late only: the round closed before the update came.
      writeFileSync(file, JSON.stringify({ msg: 'coordinator refused', round: 4, kind: 'fit', status: 409, code: 'ROUND_CLOSED', reason: 'late' }) + '\n');
      expect(attackerOutcome([file])).toMatchObject({ updatesAccepted: 0, updatesRefused: 0, updatesLate: 1 });
      expect(outcome.refusals).toHaveLength(2);
      expect(outcome.refusals[0]).toMatch(/^400 COUNT_OUT_OF_BOUNDS: update refused/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The attack as a partner would mount it: real coordinator and node processes, region-01's node
 * started with --attack count-inflation, once against a study without claim bounds and once with
 * the defaults: one round each, the refused attacker keeping the defended round open until its
 * deadline. 90 s, not the demo's adaptive one: on a machine loaded by other suites the attacker
 * itself came after an adaptive deadline, and a late attacker proves nothing about the defense.
 * About 2 minutes on 2 idle cores; 10 when other suites load them. Undefended, its 2e9
 * examples make the global model its own, negated.
 */
describe('fedmark demo --malicious 1 --attack count-inflation', () => {
  it('takes an undefended FedAvg study over, and is refused by the default claim bounds', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-attack-demo-'));
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--malicious', '1', '--attack', 'count-inflation', '--compare', 'undefended,bounds', '--rounds', '1', '--round-deadline', '90', '--json', '--out', out], {
        maxBuffer: 16 << 20,
        // Before the test's own timeout: SIGTERM lets the demo stop its coordinator and nodes (a
        // worker torn down at the timeout would leave them running).
        timeout: 800_000,
      });
      const result = JSON.parse(stdout.trim());
      expect(result.rows.map((r: { configuration: string }) => r.configuration)).toEqual(['undefended', 'bounds']);
      const [undefended, defended] = result.rows;
      expect(undefended.attackerNodes).toEqual(['region-01']);
      expect(undefended.claimBounds).toBe('none');
      // Undefended: accepted, and the global model is the attacker's, ranking customers backwards.
      expect(undefended.attacker).toMatchObject({ updatesAccepted: 1, updatesRefused: 0 });
      expect(undefended.roundsCompleted).toBe(1);
      expect(undefended.globalTestAuc).toBeLessThan(0.45);
      // Defended: the count is above the node's declared rows, refused every round; the others carry the model.
      expect(defended.attacker).toMatchObject({ updatesAccepted: 0, updatesRefused: 1 });
      expect(defended.attacker.refusals.join('\n')).toMatch(/numExamples 2000000000/);
      expect(defended.roundsCompleted).toBe(1);
      expect(defended.globalTestAuc).toBeGreaterThan(0.6);
      expect(defended.globalTestAuc - undefended.globalTestAuc).toBeGreaterThan(0.2);
      expect(stderr).toMatch(/no defenses\s+fedavg\s+none \(null\)/);
      expect(stderr).toMatch(/claim bounds\s+fedavg\s+default\s.*1 refused/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 840_000);
});

function binaryStats(scores: number[], labels: number[]): BinaryStats {
  return { kind: 'binary', histogram: scoreHistogram(scores, labels), brierSum: 0.5, logLossSum: 1 };
}
