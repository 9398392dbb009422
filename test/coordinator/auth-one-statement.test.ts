import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import type { Histogram } from 'prom-client';
import { loadPublicKey, signRequest } from '../../protocols/crypto/index.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { inProcessCoordinator, testNodeKey, tinyStudy, type TestNode } from './harness.ts';

/**
 * A node's signed request costs one statement for its authentication (issue 13): the key its API
 * key claims is remembered, and the nonce is recorded in the statement that reads the node's row
 * again. What that must not weaken: a replay is refused after a restart, a revocation or key
 * rotation made elsewhere (another replica, straight SQL) is obeyed on the next request.
 */
for (const backendName of BACKEND_NAMES) describe(`node request authentication in one statement on ${backendName}`, () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  let studyId: string;
  let a: TestNode;

  beforeAll(async () => {
    const backend = await backendOrSkip(backendName);
    if (!backend) return;
    h = await inProcessCoordinator(backend, undefined, { deadlineSweepSeconds: 0 });
    studyId = await h.createStudy(tinyStudy({ rounds: 2 }));
    a = await h.enroll(studyId, 'a', false);
  });
  afterAll(async () => h?.close());
  /** A test on this backend, skipped when the backend is not available here. */
  const run = (name: string, fn: () => Promise<void>) => it(name, async (ctx) => (h ? fn() : ctx.skip()));

  /** Statements run so far (the coordinator's query histogram counts every one). */
  async function statements(): Promise<number> {
    const histogram = h.built.metrics.registry.getSingleMetric('fedmark_db_query_duration_seconds') as Histogram;
    return (await histogram.get()).values.filter((v) => v.metricName === 'fedmark_db_query_duration_seconds_count').reduce((n, v) => n + v.value, 0);
  }

  /** Waits until no statement runs for 300 ms (the round service's own reads are not counted). */
  async function quiet(): Promise<void> {
    for (let last = -1, now = await statements(); now !== last; last = now, await new Promise((r) => setTimeout(r, 300)), now = await statements());
  }

  const statusBody = JSON.stringify({ state: 'ready' });
  async function signedStatus(node: TestNode) {
    return signRequest({ privateKey: node.privateKey, method: 'POST', path: '/v1/nodes/me/status', body: new TextEncoder().encode(statusBody) });
  }
  const sendStatus = (node: TestNode, headers: Record<string, string>) =>
    request(h.app).post('/v1/nodes/me/status').set('authorization', `Bearer ${node.apiKey}`).set(headers).set('content-type', 'application/json').send(statusBody);

  run('a known node costs one authentication statement: GET /v1/nodes/me is two in all', async () => {
    expect((await h.nodeGet(a, '/v1/nodes/me')).status).toBe(200); // its key is now known
    const costs: number[] = [];
    for (let i = 0; i < 3; i++) {
      await quiet();
      const before = await statements();
      expect((await h.nodeGet(a, '/v1/nodes/me')).status).toBe(200);
      costs.push((await statements()) - before);
    }
    // One for the nonce and the node's row, one for describeSelf (was three: row, nonce, route).
    expect(Math.min(...costs)).toBe(2);
  });

  run('a replayed request is refused after a restart (nonces are in the database)', async () => {
    const headers = await signedStatus(a);
    expect((await sendStatus(a, headers)).status).toBe(204);
    await h.restart();
    const replay = await sendStatus(a, headers);
    expect({ status: replay.status, code: replay.body.error?.code }).toEqual({ status: 401, code: 'SIGNATURE_REPLAYED_NONCE' });
    // And again in the same process, now that the restarted coordinator knows the key.
    const again = await sendStatus(a, headers);
    expect({ status: again.status, code: again.body.error?.code }).toEqual({ status: 401, code: 'SIGNATURE_REPLAYED_NONCE' });
  });

  run('a node revoked behind this process\'s back (another replica) is refused at its next request', async () => {
    const b = await h.enroll(studyId, 'b', false);
    expect((await h.nodeGet(b, '/v1/nodes/me')).status).toBe(200); // remembered
    await h.built.db.updateTable('nodes').set({ state: 'revoked', revoked_at: new Date(), state_message: 'elsewhere' }).where('id', '=', b.nodeId).execute();
    const headers = await signRequest({ privateKey: b.privateKey, method: 'GET', path: '/v1/nodes/me', body: new Uint8Array(0) });
    const refused = await request(h.app).get('/v1/nodes/me').set('authorization', `Bearer ${b.apiKey}`).set(headers);
    expect(refused.status).toBe(401);
    expect(refused.body.error.message).toMatch(/was revoked/);
    // Its nonce was not recorded: a revoked node fills no store.
    const nonces = await h.built.db.selectFrom('request_nonces').select('nonce').where('nonce', '=', headers['fedmark-nonce']).execute();
    expect(nonces).toEqual([]);
  });

  run('a node revoked through the API is refused at its next request', async () => {
    const c = await h.enroll(studyId, 'c', false);
    expect((await h.nodeGet(c, '/v1/nodes/me')).status).toBe(200);
    expect((await h.admin('post', `/v1/nodes/${c.nodeId}/revoke`).send({ reason: 'test' })).status).toBe(200);
    const refused = await h.nodeGet(c, '/v1/nodes/me');
    expect(refused.status).toBe(401);
    expect(refused.body.error.message).toMatch(/was revoked/);
  });

  run('a key rotated behind this process\'s back: the old key is refused, the new one accepted', async () => {
    const d = await h.enroll(studyId, 'd', false);
    expect((await h.nodeGet(d, '/v1/nodes/me')).status).toBe(200); // remembered with its first key
    await h.nodeGet(d, '/v1/nodes/me'); // (twice: a key read again once stays remembered)
    const next = await testNodeKey(7);
    const fingerprint = (await loadPublicKey(next.publicKey)).getFingerprint();
    await h.built.db.updateTable('nodes').set({ public_key: next.publicKey, key_fingerprint: fingerprint }).where('id', '=', d.nodeId).execute();
    // The new key first: this process still remembers the old one, and must look again.
    const rotated = { ...d, ...next };
    expect((await h.nodeGet(rotated, '/v1/nodes/me')).status).toBe(200);
    const old = await h.nodeGet(d, '/v1/nodes/me');
    expect({ status: old.status, code: old.body.error?.code }).toEqual({ status: 403, code: 'SIGNATURE_KEY_MISMATCH' });
  });

  run('a key rotated behind this process\'s back: a request signed by the old key is refused, not recorded', async () => {
    const e = await h.enroll(studyId, 'e', false);
    expect((await h.nodeGet(e, '/v1/nodes/me')).status).toBe(200);
    const next = await testNodeKey(8);
    await h.built.db.updateTable('nodes').set({ public_key: next.publicKey, key_fingerprint: (await loadPublicKey(next.publicKey)).getFingerprint() }).where('id', '=', e.nodeId).execute();
    const headers = await signRequest({ privateKey: e.privateKey, method: 'GET', path: '/v1/nodes/me', body: new Uint8Array(0) });
    const old = await request(h.app).get('/v1/nodes/me').set('authorization', `Bearer ${e.apiKey}`).set(headers);
    expect({ status: old.status, code: old.body.error?.code }).toEqual({ status: 403, code: 'SIGNATURE_KEY_MISMATCH' });
    expect(await h.built.db.selectFrom('request_nonces').select('nonce').where('nonce', '=', headers['fedmark-nonce']).execute()).toEqual([]);
    expect((await h.nodeGet({ ...e, ...next }, '/v1/nodes/me')).status).toBe(200);
  });

  run('a node\'s policy: no statement of its own once known, and a new version (here or on another replica) is read at the next request', async () => {
    const f = await h.enroll(studyId, 'f', false, 'eu', 'US-CA-CCPA');
    const first = await h.nodeGet(f, '/v1/nodes/me/policy');
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ jurisdiction: 'US-CA-CCPA', policy: { jurisdiction: 'US-CA-CCPA' } });
    await quiet();
    const before = await statements();
    const again = await h.nodeGet(f, '/v1/nodes/me/policy');
    expect(again.body).toEqual(first.body);
    expect((await statements()) - before).toBe(1); // the signed request's own statement only

    const published = await h.admin('post', '/v1/policies').send({ jurisdiction: 'US-CA-CCPA', minNodesPerAggregate: 3 });
    expect(published.status).toBe(201);
    const afterPublish = await h.nodeGet(f, '/v1/nodes/me/policy');
    expect(afterPublish.body.policy).toEqual(published.body);

    // Another replica publishes (straight SQL: this process is not told).
    const elsewhere = { ...published.body, version: published.body.version + 1, minNodesPerAggregate: 4 };
    await h.built.db.insertInto('policies').values({ jurisdiction: 'US-CA-CCPA', version: elsewhere.version, profile: JSON.stringify(elsewhere) }).execute();
    expect((await h.nodeGet(f, '/v1/nodes/me/policy')).body.policy).toEqual(elsewhere);
  });
});
