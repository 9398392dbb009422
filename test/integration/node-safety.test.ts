import { listenOnLoopback } from '../helpers/node-proxy.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { NodeConfig } from '../../client-node/config.ts';
import { NodePolicyRequiredError, runNode } from '../../client-node/node-runner.ts';
import { generateIdentity, loadPrivateKey, signArtifact } from '../../protocols/crypto/index.ts';
import { sha256Hex } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';
import { inProcessCoordinator, tinyStudy } from '../coordinator/harness.ts';

interface Exchange {
  method: string;
  url: string;
  at: number;
}
interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A proxy between one node and the coordinator that records every request and may answer it
 * itself (`serve`) or change the coordinator's answer (`rewrite`): the hostile network or
 * coordinator a node must not trust.
 */
function proxy(target: string, hooks: { serve?: (e: Exchange) => Reply | undefined; rewrite?: (e: Exchange, r: Reply) => Reply }) {
  const upstream = new URL(target);
  const recorded: Exchange[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const exchange = { method: req.method!, url: req.url!, at: Date.now() };
      recorded.push(exchange);
      const answer = (r: Reply) => {
        const headers = { ...r.headers, 'content-length': String(r.body.length) };
        delete headers['transfer-encoding'];
        res.writeHead(r.status, headers);
        res.end(r.body);
      };
      const served = hooks.serve?.(exchange);
      if (served) return answer(served);
      const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        const body: Buffer[] = [];
        up.on('data', (c: Buffer) => body.push(c));
        up.on('end', () => {
          const reply = { status: up.statusCode!, headers: { ...up.headers }, body: Buffer.concat(body) };
          answer(hooks.rewrite ? hooks.rewrite(exchange, reply) : reply);
        });
      });
      out.on('error', () => res.destroy());
      out.end(Buffer.concat(chunks));
    });
  });
  return new Promise<{ server: Server; url: string; recorded: Exchange[] }>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, recorded })),
  );
}

/** pino into an array: the node's log lines, as objects. */
function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

const GOOD_CSV = ['a,b,c,y', ...Array.from({ length: 40 }, (_, i) => `${(i % 7) - 3},${(i % 5) / 2},${'pqr'[i % 3]},${i % 2}`)].join('\n') + '\n';
const PASSPHRASE = 'node-safety-test-passphrase';

/**
 * The node's own defences, against a real coordinator (in this process, over HTTP) with a proxy
 * in between: models it must refuse, a broken file that must not make it hammer the coordinator,
 * and a study its own jurisdiction forbids whatever the coordinator's profile says.
 */
describe('node safety: signed models, backoff, its own policy', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-node-safety-'));
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  let coordinatorUrl = '';
  let listening: Server | undefined;
  const servers: Server[] = [];
  const processes: RunningProcess[] = [];

  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    ({ server: listening, url: coordinatorUrl } = await listenOnLoopback(h.app));
  });
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    for (const s of servers) s.close();
    listening?.close();
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function token(studyId: string, nodeName: string, jurisdiction = 'US-CA-CCPA') {
    const t = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName, region: 'eu', jurisdiction });
    expect(t.status).toBe(201);
    return t.body.token as string;
  }

  function nodeConfig(name: string, coordinator: string, enrollToken: string, csv: string, extra: Record<string, unknown> = {}) {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'data.csv'), csv);
    return NodeConfig.parse({ coordinator, token: enrollToken, data: join(dir, name, 'data.csv'), stateDir: join(dir, name, 'state'), backend: 'cpu', pollSeconds: 1, exitWhenDone: false, keyPassphrase: PASSPHRASE, jurisdiction: 'US-CA-CCPA', ...extra });
  }

  async function until<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > end) throw new Error('condition not reached in time');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('refuses to start without a jurisdiction or policy file, before creating or sending anything', async () => {
    const { log } = capture();
    const config = NodeConfig.parse({ coordinator: coordinatorUrl, token: 'fmenroll_whatever-0123456789', data: join(dir, 'none.csv'), stateDir: join(dir, 'no-policy', 'state'), keyPassphrase: PASSPHRASE });
    const err = await runNode(config, log).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NodePolicyRequiredError);
    expect((err as Error).message).toMatch(/this node has no jurisdiction: give --jurisdiction NAME .*built in: EU-GDPR, US-CA-CCPA, CN-PIPL.* or --policy FILE/);
    expect(existsSync(join(dir, 'no-policy'))).toBe(false);
    writeFileSync(join(dir, 'bad-policy.json'), '{"jurisdiction": "EU-GDPR"}');
    const badFile = await runNode({ ...config, policy: join(dir, 'bad-policy.json') }, log).catch((e: unknown) => e);
    expect((badFile as Error).message).toMatch(/the policy file .*bad-policy.json cannot be used/);
  });

  // Checked both ways a node receives a model: carried by its task (Task.model, a small model) and
  // downloaded (a large one, or a coordinator that does not inline).
  it.each(['carried by the task', 'downloaded'] as const)('refuses a global model that is unsigned, signed by a foreign key, altered by one byte, or another genuinely signed model than the task names; sends no update until a genuine one arrives (%s)', async (how) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    await h.enroll(studyId, 'peer');
    const model = await h.admin('get', `/v1/studies/${studyId}/models/0`).buffer(true).parse((res, cb) => {
      const c: Buffer[] = [];
      res.on('data', (b: Buffer) => c.push(b));
      res.on('end', () => cb(null, Buffer.concat(c)));
    });
    const genuine = new Uint8Array(model.body as Buffer);
    const flipped = Buffer.from(genuine);
    flipped[flipped.length - 1] ^= 1; // one bit of the last float: still a well-formed model
    const foreign = await generateIdentity({ name: 'impostor', passphrase: PASSPHRASE });
    const foreignArmored = await signArtifact(genuine, await loadPrivateKey(foreign.privateKeyArmored, PASSPHRASE));
    const foreignSignature = Buffer.from(foreignArmored).toString('base64');
    // Signed by the coordinator's own key, but not the model the task names (a replayed or swapped one): only the hash can tell.
    const swappedArmored = (await h.built.keyring.sign(flipped)).signature;

    let mode: 'unsigned' | 'foreign' | 'flipped' | 'swapped' | 'genuine' = 'unsigned';
    let carried = 0;
    const p = await proxy(coordinatorUrl, {
      rewrite: (e, r) => {
        if (e.url.startsWith('/v1/tasks/next') && r.status === 200) {
          const { model, ...task } = JSON.parse(r.body.toString('utf8'));
          if (how === 'downloaded' || !model) return { ...r, body: Buffer.from(JSON.stringify({ ...task, ...(mode === 'flipped' ? { modelSha256: sha256Hex(flipped) } : {}) })) };
          carried++;
          // A consistent forgery: the task names the altered model's hash, so only the signature can tell.
          if (mode === 'flipped') return { ...r, body: Buffer.from(JSON.stringify({ ...task, modelSha256: sha256Hex(flipped), model: { ...model, bytes: flipped.toString('base64') } })) };
          if (mode === 'swapped') return { ...r, body: Buffer.from(JSON.stringify({ ...task, model: { bytes: flipped.toString('base64'), signature: swappedArmored } })) };
          const signature = mode === 'unsigned' ? null : mode === 'foreign' ? foreignArmored : model.signature;
          return { ...r, body: Buffer.from(JSON.stringify({ ...task, model: { ...model, signature } })) };
        }
        if (!e.url.includes('/models/')) return r;
        const headers = { ...r.headers };
        if (mode === 'unsigned') delete headers['fedmark-model-signature'];
        if (mode === 'foreign') headers['fedmark-model-signature'] = foreignSignature;
        if (mode === 'swapped') headers['fedmark-model-signature'] = Buffer.from(swappedArmored).toString('base64');
        return { ...r, headers, body: mode === 'flipped' || mode === 'swapped' ? flipped : r.body };
      },
    });
    servers.push(p.server);
    const { log, lines } = capture();
    const abort = new AbortController();
    const running = runNode(nodeConfig('signed', p.url, await token(studyId, 'signed'), GOOD_CSV, { idleBackoffMaxSeconds: 1 }), log, abort.signal);
    try {
      const refusals = () => lines.filter((l) => l.msg === 'refused an unsigned or wrongly signed global model');
      for (const next of ['unsigned', 'foreign', 'flipped'] as const) {
        mode = next;
        const before = refusals().length;
        // Two refusals in this mode: the first may have been downloaded just before the switch.
        const refusal = await until(() => (refusals().length >= before + 2 ? refusals().at(-1) : undefined));
        expect(refusal.reason, mode).toMatch(new RegExp(`global model v0 of study ${studyId} is not signed by the coordinator key [0-9a-f]+; refusing to load it`));
        expect(p.recorded.filter((r) => r.method === 'POST' && r.url.includes('/updates')), mode).toEqual([]);
      }
      mode = 'swapped';
      const before = refusals().length;
      const refusal = await until(() => (refusals().length >= before + 2 ? refusals().at(-1) : undefined));
      expect(refusal.reason).toBe(`global model v0 hash ${sha256Hex(flipped)} does not match the task's ${sha256Hex(genuine)}; refusing to load it`);
      expect(lines.some((l) => l.msg === 'sent model update')).toBe(false);
      // The same node, the same model, honestly served: trained on and sent (the check above was the signature, not the setup).
      mode = 'genuine';
      await until(() => lines.find((l) => l.msg === 'sent model update'));
      expect(p.recorded.filter((r) => r.method === 'POST' && r.url.includes('/updates'))).toHaveLength(1);
      // Which way the models came: never downloaded when carried, always when not.
      const downloads = p.recorded.filter((r) => r.url.includes('/models/')).length;
      if (how === 'carried by the task') expect([carried > 0, downloads]).toEqual([true, 0]);
      else expect([carried, downloads > 0]).toEqual([0, true]);
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it("refuses to train on a study whose feature spec differs from the partner's own copy (--spec)", async () => {
    const study = tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 });
    const studyId = await h.createStudy(study);
    // The partner signed off on a spec without category "r": the study's has it.
    const specFile = join(dir, 'partner-spec.json');
    const features = study.features as { target: unknown; features: Array<Record<string, unknown>> };
    writeFileSync(specFile, JSON.stringify({ ...features, features: features.features.map((f) => (f.name === 'c' ? { ...f, categories: ['p', 'q'] } : f)) }));
    const { log } = capture();
    const err = await runNode(nodeConfig('spec-mismatch', coordinatorUrl, await token(studyId, 'spec-mismatch'), GOOD_CSV, { spec: specFile }), log).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`the local spec .*partner-spec.json differs from study ${studyId}'s feature spec; refusing to train`));
    const node = (await h.admin('get', `/v1/studies/${studyId}`)).body.nodes.find((n: { name: string }) => n.name === 'spec-mismatch');
    expect(node.state).toBe('data-error');
    // The same spec as the study's is accepted: the node goes on to load its data.
    writeFileSync(specFile, JSON.stringify(study.features));
    const same = capture();
    const abort = new AbortController();
    const running = runNode(nodeConfig('spec-match', coordinatorUrl, await token(studyId, 'spec-match'), GOOD_CSV, { spec: specFile }), same.log, abort.signal);
    try {
      await until(() => same.lines.find((l) => l.msg === 'data loaded'));
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  });

  it('a node whose file is fixed reads it again and takes part, without a restart', async () => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    await h.enroll(studyId, 'steady');
    const rows = GOOD_CSV.split('\n');
    rows[2] = 'oops,0,p,1';
    const config = nodeConfig('fixme', coordinatorUrl, await token(studyId, 'fixme'), rows.join('\n'));
    const { log, lines } = capture();
    const abort = new AbortController();
    const running = runNode(config, log, abort.signal);
    try {
      await until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.nodes.find((n: { name: string; state: string }) => n.name === 'fixme')?.state === 'data-error' ? true : undefined));
      expect(lines.some((l) => l.msg === 'sent model update')).toBe(false);
      writeFileSync(config.data, GOOD_CSV); // the partner fixes the export in place
      await until(() => lines.find((l) => l.msg === 'sent model update'));
      const node = (await h.admin('get', `/v1/studies/${studyId}`)).body.nodes.find((n: { name: string }) => n.name === 'fixme');
      expect(node.state).toBe('ready');
      expect(lines.filter((l) => l.msg === 'data loaded')).toHaveLength(1);
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('a node with a broken file reports it once and backs off instead of hammering the coordinator', async () => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    const peer = await h.enroll(studyId, 'peer-1');
    await h.enroll(studyId, 'peer-2');
    // A real fit task of this study, served to the broken node again and again, whatever the
    // coordinator's own task policy: only the node's backoff can keep it from looping.
    const fit = await h.until(async () => {
      const r = await h.nodeGet(peer, '/v1/tasks/next');
      return r.status === 200 ? (r.body as object) : undefined;
    });
    const p = await proxy(coordinatorUrl, {
      serve: (e) => (e.url.startsWith('/v1/tasks/next') ? { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(fit)) } : undefined),
    });
    servers.push(p.server);
    const { log, lines } = capture();
    const abort = new AbortController();
    const rows = GOOD_CSV.split('\n');
    rows[2] = 'SECRET-VALUE,0,p,1'; // line 3 (the header is line 1), column a
    const broken = rows.join('\n');
    const running = runNode(nodeConfig('broken', p.url, await token(studyId, 'broken'), broken), log, abort.signal);
    let window: Exchange[] = [];
    try {
      const first = await until(() => p.recorded.find((r) => r.url.startsWith('/v1/tasks/next')));
      await new Promise((r) => setTimeout(r, 10_000));
      window = p.recorded.filter((r) => r.at >= first.at);
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
    const tasks = window.filter((r) => r.url.startsWith('/v1/tasks/next')).length;
    // Backoff 1 + 2 + 4 s (then 8): at most 4 task requests in 10 s; without it, hundreds. Each
    // fit task also rereads the policy profile, plus one status report: a loaded machine may
    // stretch the window a little, hence the slack (still two orders of magnitude under a loop).
    expect(tasks).toBeGreaterThanOrEqual(2);
    expect(tasks).toBeLessThanOrEqual(6);
    expect(window.length).toBeLessThanOrEqual(20);
    expect(lines.filter((l) => l.msg === 'task skipped: no usable data').length).toBe(tasks);
    // Its state was told once, where and what kind, never the value.
    expect(p.recorded.filter((r) => r.url === '/v1/nodes/me/status')).toHaveLength(1);
    const status = (await h.admin('get', `/v1/studies/${studyId}`)).body as { nodes: Array<{ name: string; state: string; message: string | null }> };
    const node = status.nodes.find((n) => n.name === 'broken')!;
    expect(node.state).toBe('data-error');
    expect(node.message).toBe("line 3, column a: text in a numeric column (details in the node's own log)");
    expect(JSON.stringify(status)).not.toContain('SECRET-VALUE');
  }, 60_000);

  it("an EU-GDPR node refuses a study without DP and reports policy-refused, even when the coordinator's profile was relaxed", async () => {
    // The coordinator's EU-GDPR profile, version 2, no longer demands DP: the coordinator lets the
    // round start. The node applies the stricter of that and its own built-in version 1.
    const relaxed = await h.admin('post', '/v1/policies').send({ jurisdiction: 'EU-GDPR', minNodesPerAggregate: 2, dpRequired: false });
    expect(relaxed.status).toBe(201);
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    await h.enroll(studyId, 'eu-peer', true, 'eu', 'EU-GDPR');
    mkdirSync(join(dir, 'gdpr'), { recursive: true });
    writeFileSync(join(dir, 'gdpr', 'data.csv'), GOOD_CSV);
    const node = runFedmark(['node', '--coordinator', coordinatorUrl, '--token', await token(studyId, 'gdpr', 'EU-GDPR'), '--data', join(dir, 'gdpr', 'data.csv'), '--state-dir', join(dir, 'gdpr', 'state'), '--backend', 'cpu', '--jurisdiction', 'EU-GDPR', '--daemon']);
    processes.push(node);
    const refusal = await node.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('refusing to train'), 90_000);
    expect(String(refusal.msg)).toMatch(/EU-GDPR v2: differential privacy \(central, client-level\) is required/);
    expect(node.logs.some((l) => l.msg === "this node's policy profile differs from the coordinator's; applying the stricter of both, rule by rule" && l.localVersion === 1 && l.coordinatorVersion === 2)).toBe(true);
    const status = await h.until(async () => {
      const s = (await h.admin('get', `/v1/studies/${studyId}`)).body as { nodes: Array<{ name: string; state: string; message: string | null }> };
      const n = s.nodes.find((x) => x.name === 'gdpr');
      return n?.state === 'policy-refused' ? n : undefined;
    });
    expect(status.message).toMatch(/refusing to train: .*differential privacy/);
    const updates = await h.built.db.selectFrom('updates').select('node_id').where('study_id', '=', studyId).execute();
    expect(updates).toEqual([]);
    expect(node.logs.some((l) => l.msg === 'sent model update')).toBe(false);
  }, 120_000);
});
