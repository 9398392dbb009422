import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeConfig } from '../../client-node/config.ts';
import { runNode } from '../../client-node/node-runner.ts';
import { encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, tinyStudy, type Harness } from '../coordinator/harness.ts';
import { capture, listenOnLoopback, proxy, until } from '../helpers/node-proxy.ts';

const CSV = ['a,b,c,y', ...Array.from({ length: 40 }, (_, i) => `${(i % 7) - 3},${(i % 5) / 2},${'pqr'[i % 3]},${i % 2}`)].join('\n') + '\n';
const PASSPHRASE = 'model-guard-test-passphrase';
/** The tiny study's logistic regression, every weight 1e37: what the issue saw signed and published. */
const ABSURD = encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(1e37) },
  { name: 'dense_0/bias', shape: [1], values: new Float32Array(1).fill(1e37) },
]);

/**
 * The node protects itself (issue 11, item 7), against the real coordinator over HTTP: a global
 * model signed with the coordinator's own key but absurd is refused and reported as
 * `model-rejected`; a training that diverges is reported as `training-failed`, never as loss 0.
 */
describe('the node refuses absurd models and reports failed training', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-model-guard-'));
  let h: Harness;
  let coordinatorUrl = '';
  let listening: Server | undefined;
  const servers: Server[] = [];

  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    ({ server: listening, url: coordinatorUrl } = await listenOnLoopback(h.app));
  });
  afterAll(async () => {
    for (const s of servers) s.close();
    listening?.close();
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function nodeConfig(studyId: string, name: string, coordinator: string) {
    const t = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName: name, region: 'eu', jurisdiction: 'US-CA-CCPA' });
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'data.csv'), CSV);
    return NodeConfig.parse({ coordinator, token: t.body.token, data: join(dir, name, 'data.csv'), stateDir: join(dir, name, 'state'), backend: 'cpu', pollSeconds: 1, exitWhenDone: false, keyPassphrase: PASSPHRASE, jurisdiction: 'US-CA-CCPA', idleBackoffMaxSeconds: 1 });
  }
  const nodeNamed = async (studyId: string, name: string) => (await h.admin('get', `/v1/studies/${studyId}`)).body.nodes.find((n: { name: string }) => n.name === name);

  it('refuses a validly signed model with weights of 1e37: model-rejected, nothing sent, the round goes on without it; it rejoins for a sane model', async () => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
    const peers = [await h.enroll(studyId, 'p1'), await h.enroll(studyId, 'p2')];
    // Signed by the coordinator's own key: the signature holds, only the values are absurd.
    const armored = (await h.built.keyring.sign(ABSURD)).signature;
    const signature = Buffer.from(armored).toString('base64');
    let absurd = true;
    const p = await proxy(coordinatorUrl, (url, r) => {
      if (!absurd || r.status !== 200) return r;
      if (url.startsWith('/v1/tasks/next')) {
        // The task carries its model (Task.model): the absurd one, with the same genuine signature.
        const task = JSON.parse(r.body.toString('utf8'));
        return { ...r, body: Buffer.from(JSON.stringify({ ...task, modelSha256: sha256Hex(ABSURD), ...(task.model ? { model: { bytes: Buffer.from(ABSURD).toString('base64'), signature: armored } } : {}) })) };
      }
      if (url.includes('/models/')) return { ...r, headers: { ...r.headers, 'fedmark-model-signature': signature }, body: Buffer.from(ABSURD) };
      return r;
    });
    servers.push(p.server);
    const { log, lines } = capture();
    const abort = new AbortController();
    const running = runNode(await nodeConfig(studyId, 'guarded', p.url), log, abort.signal);
    try {
      const rejected = await until(async () => ((await nodeNamed(studyId, 'guarded'))?.state === 'model-rejected' ? nodeNamed(studyId, 'guarded') : undefined));
      expect(rejected.message).toMatch(/^global model v0 is signed but out of range: tensor "dense_0\/kernel" has \|w\| = 1\.000e\+37 > 10000 at flat index 0/);
      expect(lines.find((l) => l.msg === 'refused a signed global model with out-of-range weights')).toMatchObject({ state: 'model-rejected' });
      for (const peer of peers) expect((await h.submit(peer, studyId, 1, encodeWeights([{ name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(0.1) }, { name: 'dense_0/bias', shape: [1], values: new Float32Array([0.1]) }]), defaultMeta(10))).status).toBe(201);
      // The round does not wait 600 s for the node that refused.
      await until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase !== 'fit' ? true : undefined), 20_000);
      expect(p.posts.filter((u) => u.includes('/updates'))).toEqual([]);
      expect(lines.some((l) => l.msg === 'sent model update')).toBe(false);
      // A sane model (the coordinator's, unaltered) next round: the node is back and trains on it.
      absurd = false;
      // Back to ready once the round it refused has moved on, so the next round includes it.
      await until(async () => ((await nodeNamed(studyId, 'guarded'))?.state === 'ready' ? true : undefined), 20_000);
      for (const peer of peers) await h.nodePost(peer, `/v1/studies/${studyId}/rounds/1/evaluations`, { numExamples: 0, stats: { kind: 'binary', histogram: { bins: 1000, positives: new Array(1000).fill(0), negatives: new Array(1000).fill(0) }, brierSum: 0, logLossSum: 0 } }, `${studyId}/1`);
      await until(() => lines.find((l) => l.msg === 'sent model update' && l.round === 2));
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('a training that diverges (NaN loss) is reported as training-failed with its reason: no update, never loss 0', async () => {
    // Plain SGD at learning rate 10 on inputs standardized by a tiny std: the weights blow up to
    // infinity within a few steps, and the loss with them. The model itself is sane.
    const study = tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600, training: { learningRate: 10, optimizer: 'sgd', localEpochs: 5, batchSize: 1 } });
    const features = study.features as { target: unknown; features: Array<Record<string, unknown>> };
    study.features = { ...features, features: features.features.map((f) => (f.kind === 'numeric' ? { ...f, std: 1e-3 } : f)) } as never;
    Object.assign(study, { task: { kind: 'regression', loss: 'mse' }, features: { ...(study.features as object), target: { column: 'y', kind: 'numeric', center: 0.5, scale: 0.5 } } });
    const studyId = await h.createStudy(study);
    await h.enroll(studyId, 'steady');
    const p = await proxy(coordinatorUrl, (_url, r) => r);
    servers.push(p.server);
    const { log, lines } = capture();
    const abort = new AbortController();
    const running = runNode(await nodeConfig(studyId, 'diverging', p.url), log, abort.signal);
    try {
      const failed = await until(async () => ((await nodeNamed(studyId, 'diverging'))?.state === 'training-failed' ? nodeNamed(studyId, 'diverging') : undefined));
      expect(failed.message).toMatch(/^local training in round 1 diverged: (the training loss is (NaN|Infinity|-Infinity)|tensor "[^"]+" is not finite); no update was sent$/);
      expect(lines.find((l) => l.msg === 'local training failed')).toMatchObject({ state: 'training-failed', round: 1 });
      expect(p.posts.filter((u) => u.includes('/updates'))).toEqual([]);
      expect(lines.some((l) => l.msg === 'sent model update')).toBe(false);
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
