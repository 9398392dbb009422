import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeConfig } from '../../client-node/config.ts';
import { runNode } from '../../client-node/node-runner.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, tinyStudy, type Harness } from '../coordinator/harness.ts';
import { capture, listenOnLoopback, proxy, until } from '../helpers/node-proxy.ts';

const CSV = ['a,b,c,y', ...Array.from({ length: 60 }, (_, i) => `${(i % 7) - 3},${(i % 5) / 2},${'pqr'[i % 3]},${i % 2}`)].join('\n') + '\n';
const sane = (x: number) => encodeWeights([{ name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) }, { name: 'dense_0/bias', shape: [1], values: new Float32Array([x]) }]);

/**
 * A real node (runNode) against the real coordinator over HTTP, evaluationSchedule 'with-next-fit':
 * the previous round's evaluation rides on the update request; when that request does not carry it
 * through (here a proxy in front of the coordinator refuses it, as a gateway with a lower body
 * limit would), the node sends the evaluation on its own, so the round still gets it.
 */
describe("a node's evaluation riding on its update", () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-rides-'));
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

  async function run(name: string, refuseFramedUpdates: boolean) {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600, evaluationSchedule: 'with-next-fit' }));
    const steady = await h.enroll(studyId, 'steady');
    const refusal = { status: 413, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'gateway body limit' } })) };
    const p = await proxy(coordinatorUrl, (_url, r) => r, (method, url) => (refuseFramedUpdates && method === 'POST' && url.split('?')[0].endsWith('/rounds/2/updates') ? refusal : undefined));
    servers.push(p.server);
    const t = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName: name, region: 'eu', jurisdiction: 'US-CA-CCPA' });
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'data.csv'), CSV);
    const config = NodeConfig.parse({ coordinator: p.url, token: t.body.token, data: join(dir, name, 'data.csv'), stateDir: join(dir, name, 'state'), backend: 'cpu', pollSeconds: 1, exitWhenDone: false, keyPassphrase: 'rides-test-passphrase', jurisdiction: 'US-CA-CCPA', idleBackoffMaxSeconds: 1 });
    const { log, lines } = capture();
    const abort = new AbortController();
    const running = runNode(config, log, abort.signal);
    try {
      // Round 1: both train; round 2 opens with each one's evaluation of model 1 owed.
      await until(() => lines.some((l) => l.msg === 'sent model update' && l.round === 1));
      expect((await h.submit(steady, studyId, 1, sane(0.01), defaultMeta(40))).status).toBe(201);
      await until(() => lines.some((l) => l.msg === 'sent evaluation (sufficient statistics)' && l.round === 1));
      const nodeId = (await h.admin('get', `/v1/studies/${studyId}`)).body.nodes.find((n: { name: string }) => n.name === name).id as string;
      const evaluations = await h.built.db.selectFrom('evaluations').select('node_id').where('study_id', '=', studyId).where('round', '=', 1).execute();
      expect(evaluations.map((e) => e.node_id)).toEqual([nodeId]);
      return { posts: p.posts, lines };
    } finally {
      abort.abort();
      await running.catch(() => undefined);
    }
  }

  it('rides on the update: one POST for both', async () => {
    const { posts, lines } = await run('rider', false);
    expect(posts.filter((u) => u.includes('/rounds/1/evaluations'))).toEqual([]);
    expect(posts.filter((u) => u.includes('/rounds/2/updates'))).toHaveLength(1);
    expect(lines.find((l) => l.msg === 'sent evaluation (sufficient statistics)' && l.round === 1)).toMatchObject({ withUpdate: true });
  }, 120_000);

  it('goes alone when the update request does not carry it through', async () => {
    const { posts, lines } = await run('walker', true);
    expect(posts.filter((u) => u.includes('/rounds/2/updates')).length).toBeGreaterThanOrEqual(1);
    expect(posts.filter((u) => u.includes('/rounds/1/evaluations'))).toHaveLength(1);
    const sent = lines.find((l) => l.msg === 'sent evaluation (sufficient statistics)' && l.round === 1);
    expect(sent?.withUpdate).toBeUndefined();
    expect(lines.some((l) => l.msg === 'coordinator refused' && l.status === 413)).toBe(true);
  }, 120_000);
});
