import { expect } from 'vitest';
import { Command } from 'commander';
import type { AddressInfo } from 'node:net';
import { registerPrivacyReportCommand } from '../../cli/privacy-report-command.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { ADMIN, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

/**
 * Every reader gets the bound that holds for it (coordinator/privacy/readers.ts), on a real
 * coordinator over HTTP, PGlite and PostgreSQL: what each role's views return under node
 * sampling, the bound /privacy and `fedmark privacy report` print for it, "no differential
 * privacy" for a study without DP, the stop reason of a stopped study, and delta below 1/n.
 */

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);
const evalReport = evaluation([0, 1], [1, 0], 0.5);

async function phaseOf(h: Harness, studyId: string, round: number): Promise<string | undefined> {
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds?.find((r: { round: number }) => r.round === round)?.phase;
}

/**
 * Plays one round with whoever was sampled; true when it completed (enough nodes were sampled).
 * Under DP an update's count is the public constant 1 and nothing exact rides along (the default
 * release list); evaluations are left to their deadline (their noised format is not this test's).
 */
async function playRound(h: Harness, studyId: string, round: number, nodes: TestNode[], dp = true): Promise<boolean> {
  await h.until(async () => ((await phaseOf(h, studyId, round)) === 'fit' ? true : undefined));
  const participants: string[] = (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body.participants;
  const selected = nodes.filter((n) => participants.includes(n.nodeId));
  for (const n of selected) {
    const res = await h.submit(n, studyId, round, weights(0.01), dp ? { numExamples: 1 } : undefined);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  }
  if (selected.length < 2) {
    h.advanceClock(31_000);
    await h.built.rounds.advanceRound(studyId, round);
  } else {
    await h.until(async () => ((await phaseOf(h, studyId, round)) === 'evaluate' ? true : undefined));
    if (dp) {
      h.advanceClock(61_000);
      await h.built.rounds.advanceRound(studyId, round);
    } else for (const n of selected) expect((await h.nodePost(n, `/v1/studies/${studyId}/rounds/${round}/evaluations`, evalReport, `${studyId}/${round}`)).status).toBe(201);
  }
  const phase = await h.until(async () => {
    const p = await phaseOf(h, studyId, round);
    return p === 'completed' || p === 'failed' ? p : undefined;
  });
  return phase === 'completed';
}

/** `fedmark privacy report` in this process (stdout, exit code). */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const program = new Command().exitOverride();
  registerPrivacyReportCommand(program);
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  const before = process.exitCode;
  process.exitCode = 0;
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    await program.parseAsync(['node', 'fedmark', ...args]);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { code, stdout, stderr };
}

async function withServer<T>(h: Harness, fn: (url: string) => Promise<T>): Promise<T> {
  const server = h.app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    return await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

async function tokens(h: Harness) {
  const auditor = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'compliance' })).body.token as string;
  const analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'eu team', region: 'eu' })).body.token as string;
  return { auditor, analyst };
}

const Z = 2;
const central = (q: number) => ({ noiseMultiplier: Z, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: q });

describeOnEachBackend('per-reader privacy bounds', (run) => {
  run('under node sampling (q = 0.5) analysts and nodes get no exact round counts; each role reads its own bound', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 4, minNodesPerRound: 2, minNodesToStart: 8, roundDeadlineSeconds: 30, privacy: { accountant: 'rdp', delta: 1e-5, central: central(0.5) } }));
    const nodes: TestNode[] = [];
    for (let i = 0; i < 8; i++) nodes.push(await h.enroll(studyId, `n${i}`, true, i < 4 ? 'eu' : 'us'));
    let completed = 0;
    for (let round = 1; round <= 4 && completed === 0; round++) if (await playRound(h, studyId, round, nodes)) completed = round;
    expect(completed).toBeGreaterThan(0);
    const { auditor, analyst } = await tokens(h);
    const as = (token: string, path: string) => h.admin('get', path).set('authorization', `Bearer ${token}`);

    // Study status: admins and auditors see the round's exact counts, the analyst null + why.
    for (const token of [ADMIN, auditor]) {
      const r = (await as(token, `/v1/studies/${studyId}`)).body.rounds.find((x: { round: number }) => x.round === completed);
      expect(r.numExamples).toBeGreaterThan(0);
      expect(r.updatesReceived).toBeGreaterThanOrEqual(2);
      expect(r.numExamples).toBe(r.updatesReceived); // under DP each update counts the public 1
    }
    const seen = (await as(analyst, `/v1/studies/${studyId}`)).body.rounds.find((x: { round: number }) => x.round === completed);
    expect({ updatesReceived: seen.updatesReceived, numExamples: seen.numExamples, meanLoss: seen.meanLoss }).toEqual({ updatesReceived: null, numExamples: null, meanLoss: null });
    expect(seen.hidden.reason).toMatch(/node sampling \(q < 1\)/);

    // Round detail: the count of contributing nodes (mechanism.nodes) only for admins and auditors.
    expect((await as(ADMIN, `/v1/studies/${studyId}/rounds/${completed}`)).body.mechanism.nodes).toBeGreaterThanOrEqual(2);
    expect((await as(auditor, `/v1/studies/${studyId}/rounds/${completed}`)).body.mechanism.nodes).toBeGreaterThanOrEqual(2);
    expect((await as(analyst, `/v1/studies/${studyId}/rounds/${completed}`)).body.mechanism.nodes).toBeNull();
    const participants: string[] = (await h.admin('get', `/v1/studies/${studyId}/rounds/${completed}`)).body.participants;
    const sampled = nodes.find((n) => participants.includes(n.nodeId))!;
    const nodeView = (await h.nodeGet(sampled, `/v1/studies/${studyId}/rounds/${completed}`)).body;
    expect(nodeView.mechanism.nodes).toBeNull();
    expect(nodeView.mechanism.hidden.fields).toEqual(['nodes']);

    // Per-node norms and clipped bits (exact functions of a node's raw update under central DP):
    // the operator's round view only; null with the reason for the auditor, the analyst and the
    // node, and absent from every update.received audit entry.
    const adminUpdates = (await as(ADMIN, `/v1/studies/${studyId}/rounds/${completed}`)).body.updates;
    expect(adminUpdates.length).toBeGreaterThanOrEqual(2);
    for (const u of adminUpdates) expect(typeof u.deltaNorm).toBe('number');
    const withheld = (updates: Array<Record<string, unknown>>) => {
      for (const u of updates) {
        expect({ deltaNorm: u.deltaNorm, clipped: u.clipped }).toEqual({ deltaNorm: null, clipped: null });
        expect(u).not.toHaveProperty('deltaNormBefore');
        expect(u).not.toHaveProperty('clippedTo');
        expect(u.hidden).toEqual({ fields: ['deltaNorm', 'clipped'], reason: expect.stringMatching(/withheld under central DP/) });
      }
    };
    const auditorUpdates = (await as(auditor, `/v1/studies/${studyId}/rounds/${completed}`)).body.updates;
    expect(auditorUpdates).toHaveLength(adminUpdates.length);
    withheld(auditorUpdates);
    // The same through one update's route.
    const one = adminUpdates[0].nodeId;
    expect(typeof (await as(ADMIN, `/v1/studies/${studyId}/rounds/${completed}/updates/${one}`)).body.deltaNorm).toBe('number');
    withheld([(await as(auditor, `/v1/studies/${studyId}/rounds/${completed}/updates/${one}`)).body]);
    withheld((await as(analyst, `/v1/studies/${studyId}/rounds/${completed}`)).body.updates);
    withheld((await h.nodeGet(sampled, `/v1/studies/${studyId}/rounds/${completed}`)).body.updates);
    const received = (await h.built.db.selectFrom('audit_log').select('data').where('kind', '=', 'update.received').where('study_id', '=', studyId).execute()).map((e) => (typeof e.data === 'string' ? JSON.parse(e.data) : e.data) as Record<string, unknown>);
    expect(received.length).toBeGreaterThanOrEqual(2);
    for (const data of received) {
      for (const field of ['deltaNorm', 'clipped', 'deltaNormBefore', 'clippedTo']) expect(data).not.toHaveProperty(field);
      expect(data).toMatchObject({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/), numExamples: 1, normsWithheld: expect.stringMatching(/withheld under central DP/) });
    }

    // The bound each role reads from /privacy.
    const report = (await h.admin('get', `/v1/studies/${studyId}/privacy?reader=all`)).body;
    const charged = report.rounds.length;
    expect(report.dp).toBe(true);
    expect(report.epsilons.amplified).toBeCloseTo(computeEpsilon({ q: 0.5, sigma: Z, steps: charged, delta: 1e-5 }, 'rdp'), 8);
    expect(report.epsilons.participationKnown).toBeCloseTo(computeEpsilon({ q: 1, sigma: Z, steps: charged, delta: 1e-5 }, 'rdp'), 8);
    expect(report.readers.map((r: { reader: string }) => r.reader)).toEqual(['admin', 'auditor', 'analyst', 'node']);
    const bound = async (token: string) => (await as(token, `/v1/studies/${studyId}/privacy`)).body.bound.clientLevel;
    expect(await bound(ADMIN)).toMatchObject({ epsilon: null, figure: 'none', reason: expect.stringMatching(/decrypts/) });
    // The auditor no longer sees norms, but still pooled validation metrics whose noise covers one row, not a node: no bound, for that reason only.
    const auditorBound = await bound(auditor);
    expect(auditorBound).toMatchObject({ epsilon: null, figure: 'none', reason: expect.stringMatching(/validation metrics pooled from each node's noised histograms/) });
    expect(auditorBound.reason).not.toMatch(/norm/);
    const seenBy = (reader: string) => report.readers.find((r: { reader: string }) => r.reader === reader).sees.map((s: { id: string }) => s.id);
    expect(seenBy('admin')).toContain('node-update-norms');
    for (const reader of ['auditor', 'analyst', 'node']) expect(seenBy(reader)).not.toContain('node-update-norms');
    const analystBound = await bound(analyst);
    expect(analystBound).toMatchObject({ epsilon: null, figure: 'none' });
    expect(analystBound.reason).toMatch(/validation metrics pooled from each node's noised histograms/);
    expect(analystBound.reason).not.toMatch(/norm/);
    const nodeReport = (await h.nodeGet(sampled, `/v1/studies/${studyId}/privacy`)).body;
    expect(nodeReport.bound.clientLevel).toMatchObject({ figure: 'amplified', epsilon: report.epsilons.amplified });
    expect(nodeReport.nodes.map((n: { nodeId: string }) => n.nodeId)).toEqual([sampled.nodeId]);
    expect(nodeReport.readers).toHaveLength(1);
    const analystReport = (await as(analyst, `/v1/studies/${studyId}/privacy`)).body;
    expect(analystReport.nodes).toEqual([]);
    expect((await as(analyst, `/v1/studies/${studyId}/privacy?reader=all`)).status).toBe(403);

    // The same through the CLI: each person's own bound, and every reader's for the auditor.
    await withServer(h, async (url) => {
      const cli = (token: string, ...more: string[]) => runCli(['privacy', 'report', '--coordinator', url, '--token', token, '--study', studyId, ...more]);
      const admin = await cli(ADMIN);
      expect(admin.code).toBe(0);
      expect(admin.stdout).toMatch(/against you \(admin\):\n {4}client-level \(a whole node\): no bound: this reader sees every node's update as it arrives/);
      const aud = await cli(auditor);
      expect(aud.stdout).toMatch(/against you \(auditor\):\n {4}client-level \(a whole node\): no bound: this reader sees validation metrics pooled from each node's noised histograms/);
      const ana = await cli(analyst);
      expect(ana.stdout).toMatch(/against you \(analyst\):\n {4}client-level \(a whole node\): no bound: this reader sees validation metrics pooled/);
      const all = await cli(auditor, '--reader', 'all');
      expect(all.stdout).toMatch(new RegExp(`against node:\\n {4}client-level \\(a whole node\\): epsilon ${report.epsilons.amplified.toFixed(4)} at delta 0.00001 \\(amplified\\)`));
      expect(all.stdout).toMatch(/record-level \(one row, DP-SGD\): not run in this study/);
      const json = JSON.parse((await cli(analyst, '--json')).stdout);
      expect(json.bound.reader).toBe('analyst');
      expect((await cli(analyst, '--reader', 'all')).code).toBe(1);
    });
  });

  run('at q = 1 the analyst sees the round counts again (nothing to hide about the sample)', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, privacy: { accountant: 'rdp', delta: 1e-5, central: central(1) } }));
    const a = await h.enroll(studyId, 'a', true, 'eu');
    const b = await h.enroll(studyId, 'b', true, 'eu');
    expect(await playRound(h, studyId, 1, [a, b])).toBe(true);
    const { analyst } = await tokens(h);
    const r = (await h.admin('get', `/v1/studies/${studyId}`).set('authorization', `Bearer ${analyst}`)).body.rounds[0];
    expect(r.updatesReceived).toBe(2);
    expect(r.hidden).toBeUndefined();
  });

  run('a study without DP prints "no differential privacy" (dp: false), never epsilon 0, to every role', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
    const a = await h.enroll(studyId, 'a', true, 'eu');
    const b = await h.enroll(studyId, 'b', true, 'eu');
    expect(await playRound(h, studyId, 1, [a, b], false)).toBe(true);
    const { auditor, analyst } = await tokens(h);
    const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
    expect(report.dp).toBe(false);
    expect(report.bound).toEqual({ reader: 'admin', clientLevel: null, recordLevel: null });
    await withServer(h, async (url) => {
      for (const token of [ADMIN, auditor, analyst]) {
        const { code, stdout } = await runCli(['privacy', 'report', '--coordinator', url, '--token', token, '--study', studyId]);
        expect(code).toBe(0);
        expect(stdout).toMatch(/no differential privacy/);
        expect(stdout).not.toMatch(/epsilon 0/);
        expect(stdout).not.toMatch(/epsilon \d/);
      }
      const json = JSON.parse((await runCli(['privacy', 'report', '--coordinator', url, '--token', analyst, '--study', studyId, '--json'])).stdout);
      expect(json.dp).toBe(false);
    });
  });

  run('a study stopped by its budget prints its stop reason', async (h) => {
    const eps = (n: number) => computeEpsilon({ q: 1, sigma: Z, steps: n, delta: 1e-5 }, 'rdp');
    const studyId = await h.createStudy(tinyStudy({ rounds: 5, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central: central(1) } }));
    const a = await h.enroll(studyId, 'a', true, 'eu');
    const b = await h.enroll(studyId, 'b', true, 'eu');
    expect(await playRound(h, studyId, 1, [a, b])).toBe(true);
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.state === 'stopped' ? true : undefined));
    await withServer(h, async (url) => {
      const { code, stdout } = await runCli(['privacy', 'report', '--coordinator', url, '--token', ADMIN, '--study', studyId]);
      expect(code).toBe(0);
      expect(stdout).toMatch(/^study \S+: stopped: privacy budget: round 2 would bring the study to epsilon/);
      expect(stdout).toMatch(new RegExp(`client-level epsilon ${eps(1).toFixed(4)} of`));
    });
  });

  run('delta below 1/n: study creation refuses delta >= 1/nodes; DP-SGD refuses a ready node whose rows n have delta >= 1/n', async (h) => {
    const refused = await h.admin('post', '/v1/studies').send(tinyStudy({ minNodesPerRound: 4, privacy: { accountant: 'rdp', delta: 0.25, central: central(1) } }));
    expect(refused.status).toBe(400);
    expect(refused.body.error.field).toBe('body.privacy.delta');
    expect(refused.body.error.message).toMatch(/delta 0.25 is not below 1\/4 \(the 4 nodes this study needs/);
    expect((await h.admin('post', '/v1/studies').send(tinyStudy({ minNodesPerRound: 4, privacy: { accountant: 'rdp', delta: 0.2, central: central(1) } }))).status).toBe(201);
    // status.data declared public: the node tells its rows in its ready status (outside the epsilon, on purpose here).
    const studyId = await h.createStudy(tinyStudy({ privacy: { accountant: 'rdp', delta: 0.01, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 }, publicFields: ['status.data'] } }));
    // delta < 1/n: the larger the node, the smaller delta must be (n < 1/delta = 100).
    const node = await h.enroll(studyId, 'large', false);
    const data = (rows: number) => ({ rows, missingFilled: {}, unseenCategories: {} });
    const large = await h.nodePost(node, '/v1/nodes/me/status', { state: 'ready', data: data(100) });
    expect(large.status).toBe(400);
    expect(large.body.error.code).toBe('DELTA_TOO_LARGE');
    expect(large.body.error.message).toMatch(/delta 0.01 is not below 1\/100 \(this node's 100 rows\)/);
    expect((await h.nodePost(node, '/v1/nodes/me/status', { state: 'ready', data: data(99) })).status).toBe(204);
  });

  run('study creation warns, with the numbers, when client-level noise swamps the federation', async (h) => {
    const res = await h.admin('post', '/v1/studies').send(tinyStudy({ minNodesPerRound: 10, privacy: { accountant: 'rdp', delta: 1e-5, central: central(1) } }));
    expect(res.status).toBe(201);
    // tinyStudy: 7 features + bias = 8 parameters; z C sqrt(d) / nodes = 2 x 1 x sqrt(8) / 10 = 0.57 < 1: no warning.
    expect(res.body.warnings).toBeUndefined();
    const few = await h.admin('post', '/v1/studies').send(tinyStudy({ minNodesPerRound: 2, privacy: { accountant: 'rdp', delta: 1e-5, central: central(1) } }));
    expect(few.body.warnings).toEqual([expect.stringMatching(/^client-level DP: noise norm per round 2\.8 against a signal of at most 1\.0 .*the model will not learn with 2 nodes.*use record-level DP \(DP-SGD\) for few partners/)]);
  });
});
