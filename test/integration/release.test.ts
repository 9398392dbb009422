import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { defaultRelease, DP_UPDATE_COUNT, RELEASE_FIELDS, RELEASE_UNDER_DP, REQUIRED_RELEASE, StudyStatus, UPDATE_META_HEADER, type ReleaseField } from '../../protocols/messages.ts';
import { statsRows } from '../../protocols/model-kinds/kind.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { SIGNATURE_HEADER_NAMES } from '../../protocols/crypto/request-signing.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const ADMIN = 'release-test-admin-token-0123456789';

/** The study's declared release: the required fields and a few optional ones; no loss, no data counts. */
const RELEASE: ReleaseField[] = [...REQUIRED_RELEASE, 'update.steps', 'update.trainSeconds', 'evaluation.loss'];
const WITHHELD: ReleaseField[] = RELEASE_FIELDS.filter((f) => !RELEASE.includes(f));

interface Recorded {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  status: number;
  response: Buffer;
}

/** A proxy between the nodes and the coordinator that forwards every request and records it. */
function recordingProxy(target: string) {
  const upstream = new URL(target);
  const recorded: Recorded[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        const reply: Buffer[] = [];
        up.on('data', (c: Buffer) => reply.push(c));
        up.on('end', () => {
          const response = Buffer.concat(reply);
          recorded.push({ method: req.method!, path: req.url!, headers: req.headers, body, status: up.statusCode!, response });
          const headers = { ...up.headers, 'content-length': String(response.length) };
          delete headers['transfer-encoding'];
          res.writeHead(up.statusCode!, headers);
          res.end(response);
        });
      });
      out.on('error', () => res.destroy());
      out.end(body);
    });
  });
  return new Promise<{ server: Server; url: string; recorded: Recorded[] }>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, recorded })),
  );
}

/** Headers of transport and authentication: they say who is asking, nothing about the data. */
const TRANSPORT_HEADERS = new Set(['host', 'connection', 'content-type', 'content-length', 'authorization', 'accept', 'accept-encoding', 'accept-language', 'user-agent', 'sec-fetch-mode', 'transfer-encoding', ...SIGNATURE_HEADER_NAMES]);

/**
 * What one node request carries, field by field, as RELEASE_FIELDS names ('protocol' for what is
 * not about the node's data: enrollment, its state and the words for it), and anything this test
 * cannot place, which is a failure as much as a withheld field.
 */
function classify(r: Recorded): { released: ReleaseField[]; unplaced: string[] } {
  const released: ReleaseField[] = [];
  const unplaced: string[] = [];
  const where = `${r.method} ${r.path.replace(/\?.*/, '')}`;
  const name = (prefix: string, key: string) => {
    const field = `${prefix}.${key}`;
    if ((RELEASE_FIELDS as readonly string[]).includes(field)) released.push(field as ReleaseField);
    else unplaced.push(`${where}: ${field}`);
  };
  const json = () => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
  for (const header of Object.keys(r.headers)) if (!TRANSPORT_HEADERS.has(header) && header !== UPDATE_META_HEADER) unplaced.push(`${where}: header ${header}`);
  if (r.method === 'GET') {
    if (r.body.length > 0) unplaced.push(`${where}: a body`);
  } else if (where === 'POST /v1/nodes/enroll') {
    for (const key of Object.keys(json())) if (!['token', 'publicKey', 'jurisdiction'].includes(key)) unplaced.push(`${where}: ${key}`);
  } else if (where === 'POST /v1/nodes/me/status') {
    for (const key of Object.keys(json())) {
      if (key === 'state' || key === 'message') continue;
      name('status', key);
    }
  } else if (/^POST \/v1\/studies\/[^/]+\/rounds\/\d+\/updates$/.test(where)) {
    // The body is the sealed weights: an OpenPGP message, not a readable weights file.
    if (r.body.length > 0) released.push('update.weights');
    expect(() => decodeWeights(new Uint8Array(r.body))).toThrow();
    const header = r.headers[UPDATE_META_HEADER];
    if (typeof header !== 'string') unplaced.push(`${where}: no ${UPDATE_META_HEADER} header`);
    else for (const key of Object.keys(JSON.parse(header) as object)) name('update', key);
  } else if (/^POST \/v1\/studies\/[^/]+\/rounds\/\d+\/evaluations$/.test(where)) {
    for (const key of Object.keys(json())) name('evaluation', key);
  } else {
    unplaced.push(`${where}: an unknown request`);
  }
  return { released, unplaced };
}

/**
 * Everything the nodes send, read off the wire: a real coordinator process and three real node
 * processes, pointed at a recording proxy. Each field of each request is named by its release
 * (RELEASE_FIELDS); the study declares a list without the training loss and the data counts, and
 * none of them may appear.
 */
describe('what leaves a node is what the study declared (release list), on the wire', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-release-'));
  const processes: RunningProcess[] = [];
  let proxy: Awaited<ReturnType<typeof recordingProxy>> | undefined;
  let drop: (() => Promise<void>) | undefined;
  let status: StudyStatus | undefined;
  let url = '';

  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res;
  };

  beforeAll(async () => {
    const database = await (await backendOrSkip('pglite'))!.create();
    drop = database.drop;
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', database.dataDir!], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys') });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);
    proxy = await recordingProxy(url);

    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const areaCol = table.header.indexOf('area_code');
    const regions = ['area_code_408', 'area_code_415', 'area_code_510'];
    const study = await (
      await api('/v1/studies', {
        method: 'POST',
        body: JSON.stringify({ name: 'release', model: { kind: 'logreg' }, features: spec, release: RELEASE, training: { localEpochs: 1, learningRate: 0.02 }, rounds: 2, minNodesPerRound: 3, roundDeadlineSeconds: 120 }),
      })
    ).json();
    for (const region of regions) {
      const nodeDir = join(dir, region);
      mkdirSync(nodeDir, { recursive: true });
      writeCsvTable(join(nodeDir, 'data.csv'), table.header, table.rows.filter((r) => r[areaCol] === region));
      const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
      processes.push(runFedmark(['node', '--coordinator', proxy.url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'wasm']));
    }
    for (;;) {
      status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // Every node exits once it sees the study completed: nothing it sends is missed.
    for (const node of processes.slice(1)) expect(await node.exited).toBe(0);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    proxy?.server.close();
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the study through the proxy: every round completed with all three nodes', () => {
    expect(status!.rounds.map((r) => r.phase)).toEqual(['completed', 'completed']);
    for (const r of status!.rounds) expect(r.updatesReceived).toBe(3);
    const posts = proxy!.recorded.filter((r) => r.method === 'POST');
    expect(posts.filter((r) => r.path.replace(/\?.*/, '').endsWith('/updates') && r.status < 300)).toHaveLength(6);
    expect(posts.filter((r) => r.path.endsWith('/evaluations') && r.status < 300).length).toBeGreaterThanOrEqual(3);
    expect(posts.filter((r) => r.path === '/v1/nodes/me/status').length).toBeGreaterThanOrEqual(3);
  });

  it('shows the nodes the release list with the study (GET /v1/nodes/me/study)', () => {
    const reads = proxy!.recorded.filter((r) => r.method === 'GET' && r.path === '/v1/nodes/me/study' && r.status === 200);
    expect(reads.length).toBeGreaterThanOrEqual(3);
    for (const read of reads) expect(JSON.parse(read.response.toString('utf8')).config.release).toEqual(RELEASE);
  });

  it('sends no field that is not on the release list, and none this test cannot place', () => {
    const offending: string[] = [];
    const seen = new Set<ReleaseField>();
    for (const r of proxy!.recorded) {
      const { released, unplaced } = classify(r);
      offending.push(...unplaced);
      for (const field of released) {
        seen.add(field);
        if (!RELEASE.includes(field)) offending.push(`${r.method} ${r.path}: ${field} is not on the study's release list`);
      }
    }
    expect([...new Set(offending)]).toEqual([]);
    for (const withheld of WITHHELD) expect(seen.has(withheld)).toBe(false);
    // The declared fields did go out (the test reads the wire it claims to).
    expect([...seen].sort()).toEqual([...RELEASE].sort());
  });
});

/**
 * The same wire under DP (issue 10): a DP-SGD study with the default release list. Every field of
 * every node request is named by its release and each must be noised or public
 * (RELEASE_UNDER_DP): the update's count is the constant 1, no loss, steps, seconds or data counts
 * leave, status reports carry no data, and every evaluation is the noised coarse histogram. The
 * noise is checked on the wire: each node's validation rows are the same in both rounds, so exact
 * counts would sum to the same total twice; the noised totals differ, and noised cells go negative.
 */
describe('under DP, what leaves a node is noised or public, on the wire', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-release-dp-'));
  const processes: RunningProcess[] = [];
  let proxy: Awaited<ReturnType<typeof recordingProxy>> | undefined;
  let drop: (() => Promise<void>) | undefined;
  let status: StudyStatus | undefined;
  let url = '';
  const ROUNDS = 2;

  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res;
  };
  const posts = (suffix: string) => proxy!.recorded.filter((r) => r.method === 'POST' && r.path.replace(/\?.*/, '').endsWith(suffix) && r.status < 300);

  beforeAll(async () => {
    const database = await (await backendOrSkip('pglite'))!.create();
    drop = database.drop;
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', database.dataDir!], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys') });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);
    proxy = await recordingProxy(url);

    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const areaCol = table.header.indexOf('area_code');
    const regions = ['area_code_408', 'area_code_415', 'area_code_510'];
    // No release list: the DP default (RELEASE_UNDER_DP without the exact fields).
    const privacy = { delta: 1e-5, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05, stepsPerRound: 10, learningRate: 0.5, expectedBatchSize: 32 } };
    const study = await (
      await api('/v1/studies', { method: 'POST', body: JSON.stringify({ name: 'release-dp', model: { kind: 'logreg' }, features: spec, privacy, rounds: ROUNDS, minNodesPerRound: 3, roundDeadlineSeconds: 120 }) })
    ).json();
    for (const region of regions) {
      const nodeDir = join(dir, region);
      mkdirSync(nodeDir, { recursive: true });
      writeCsvTable(join(nodeDir, 'data.csv'), table.header, table.rows.filter((r) => r[areaCol] === region));
      const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
      processes.push(runFedmark(['node', '--coordinator', proxy.url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--ledger-dir', join(nodeDir, 'ledgers'), '--backend', 'wasm']));
    }
    for (;;) {
      status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const node of processes.slice(1)) expect(await node.exited).toBe(0);
  }, 240_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    proxy?.server.close();
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs every round with all three nodes; the study says its evaluation is noised and shows the release list', () => {
    expect(status!.rounds.map((r) => r.phase)).toEqual(Array(ROUNDS).fill('completed'));
    for (const r of status!.rounds) {
      expect(r.updatesReceived).toBe(3);
      // The round's metrics say they come from noised statistics.
      expect(r.validationMetrics?.noised).toBe(1);
    }
    const config = status!.config as StudyStatus['config'] & { evaluation?: string };
    expect(config.evaluation).toBe('noised');
    const reads = proxy!.recorded.filter((r) => r.method === 'GET' && r.path === '/v1/nodes/me/study' && r.status === 200);
    expect(reads.length).toBeGreaterThanOrEqual(3);
    for (const read of reads) expect(JSON.parse(read.response.toString('utf8')).config.release).toEqual(defaultRelease(config.privacy));
  });

  it('every released field is noised or public under DP; nothing exact leaves', () => {
    const offending: string[] = [];
    const seen = new Set<ReleaseField>();
    for (const r of proxy!.recorded) {
      const { released, unplaced } = classify(r);
      offending.push(...unplaced);
      for (const field of released) {
        seen.add(field);
        if (RELEASE_UNDER_DP[field].mechanism === 'exact') offending.push(`${r.method} ${r.path}: ${field} is sent exactly under DP`);
      }
    }
    expect([...new Set(offending)]).toEqual([]);
    expect([...seen].sort()).toEqual(['evaluation.numExamples', 'evaluation.stats', 'update.dpSgd', 'update.numExamples', 'update.weights']);
    // The count beside every update is the public constant, never the node's rows.
    for (const r of posts('/updates')) expect(JSON.parse(r.headers[UPDATE_META_HEADER] as string).numExamples).toBe(DP_UPDATE_COUNT);
  });

  it("every evaluation is the noised histogram (20 bins, std 5), and the noise is on the wire: a node's totals differ between rounds", () => {
    const evaluations = posts('/evaluations');
    expect(evaluations).toHaveLength(3 * ROUNDS);
    const totals = new Map<string, number[]>();
    const cells: number[] = [];
    for (const r of evaluations) {
      const report = JSON.parse(r.body.toString('utf8'));
      expect(Object.keys(report).sort()).toEqual(['numExamples', 'stats']);
      expect(report.stats.noise).toEqual({ mechanism: 'discrete-gaussian', noiseStd: 5 });
      expect(report.stats.histogram.bins).toBe(20);
      expect(report.numExamples).toBe(statsRows(report.stats));
      cells.push(...report.stats.histogram.positives, ...report.stats.histogram.negatives);
      const node = String(r.headers['fedmark-key-fingerprint']);
      totals.set(node, [...(totals.get(node) ?? []), report.numExamples]);
    }
    // Exact counts are never negative; 240 noised cells, many of them empty, are.
    expect(cells.some((c) => c < 0)).toBe(true);
    // The same validation rows each round: exact totals would repeat. Noised (std 5 sqrt(40) = 32), they do not.
    expect(totals.size).toBe(3);
    const repeated = [...totals.values()].filter((t) => t.length === ROUNDS && new Set(t).size === 1);
    expect(repeated.length).toBeLessThan(3);
  });

  it("charges each evaluation to the node's own ledger: one (q 1, z 5, 1 step) entry per evaluation beside DP-SGD's", () => {
    for (const region of ['area_code_408', 'area_code_415', 'area_code_510']) {
      const ledgers = readdirSync(join(dir, region, 'ledgers')).filter((f) => f.endsWith('.jsonl'));
      expect(ledgers).toHaveLength(1);
      const entries = readFileSync(join(dir, region, 'ledgers', ledgers[0]), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const evaluationsCharged = entries.filter((e) => e.samplingRate === 1 && e.noiseMultiplier === 5 && e.steps === 1);
      expect(evaluationsCharged).toHaveLength(ROUNDS);
      expect(entries.filter((e) => e.samplingRate === 0.05 && e.steps === 10)).toHaveLength(ROUNDS);
    }
  });
});

/**
 * The same wire for a regression study under DP: each evaluation is the noised count and sums of
 * clipped residuals (protocols/privacy/noised-regression.ts), never the exact sums of targets and
 * errors; the rounds' metrics are marked noised, with R^2 and the baseline (which need sums of y)
 * left null. The noise is checked on the wire: a node's validation rows are the same every round,
 * so its exact count would repeat; the noised one (std 10) does not, and no report carries sumY.
 */
describe('under DP, a regression study releases noised residual sums, on the wire', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-release-dp-regression-'));
  const processes: RunningProcess[] = [];
  let proxy: Awaited<ReturnType<typeof recordingProxy>> | undefined;
  let drop: (() => Promise<void>) | undefined;
  let status: StudyStatus | undefined;
  let url = '';
  const ROUNDS = 2;
  const REGIONS = ['eu-north', 'cn-north', 'us-central'];
  const VALUE = fileURLToPath(new URL('../../data/customer_value.csv', import.meta.url));

  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res;
  };
  const posts = (suffix: string) => proxy!.recorded.filter((r) => r.method === 'POST' && r.path.replace(/\?.*/, '').endsWith(suffix) && r.status < 300);

  beforeAll(async () => {
    const database = await (await backendOrSkip('pglite'))!.create();
    drop = database.drop;
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', database.dataDir!], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys') });
    processes.push(coordinator);
    // A busy machine (CI, several suites at once) can take more than the default minute to start it.
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening', 180_000)).url);
    proxy = await recordingProxy(url);

    const table = readCsvTable({ path: VALUE });
    const spec = inferFeatureSpec(table, { target: 'spend_12m', exclude: ['customer_id', 'region', 'country'], task: 'regression' });
    const regionCol = table.header.indexOf('region');
    const privacy = { delta: 1e-5, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05, stepsPerRound: 10, learningRate: 0.5, expectedBatchSize: 32 } };
    const study = await (
      await api('/v1/studies', { method: 'POST', body: JSON.stringify({ name: 'release-dp-regression', task: { kind: 'regression' }, model: { kind: 'logreg' }, features: spec, privacy, rounds: ROUNDS, minNodesPerRound: 3, roundDeadlineSeconds: 120 }) })
    ).json();
    for (const region of REGIONS) {
      const nodeDir = join(dir, region);
      mkdirSync(nodeDir, { recursive: true });
      writeCsvTable(join(nodeDir, 'data.csv'), table.header, table.rows.filter((r) => r[regionCol] === region));
      const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region: region.split('-')[0] }) })).json();
      processes.push(runFedmark(['node', '--coordinator', proxy.url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--ledger-dir', join(nodeDir, 'ledgers'), '--backend', 'wasm']));
    }
    for (;;) {
      status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const node of processes.slice(1)) expect(await node.exited).toBe(0);
  }, 480_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    proxy?.server.close();
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('completes every round with noised metrics: RMSE, MAE and bias from the clipped sums, R^2 and the baseline null', () => {
    expect(status!.rounds.map((r) => r.phase)).toEqual(Array(ROUNDS).fill('completed'));
    const clip = 2 * (status!.config.features.target as { scale: number }).scale;
    for (const r of status!.rounds) {
      expect(r.updatesReceived).toBe(3);
      const m = r.validationMetrics!;
      expect(m).toMatchObject({ noised: 1, residualClip: clip, r2: null, baselineRmse: null, baselineMae: null });
      expect(m.n).toBeGreaterThan(0);
      expect(m.rmse).toBeGreaterThanOrEqual(0);
      expect(m.rmse).toBeLessThanOrEqual(clip);
      expect(Math.abs(m.bias!)).toBeLessThanOrEqual(clip);
    }
  });

  it('every released field is noised or public; every evaluation is the noised residual sums, and the noise is on the wire', () => {
    const offending: string[] = [];
    for (const r of proxy!.recorded) {
      const { released, unplaced } = classify(r);
      offending.push(...unplaced);
      for (const field of released) if (RELEASE_UNDER_DP[field].mechanism === 'exact') offending.push(`${r.method} ${r.path}: ${field} is sent exactly under DP`);
    }
    expect([...new Set(offending)]).toEqual([]);
    const evaluations = posts('/evaluations');
    expect(evaluations).toHaveLength(3 * ROUNDS);
    const counts = new Map<string, number[]>();
    let fractional = 0;
    for (const r of evaluations) {
      const report = JSON.parse(r.body.toString('utf8'));
      expect(Object.keys(report).sort()).toEqual(['numExamples', 'stats']);
      expect(Object.keys(report.stats).sort()).toEqual(['kind', 'n', 'noise', 'sae', 'sse', 'sumError'].sort());
      expect(report.stats.noise).toEqual({ mechanism: 'discrete-gaussian', noiseMultiplier: 5, residualClip: 2 * (status!.config.features.target as { scale: number }).scale });
      expect(report.numExamples).toBe(statsRows(report.stats));
      const node = String(r.headers['fedmark-key-fingerprint']);
      counts.set(node, [...(counts.get(node) ?? []), report.stats.n]);
      // The noised count is an integer (the discrete Gaussian, rounded off its grid), never a fraction.
      if (!Number.isInteger(report.stats.n)) fractional++;
    }
    expect(fractional).toBe(0);
    // The same validation rows each round: an exact count would repeat; noised (std 10) it does not, for some node.
    expect(counts.size).toBe(3);
    expect([...counts.values()].filter((c) => c.length === ROUNDS && new Set(c).size === 1).length).toBeLessThan(3);
  });

  it("charges each evaluation to the node's own ledger as (q 1, z 5, 1 step), like the histogram", () => {
    for (const region of REGIONS) {
      const ledgers = readdirSync(join(dir, region, 'ledgers')).filter((f) => f.endsWith('.jsonl'));
      const entries = readFileSync(join(dir, region, 'ledgers', ledgers[0]), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(entries.filter((e) => e.samplingRate === 1 && e.noiseMultiplier === 5 && e.steps === 1)).toHaveLength(ROUNDS);
    }
  });
});
