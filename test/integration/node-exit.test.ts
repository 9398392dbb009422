import '../helpers/isolated-env.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_EXIT_CODES } from '../../client-node/config.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';
import { inProcessCoordinator, tinyStudy, type Harness } from '../coordinator/harness.ts';

const CSV = ['a,b,c,y', ...Array.from({ length: 40 }, (_, i) => `${(i % 7) - 3},${(i % 5) / 2},${'pqr'[i % 3]},${i % 2}`)].join('\n') + '\n';
/** A study no round of which starts in these tests (it waits for 3 nodes). */
const WAITING = { rounds: 1, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 600 };

/**
 * Nodes that fail loudly: real node processes against a coordinator on PostgreSQL (in this
 * process, over HTTP). A study that cannot run for a node (stopped, completed without it, refused
 * by its policy, its enrollment revoked, its privacy ceiling) ends the node with an error log, one
 * plain stderr line and an exit code of its own; a node that trained and sees `completed` exits
 * 0. And a node given a new token with an old state folder joins the token's study.
 */
describe('node exit codes and state folders, on PostgreSQL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-node-exit-'));
  const processes: RunningProcess[] = [];
  let h: Harness | undefined;
  let listening: Server | undefined;
  let url = '';

  beforeAll(async () => {
    const backend = await backendOrSkip('postgres');
    if (!backend) return;
    h = await inProcessCoordinator(backend);
    listening = h.app.listen(0, '127.0.0.1');
    await new Promise((r) => listening!.once('listening', r));
    url = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`;
  }, 120_000);
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    listening?.close();
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function token(studyId: string, nodeName: string, jurisdiction = 'US-CA-CCPA', region = 'eu') {
    const t = await h!.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName, region, jurisdiction });
    expect(t.status, JSON.stringify(t.body)).toBe(201);
    return t.body.token as string;
  }

  /** `fedmark node` with its own CSV and state folder under `dir/<folder>`. */
  function node(folder: string, enrollToken: string | undefined, extra: string[] = []) {
    const nodeDir = join(dir, folder);
    mkdirSync(nodeDir, { recursive: true });
    writeFileSync(join(nodeDir, 'data.csv'), CSV);
    const p = runFedmark(['node', '--coordinator', url, ...(enrollToken ? ['--token', enrollToken] : []), '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'cpu', ...extra]);
    processes.push(p);
    return p;
  }

  /** The node stopped with `code`: its reason logged at error level and printed on stderr as one plain line. */
  async function expectStopped(p: RunningProcess, code: number, reason: RegExp) {
    expect(await p.exited, p.stderr.join('\n')).toBe(code);
    expect(p.stderr).toHaveLength(1);
    expect(p.stderr[0]).toMatch(/^fedmark: /);
    expect(p.stderr[0]).toMatch(reason);
    expect(p.logs.some((l) => l.level === 50 && typeof l.msg === 'string' && reason.test(l.msg))).toBe(true);
  }

  it('a stopped study: the node exits 3 with the stop reason', async (ctx) => {
    if (!h) return ctx.skip();
    const studyId = await h.createStudy(tinyStudy(WAITING));
    const t = await token(studyId, 'late-a');
    expect((await h.admin('post', `/v1/studies/${studyId}/stop`).send({ reason: 'the sponsor cut the budget' })).status).toBe(200);
    await expectStopped(node('reused', t), NODE_EXIT_CODES['study-ended'], new RegExp(`study ${studyId} is stopped: it ended early: the sponsor cut the budget; this node took part in 0 rounds`));
  }, 120_000);

  it('a completed study: nodes that trained exit 0, one that never trained exits 3', async (ctx) => {
    if (!h) return ctx.skip();
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600 }));
    const late = await token(studyId, 'latecomer');
    const trainers = [node('trainer-1', await token(studyId, 'trainer-1')), node('trainer-2', await token(studyId, 'trainer-2'))];
    for (const p of trainers) {
      expect(await p.exited, p.stderr.join('\n')).toBe(0);
      expect(p.logs.some((l) => l.msg === 'sent model update')).toBe(true);
    }
    await expectStopped(node('latecomer', late), NODE_EXIT_CODES['study-ended'], new RegExp(`study ${studyId} completed before this node took part in a round; this node has nothing to do`));
  }, 300_000);

  it("the node's own policy forbids the study: it says so to the coordinator and exits 4 naming the rule", async (ctx) => {
    if (!h) return ctx.skip();
    // The coordinator's EU-GDPR profile no longer demands DP, so it issues the token; the node's
    // built-in profile (the stricter one wins on the node) still does.
    expect((await h.admin('post', '/v1/policies').send({ jurisdiction: 'EU-GDPR', minNodesPerAggregate: 2, dpRequired: false })).status).toBe(201);
    const studyId = await h.createStudy(tinyStudy(WAITING));
    const p = node('gdpr', await token(studyId, 'gdpr', 'EU-GDPR'), ['--jurisdiction', 'EU-GDPR']);
    await expectStopped(p, NODE_EXIT_CODES['policy-refused'], /refusing to train: .*EU-GDPR v2: differential privacy \(central, client-level\) is required \(rule dp-required\)/);
    const status = (await h.admin('get', `/v1/studies/${studyId}`)).body as { nodes: Array<{ name: string; state: string }> };
    expect(status.nodes.find((n) => n.name === 'gdpr')?.state).toBe('policy-refused');
  }, 120_000);

  it('a revoked enrollment: the running node exits 5', async (ctx) => {
    if (!h) return ctx.skip();
    const studyId = await h.createStudy(tinyStudy(WAITING));
    const p = node('revoked', await token(studyId, 'revoked'));
    const enrolled = await p.waitForLog((l) => l.msg === 'enrolled', 120_000);
    await h.until(async () => {
      const s = (await h!.admin('get', `/v1/studies/${studyId}`)).body as { nodes: Array<{ name: string; state: string }> };
      return s.nodes.find((n) => n.name === 'revoked')?.state === 'ready' ? true : undefined;
    }, 120_000);
    expect((await h.admin('post', `/v1/nodes/${String(enrolled.nodeId)}/revoke`).send({ reason: 'partner contract ended' })).status).toBe(200);
    await expectStopped(p, NODE_EXIT_CODES['enrollment-revoked'], /the coordinator no longer accepts this node \(its enrollment was revoked\): .*revoked/);
  }, 180_000);

  it("the node's privacy ceiling refuses the study at its first round: exit 6", async (ctx) => {
    if (!h) return ctx.skip();
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    await h.enroll(studyId, 'peer');
    const p = node('capped', await token(studyId, 'capped'), ['--max-epsilon', '1']);
    await expectStopped(p, NODE_EXIT_CODES['privacy-refused'], new RegExp(`study ${studyId} does not run DP-SGD, so training would spend unbounded epsilon; this node's ceiling is 1; refusing to train \\(before this node's first round\\)`));
  }, 180_000);

  it('an old state folder and a new token: the node joins the new study (the old enrollment archived); a token it cannot use is refused with what to do', async (ctx) => {
    if (!h) return ctx.skip();
    // `reused` holds the enrollment in the study stopped by the first test.
    const stateDir = join(dir, 'reused', 'state');
    const old = JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { nodeId: string; studyId: string };
    const studyId = await h.createStudy(tinyStudy(WAITING));
    const t = await token(studyId, 'reborn');
    const p = node('reused', t);
    await p.waitForLog((l) => l.msg === 'enrolled' && l.studyId === studyId, 120_000);
    await p.stop();
    expect(p.logs.some((l) => l.msg === 'using saved node credentials')).toBe(false);
    expect(JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')).studyId).toBe(studyId);
    expect(JSON.parse(readFileSync(join(stateDir, 'enrollments', old.nodeId, 'credentials.json'), 'utf8')).studyId).toBe(old.studyId);
    const nodes = (await h.admin('get', '/v1/nodes').query({ study: studyId })).body.nodes as Array<{ name: string }>;
    expect(nodes.map((n) => n.name)).toEqual(['reborn']);

    // The partner's unchanged command line (the same token) runs the saved enrollment.
    const again = node('reused', t);
    await again.waitForLog((l) => l.msg === 'using saved node credentials' && l.studyId === studyId, 120_000);
    await again.stop();

    // A token the coordinator does not know: refused, saying what this folder holds and what to do.
    const other = node('reused', 'fmenroll_' + 'x'.repeat(40));
    await expectStopped(other, NODE_EXIT_CODES['enrollment-refused'], new RegExp(`the coordinator refused the enrollment token \\(UNAUTHENTICATED\\): .*This state folder \\(\\S+\\) holds node reborn's enrollment in study ${studyId}, made with another token: to run it, start the node without --token; to join another study, ask the operator for a new token\\.`));
    expect(existsSync(join(stateDir, 'credentials.json'))).toBe(true);
    expect(JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')).studyId).toBe(studyId);
  }, 300_000);
});
