import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openDatabase } from '../../coordinator/db/database.ts';
import { generateIdentity, loadPrivateKey, signRequest } from '../../protocols/crypto/index.ts';
import { backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { CHURN, churnStudy, coordinatorProcess, nodeProcess, stallingProxy, type CoordinatorProcess } from '../helpers/federation.ts';
import type { RunningProcess } from '../helpers/processes.ts';

type Database = Awaited<ReturnType<DatabaseBackend['create']>>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const accepted = (c: CoordinatorProcess, round: number) => c.all.flatMap((p) => p.logs).filter((l) => l.msg === 'update accepted' && l.round === round);

interface FederationRun {
  /** sha256 of every published model, by version (0 = the initial model). */
  models: string[];
  /** Accepted updates per round, as stored, and as audited. */
  updates: number[];
  audited: number[];
  /** What the fault did, for the assertions. */
  notes: Record<string, unknown>;
}

/**
 * One study of 2 rounds between a coordinator process and three node processes, crash-free or
 * with two faults (one run for both: process start-up is most of the cost on a small machine):
 * in round 1 one node's upload is stalled mid-body by a proxy, that node SIGKILLed and restarted
 * from its state directory; in round 2 the coordinator is SIGKILLed once it has accepted the
 * first update, and restarted on the same port and database.
 */
async function runFederation(backend: DatabaseBackend, fault: 'none' | 'faults'): Promise<FederationRun> {
  const dir = mkdtempSync(join(tmpdir(), `fedmark-faults-${fault}-`));
  const database = await backend.create();
  const coordinator = await coordinatorProcess(dir, database);
  const nodes: RunningProcess[] = [];
  const notes: Record<string, unknown> = {};
  let proxy: Awaited<ReturnType<typeof stallingProxy>> | undefined;
  try {
    await coordinator.start();
    const { config, regions } = churnStudy(dir);
    const study = await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
    if (fault === 'faults') proxy = await stallingProxy(coordinator, /^POST \/v1\/studies\/[^ ]+\/updates[ ?]/m);
    const started: Array<{ token: string; csv: string; url: string }> = [];
    for (const [i, { region, csv }] of regions.entries()) {
      const { token } = await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
      // The last node talks through the proxy (when there is one).
      const url = proxy && i === regions.length - 1 ? proxy.url : coordinator.url;
      started.push({ token, csv, url });
      nodes.push(nodeProcess(url, token, csv));
    }
    if (fault === 'faults') {
      await killMidUpload(coordinator, proxy!, nodes, started[started.length - 1], notes);
      await coordinator.current.waitForLog((l) => l.msg === 'update accepted' && l.round === 2, 180_000);
      await coordinator.kill();
      notes.acceptedBeforeKill = accepted(coordinator, 2).length;
      notes.aggregatedBeforeKill = coordinator.current.logs.some((l) => l.msg === 'round aggregated' && l.round === 2);
      const restarted = await coordinator.start();
      notes.resumed = restarted.logs.find((l) => l.msg === 'resumed open round')?.round;
    }
    await completed(coordinator, study.id, nodes);
    await Promise.all([...nodes, ...coordinator.all].map((p) => p.stop()));
    return { ...(await stored(database, study.id)), notes };
  } finally {
    await Promise.all([...nodes, ...coordinator.all].map((p) => p.stop()));
    await proxy?.close();
    await database.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The stalled upload: nothing of it is stored; the node is SIGKILLed and started again. */
async function killMidUpload(coordinator: CoordinatorProcess, proxy: { stalled: Promise<void> }, nodes: RunningProcess[], victim: { token: string; csv: string; url: string }, notes: Record<string, unknown>) {
  await proxy.stalled;
  // The coordinator holds a request whose body will never finish.
  await sleep(500);
  const node = nodes[nodes.length - 1];
  notes.acceptedWhileStalled = accepted(coordinator, 1).length;
  node.child.kill('SIGKILL');
  await node.exited;
  notes.victimUploadsBeforeKill = node.logs.filter((l) => l.msg === 'sent model update').length;
  const restarted = nodeProcess(victim.url, victim.token, victim.csv);
  nodes.push(restarted);
  await restarted.waitForLog((l) => l.msg === 'sent model update', 120_000);
}

async function completed(coordinator: CoordinatorProcess, studyId: string, nodes: RunningProcess[]) {
  const end = Date.now() + 300_000;
  let status: { state: string; rounds: unknown[] } | undefined;
  while (Date.now() < end) {
    status = await (await coordinator.api(`/v1/studies/${studyId}`)).json();
    if (status!.state === 'completed') return status;
    await sleep(300);
  }
  // What each process said last: enough to tell a slow machine from a refusal.
  const tail = (p: RunningProcess) => [...p.logs.slice(-6).map((l) => `${l.msg} ${JSON.stringify(l.reason ?? l.err ?? l.round ?? '')}`), `exit ${p.child.exitCode ?? p.child.signalCode}`, ...p.stderr.slice(-3)];
  throw new Error(`study ${studyId} did not complete: ${JSON.stringify(status)}\ncoordinator: ${tail(coordinator.current).join(' | ')}\n${nodes.map((n) => `node: ${tail(n).join(' | ')}`).join('\n')}`);
}

/** What the coordinator stored, read with nothing else connected (PGlite is single-user). */
async function stored(database: Database, studyId: string) {
  const opened = await openDatabase({ databaseUrl: database.databaseUrl, dataDir: database.dataDir });
  try {
    const models = await opened.db.selectFrom('models').select(['version', 'sha256']).where('study_id', '=', studyId).orderBy('version').execute();
    const updates = await opened.db.selectFrom('updates').select('round').where('study_id', '=', studyId).execute();
    const audit = await opened.db.selectFrom('audit_log').select('round').where('study_id', '=', studyId).where('kind', '=', 'update.received').execute();
    const perRound = (rows: Array<{ round: number | null }>) => [1, 2].map((r) => rows.filter((x) => x.round === r).length);
    return { models: models.map((m) => m.sha256), updates: perRound(updates), audited: perRound(audit) };
  } finally {
    await opened.db.destroy();
  }
}

/**
 * Items 2 and 9 of issue 11, between real processes: a coordinator SIGKILLed mid-round, a node
 * SIGKILLed mid-upload, and (PostgreSQL) the database gone across a deadline. Every model is
 * compared with a crash-free run of the same study: node training is seeded (study seed + round)
 * and FedAvg sums in float64, so the same updates give the same bytes whatever the backend.
 */
describe('faults between real processes', () => {
  const backends: Partial<Record<'pglite' | 'postgres', DatabaseBackend>> = {};
  // The crash-free run starts before the first test and runs beside the outage test (which is
  // mostly waiting for its deadline); the faulty runs follow one at a time (side by side, their
  // process start-ups starved each other on 2 busy cores).
  let referenceRun: Promise<FederationRun> | undefined;
  const reference = () => (referenceRun ??= runFederation(backends.pglite!, 'none'));

  beforeAll(async () => {
    backends.pglite = await backendOrSkip('pglite');
    backends.postgres = await backendOrSkip('postgres');
    if (existsSync(CHURN)) reference().catch(() => {}); // awaited by the tests that need it
  });

  // First: it runs while the reference federation runs.
  it('PostgreSQL unreachable across the fit deadline: the round still closes soon after recovery, with no request arriving', async (ctx) => {
    if (!backends.postgres) return ctx.skip();
    await databaseOutageAcrossDeadline(backends.postgres);
  }, 180_000);

  it('the crash-free reference run publishes 3 models from 3 updates a round', async (ctx) => {
    if (!existsSync(CHURN)) return ctx.skip();
    const run = await reference();
    expect(run.models).toHaveLength(3);
    expect(run.updates).toEqual([3, 3]);
  }, 400_000);

  for (const name of ['pglite', 'postgres'] as const) {
    it(`on ${name}: a node SIGKILLed mid-upload retries after its restart and counts once; the coordinator SIGKILLed after 1 of 3 updates of round 2 resumes; every model is bit-identical to the crash-free run`, async (ctx) => {
      if (!existsSync(CHURN) || !backends[name]) return ctx.skip();
      const run = await runFederation(backends[name]!, 'faults');
      // The stalled upload was not accepted (at most the two other nodes' were), and the node
      // had not seen it succeed.
      expect(run.notes.acceptedWhileStalled as number).toBeLessThanOrEqual(2);
      expect(run.notes.victimUploadsBeforeKill).toBe(0);
      expect(run.notes.aggregatedBeforeKill).toBe(false);
      expect(run.notes.acceptedBeforeKill as number).toBeLessThan(3);
      expect(run.notes.resumed).toBe(2);
      // Each node's update once per round, stored and audited.
      expect(run.updates).toEqual([3, 3]);
      expect(run.audited).toEqual([3, 3]);
      expect(run.models).toEqual((await reference()).models);
    }, 400_000);
  }
});

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A node enrolled and reported ready by hand (signed requests), so no node process polls. */
async function readyNode(c: CoordinatorProcess, studyId: string, name: string) {
  const passphrase = 'fault-tests-node-passphrase';
  const identity = await generateIdentity({ name, passphrase });
  const privateKey = await loadPrivateKey(identity.privateKeyArmored, passphrase);
  const { token } = await (await c.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId, nodeName: name, region: 'eu', jurisdiction: 'US-CA-CCPA' }) })).json();
  const enrolled = await fetch(`${c.url}/v1/nodes/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, publicKey: identity.publicKeyArmored, jurisdiction: 'US-CA-CCPA' }) });
  expect(enrolled.status).toBe(201);
  const { apiKey } = await enrolled.json();
  const body = new TextEncoder().encode(JSON.stringify({ state: 'ready' }));
  const signature = await signRequest({ privateKey, method: 'post', path: '/v1/nodes/me/status', body });
  const res = await fetch(`${c.url}/v1/nodes/me/status`, { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...(signature as unknown as Record<string, string>) }, body });
  expect(res.status).toBe(204);
}

/**
 * The coordinator's database refuses every connection from 4 s before the fit deadline of a
 * round that waits for two nodes that never send anything, to 6 s after it: the deadline
 * transition fails. With the periodic sweep turned off, only the retry of the failed transition
 * can close the round; it must within 30 s of the database coming back, though nothing else
 * reaches the coordinator.
 */
async function databaseOutageAcrossDeadline(backend: DatabaseBackend) {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-faults-outage-'));
  const database = await backend.create();
  const name = new URL(database.databaseUrl!).pathname.slice(1);
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const coordinator = await coordinatorProcess(dir, database, { FEDMARK_DEADLINE_SWEEP_SECONDS: '0' });
  try {
    await coordinator.start();
    const { config } = churnStudy(dir, { rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 10 });
    const study = await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
    await readyNode(coordinator, study.id, 'a');
    await readyNode(coordinator, study.id, 'b');
    const started = await coordinator.current.waitForLog((l) => l.msg === 'round started' && l.round === 1, 30_000);
    const deadline = new Date(String(started.deadline)).getTime();
    await sleep(deadline - 4000 - Date.now());
    await admin.query(`alter database ${name} allow_connections false`);
    await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
    await sleep(deadline + 6000 - Date.now());
    const stillOpen = !coordinator.current.logs.some((l) => l.msg === 'round failed' || l.msg === 'round aggregated');
    const failedDuringOutage = coordinator.current.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('round transition failed'));
    await admin.query(`alter database ${name} allow_connections true`);
    const recovered = Date.now();
    const closed = await coordinator.current.waitForLog((l) => l.msg === 'round failed' && l.round === 1, 30_000);
    const closedAfterMs = Date.now() - recovered;
    console.info(`[faults] database outage across the deadline: the round closed ${closedAfterMs} ms after recovery`);
    expect(stillOpen).toBe(true);
    expect(failedDuringOutage).toBe(true);
    expect(String(closed.reason)).toMatch(/only 0 of 2 nodes reported by the deadline/);
    const status = await (await coordinator.api(`/v1/studies/${study.id}`)).json();
    expect(status.rounds[0].phase).toBe('failed');
  } finally {
    await admin.query(`alter database ${name} allow_connections true`).catch(() => {});
    await admin.end();
    await Promise.all(coordinator.all.map((p) => p.stop()));
    await database.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}
