import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RELEASE_FIELDS, StudyStatus, type StudyConfigInput } from '../../protocols/messages.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { churnStudy, freePort } from '../helpers/federation.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

/** A TCP proxy that passes everything through and records every byte a node sends. */
async function recordingProxy(target: { port: number }): Promise<{ url: string; sent: () => Buffer; close(): Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => {
      chunks.push(Buffer.from(chunk));
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', closeBoth).on('error', closeBoth);
    upstream.on('close', closeBoth).on('error', closeBoth);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    sent: () => Buffer.concat(chunks),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The JSON bodies of the evaluation requests in a recorded byte stream (HTTP/1.1, Content-Length). */
function evaluationBodies(stream: Buffer): Array<{ round: number; body: Record<string, unknown> }> {
  const text = stream.toString('latin1');
  const found: Array<{ round: number; body: Record<string, unknown> }> = [];
  const head = /POST \/v1\/studies\/[^/\s]+\/rounds\/(\d+)\/evaluations HTTP\/1\.1\r\n/g;
  for (let m = head.exec(text); m; m = head.exec(text)) {
    const end = text.indexOf('\r\n\r\n', m.index);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(m.index, end))![1]);
    found.push({ round: Number(m[1]), body: JSON.parse(stream.subarray(end + 4, end + 4 + length).toString('utf8')) });
  }
  return found;
}

/** A coordinator process on a PGlite folder, waited for longer than the fault helper's 180 s (a loaded CI machine). */
async function startCoordinator(dir: string, dataDir: string) {
  const port = await freePort();
  const admin = 'personalize-tests-admin-token-0123456789';
  const process = runFedmark(['coordinator', '--port', String(port), '--data-dir', dataDir], { FEDMARK_ADMIN_TOKEN: admin, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys') });
  await process.waitForLog((l) => l.msg === 'coordinator listening', 480_000);
  const url = `http://127.0.0.1:${port}`;
  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', ...init.headers } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res;
  };
  return { url, port, process, api };
}

const maxAbsDiff = (a: WeightSet, b: WeightSet) => Math.max(...a.flatMap((t, i) => Array.from(t.values, (v, j) => Math.abs(v - b[i].values[j]))));

/**
 * Regional personalization between real processes (issue 9, section 3): a coordinator, and two
 * studies of 3 rounds with two `fedmark node --personalize` nodes each. Study A releases
 * evaluation.personalized (its default list): its last round carries the personalized metrics
 * and the global model's over the same nodes; each node keeps a personalized model file that
 * differs from the global model, and what it sent (recorded by a proxy) has no tensor of it.
 * Study B's release list leaves the field out: its nodes personalize locally and send none.
 */
describe('fedmark node --personalize between real processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-personalize-'));
  const nodes: Array<{ study: 'A' | 'B'; region: string; process: RunningProcess; stateDir: string }> = [];
  let coordinator: Awaited<ReturnType<typeof startCoordinator>> | undefined;
  let proxy: Awaited<ReturnType<typeof recordingProxy>> | undefined;
  let database: { drop(): Promise<void> } | undefined;
  const status: Partial<Record<'A' | 'B', StudyStatus>> = {};
  let finalGlobal: WeightSet | undefined;
  let skipped = false;

  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) {
      skipped = true;
      return;
    }
    const db = await backend.create();
    database = db;
    coordinator = await startCoordinator(dir, db.dataDir ?? join(dir, 'db'));
    proxy = await recordingProxy({ port: coordinator.port });
    const { config, regions } = churnStudy(dir);
    const base: StudyConfigInput = { ...config, training: { localEpochs: 1, learningRate: 0.05 }, rounds: 3, minNodesPerRound: 2, minNodesToStart: 2 };
    const studies = {
      A: { ...base, name: 'personalize-A' },
      B: { ...base, name: 'personalize-B', release: RELEASE_FIELDS.filter((f) => f !== 'evaluation.personalized') },
    };
    const ids: Record<string, string> = {};
    for (const [name, study] of Object.entries(studies) as Array<['A' | 'B', StudyConfigInput]>) {
      ids[name] = (await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(study) })).json()).id;
      // A: area codes 408 and 415 (408 through the recording proxy); B: 415 and 510.
      for (const { region, csv } of name === 'A' ? regions.slice(0, 2) : regions.slice(1)) {
        const { token } = await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: ids[name], nodeName: region, region }) })).json();
        const stateDir = join(dir, `${name}-${region}`);
        const url = name === 'A' && region === regions[0].region ? proxy.url : coordinator.url;
        const process = runFedmark(['node', '--coordinator', url, '--token', token, '--data', csv, '--state-dir', stateDir, '--backend', 'wasm', '--personalize', '--personalize-epochs', '5']);
        nodes.push({ study: name, region, process, stateDir });
      }
    }
    const codes = await Promise.all(nodes.map((n) => n.process.exited));
    if (codes.some((c) => c !== 0)) {
      const why = nodes.map((n, i) => `${n.study}/${n.region} exit ${codes[i]}: ${n.process.stderr.slice(-3).join(' | ')} ${JSON.stringify(n.process.logs.filter((l) => Number(l.level) >= 40).slice(-3))}`);
      throw new Error(`a node failed:\n${why.join('\n')}`);
    }
    for (const name of ['A', 'B'] as const) status[name] = StudyStatus.parse(await (await coordinator.api(`/v1/studies/${ids[name]}`)).json());
    finalGlobal = decodeWeights(new Uint8Array(await (await coordinator.api(`/v1/studies/${ids.A}/models/3`)).arrayBuffer()));
  }, 1_200_000);

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.process.stop()));
    await proxy?.close();
    await coordinator?.process.stop();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const kept = (study: 'A' | 'B') =>
    nodes.filter((n) => n.study === study).map((n) => ({ ...n, line: n.process.logs.find((l) => l.msg === 'personalized model kept on this node (never sent)') }));

  it("study A's last round carries the personalized metrics of both nodes and the global model's over the same nodes", (ctx) => {
    if (skipped) return ctx.skip();
    const rounds = status.A!.rounds;
    expect(rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    const last = rounds[2];
    expect(last.personalizedNodes).toBe(2);
    expect(last.personalizedMetrics!.auc).toBeGreaterThan(0.5);
    expect(last.personalizedMetrics!.auc).toBeLessThanOrEqual(1);
    expect(last.personalizedMetrics!.n).toBe(last.validationMetrics!.n);
    // Both nodes sent, so the global model over the same nodes is the round's validation.
    expect(last.globalOnPersonalizedMetrics).toEqual(last.validationMetrics);
    for (const r of rounds.slice(0, 2)) expect([r.personalizedNodes, r.personalizedMetrics, r.globalOnPersonalizedMetrics]).toEqual([0, null, null]);
  });

  it('each node keeps its personalized model in a local file that differs from the final global model', (ctx) => {
    if (skipped) return ctx.skip();
    for (const n of kept('A')) {
      const path = String(n.line?.path);
      expect(path.startsWith(join(n.stateDir, 'personalized'))).toBe(true);
      expect(existsSync(path)).toBe(true);
      const personal = decodeWeights(new Uint8Array(readFileSync(path)));
      expect(personal.map((t) => t.name)).toEqual(finalGlobal!.map((t) => t.name));
      expect(maxAbsDiff(personal, finalGlobal!)).toBeGreaterThan(1e-4);
      expect(n.line!.released).toBe(true);
      expect(typeof (n.line!.personalizedMetrics as Record<string, unknown>).auc).toBe('number');
    }
  });

  it('what the node sent carries no personalized tensor: the evaluation body has only counts and statistics', (ctx) => {
    if (skipped) return ctx.skip();
    const sent = proxy!.sent();
    const bodies = evaluationBodies(sent);
    expect(bodies.map((b) => b.round)).toEqual([1, 2, 3]);
    for (const { round, body } of bodies) {
      expect(Object.keys(body).sort()).toEqual(round === 3 ? ['loss', 'numExamples', 'personalized', 'stats'] : ['loss', 'numExamples', 'stats']);
    }
    const personalized = bodies[2].body.personalized as Record<string, unknown>;
    expect(Object.keys(personalized).sort()).toEqual(['numExamples', 'stats']);
    expect(Object.keys(personalized.stats as object).sort()).toEqual(['brierSum', 'histogram', 'kind', 'logLossSum']);
    // No tensor of the personalized model in any byte sent, raw or base64.
    const node = kept('A').find((n) => n.region === 'area_code_408')!;
    const file = readFileSync(String(node.line!.path));
    for (const t of decodeWeights(new Uint8Array(file))) {
      const raw = Buffer.from(t.values.buffer, t.values.byteOffset, Math.min(t.values.byteLength, 64));
      expect(sent.includes(raw)).toBe(false);
      expect(sent.includes(Buffer.from(raw.toString('base64')))).toBe(false);
    }
  });

  it('a study whose release list leaves out evaluation.personalized gets none; its nodes keep the model and say why', (ctx) => {
    if (skipped) return ctx.skip();
    const last = status.B!.rounds[2];
    expect(last.phase).toBe('completed');
    expect([last.personalizedNodes, last.personalizedMetrics, last.globalOnPersonalizedMetrics]).toEqual([0, null, null]);
    for (const n of kept('B')) {
      expect(existsSync(String(n.line?.path))).toBe(true);
      expect(n.line!.released).toBe(false);
      const why = n.process.logs.find((l) => l.msg === 'personalized statistics not sent');
      expect(String(why?.reason)).toMatch(/does not name evaluation\.personalized/);
    }
  });
});
