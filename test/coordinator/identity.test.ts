import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { generateIdentity, loadPrivateKey, sealUpdate, signRequest, verifyArtifact, verifyKeyRotation, loadPublicKey } from '../../protocols/crypto/index.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, testNodeKey, tinyStudy, type TestNode } from './harness.ts';

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

/** Node identity: every node request signed over its exact bytes, updates sealed, models signed. */
describe('OpenPGP identity, signed requests, sealed updates, signed models', () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  let studyId: string;
  let a: TestNode;
  let b: TestNode;

  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    studyId = await h.createStudy(tinyStudy({ rounds: 2 }));
    a = await h.enroll(studyId, 'a');
    b = await h.enroll(studyId, 'b');
  });
  afterAll(async () => h?.close());

  const path = () => `/v1/studies/${studyId}/rounds/1`;

  /**
   * The refusal has exactly this status and code, and the audit log holds an `auth.failed` entry
   * for this very request (matched by its request id) with the same status and code.
   */
  async function expectAuthFailure(res: { status: number; body: { error: { code: string; requestId: string } } }, status: 401 | 403, code: string) {
    expect({ status: res.status, code: res.body.error.code }).toEqual({ status, code });
    const entries = await h.built.db.selectFrom('audit_log').select(['kind', 'data']).where('kind', '=', 'auth.failed').orderBy('seq', 'desc').limit(50).execute();
    const entry = entries.map((e) => JSON.parse(e.data) as { status: number; code: string; requestId: string }).find((d) => d.requestId === res.body.error.requestId);
    expect(entry, `an auth.failed audit entry for ${code}`).toMatchObject({ status, code });
  }

  it('refuses an unsigned request, a tampered one, a replay, a stale one and a foreign key', async () => {
    const unsigned = await request(h.app).get(path()).set('authorization', `Bearer ${a.apiKey}`);
    await expectAuthFailure(unsigned, 401, 'SIGNATURE_MISSING_HEADERS');

    const body = JSON.stringify({ state: 'ready' });
    const headers = await signRequest({ privateKey: a.privateKey, method: 'POST', path: '/v1/nodes/me/status', body: new TextEncoder().encode(body) });
    const send = (text: string, hs: Record<string, string> = headers) => request(h.app).post('/v1/nodes/me/status').set('authorization', `Bearer ${a.apiKey}`).set(hs).set('content-type', 'application/json').send(text);
    const tampered = await send(JSON.stringify({ state: 'data-error' }));
    await expectAuthFailure(tampered, 401, 'SIGNATURE_BAD_SIGNATURE');
    expect((await send(body)).status).toBe(204);
    const replay = await send(body);
    await expectAuthFailure(replay, 401, 'SIGNATURE_REPLAYED_NONCE');

    const old = await signRequest({ privateKey: a.privateKey, method: 'POST', path: '/v1/nodes/me/status', body: new TextEncoder().encode(body), now: new Date(Date.now() + 3600_000) }); // an hour off (the key is too young to sign in the past)
    const stale = await send(body, old);
    await expectAuthFailure(stale, 401, 'SIGNATURE_STALE_TIMESTAMP');

    // b's key signing a request that carries a's API key: not the key pinned for a.
    const foreign = await signRequest({ privateKey: b.privateKey, method: 'POST', path: '/v1/nodes/me/status', body: new TextEncoder().encode(body) });
    const wrongKey = await send(body, foreign);
    await expectAuthFailure(wrongKey, 403, 'SIGNATURE_KEY_MISMATCH');
  });

  it('refuses an unknown API key, audited', async () => {
    const signed = await signRequest({ privateKey: a.privateKey, method: 'GET', path: path(), body: new Uint8Array(0) });
    const unknown = await request(h.app).get(path()).set('authorization', 'Bearer fmnode_this-key-was-never-issued-0123456789').set(signed);
    await expectAuthFailure(unknown, 401, 'UNAUTHENTICATED');
    expect(unknown.body.error.message).toMatch(/unknown node API key/);
  });

  it('opens only updates sealed to the coordinator and signed by the sending node', async () => {
    await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
    const sealedByB = await sealUpdate({ bytes: weights(0.3), coordinatorPublicKey: h.built.keyring.current.publicKey, nodePrivateKey: b.privateKey });
    const forged = await h.submit(a, studyId, 1, weights(0.3), defaultMeta(), { sealed: sealedByB });
    expect(forged.status).toBe(400);
    expect(forged.body.error.code).toBe('INVALID_SEALED_UPDATE');
    const plain = await h.submit(a, studyId, 1, weights(0.3), defaultMeta(), { sealed: weights(0.3) });
    expect(plain.status).toBe(400);
    expect(plain.body.error.code).toBe('INVALID_SEALED_UPDATE');
    // The counts header is covered by the signature: changed in transit, the request is refused.
    const altered = await h.submit(a, studyId, 1, weights(0.3), defaultMeta(10), { headers: { 'fedmark-update': JSON.stringify(defaultMeta(10_000)) } });
    expect(altered.status).toBe(401);
    expect(altered.body.error.code).toBe('SIGNATURE_BAD_SIGNATURE');
    expect((await h.submit(a, studyId, 1, weights(0.3))).status).toBe(201);
    // The stored update is the plaintext's hash; nothing of the refused ones was kept.
    const updates = await h.built.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).execute();
    expect(updates).toHaveLength(1);
  });

  it('signs every published model; the signature verifies with the coordinator key only', async () => {
    const res = await h.nodeGet(a, `/v1/studies/${studyId}/models/0`);
    const signature = Buffer.from(String(res.headers['fedmark-model-signature']), 'base64').toString('utf8');
    const bytes = new Uint8Array(res.body as Buffer);
    expect(await verifyArtifact(bytes, signature, h.built.keyring.current.publicKey)).toBe(true);
    expect(await verifyArtifact(bytes, signature, (await testNodeKey(3)).publicKey)).toBe(false);
    const altered = bytes.slice();
    altered[altered.length - 1] ^= 1;
    expect(await verifyArtifact(altered, signature, h.built.keyring.current.publicKey)).toBe(false);
  });

  it('a node rotates its key with a request signed by the old key; the old key is then refused', async () => {
    const next = await testNodeKey(5);
    const rotated = await h.nodePost(b, '/v1/nodes/me/key', { publicKey: next.publicKey });
    expect(rotated.status).toBe(200);
    const oldKeyRequest = await h.nodeGet(b, '/v1/tasks/next');
    await expectAuthFailure(oldKeyRequest, 403, 'SIGNATURE_KEY_MISMATCH');
    b = { ...b, ...next };
    expect([200, 204]).toContain((await h.nodeGet(b, '/v1/tasks/next')).status);
  });

  it('the coordinator rotates its key with an announcement signed by the old key', async () => {
    const oldKey = h.built.keyring.current.publicKeyArmored;
    const rotation = await h.admin('post', '/v1/coordinator/key/rotate').send({});
    expect(rotation.status).toBe(201);
    const info = await request(h.app).get('/v1/coordinator/key');
    expect(info.body.fingerprint).toBe(rotation.body.fingerprint);
    const verified = await verifyKeyRotation(info.body.rotations.at(-1).announcement, oldKey);
    expect(verified?.fingerprint).toBe(rotation.body.fingerprint);
    expect(await verifyKeyRotation(info.body.rotations.at(-1).announcement, await loadPublicKey((await testNodeKey(4)).publicKey))).toBeNull();
    // Models made before the rotation are served signed by the new key...
    const model = await h.nodeGet(a, `/v1/studies/${studyId}/models/0`);
    const signature = Buffer.from(String(model.headers['fedmark-model-signature']), 'base64').toString('utf8');
    expect(await verifyArtifact(new Uint8Array(model.body as Buffer), signature, info.body.publicKey)).toBe(true);
    // ...also when a task carries the model (Task.model): the same bytes, the new key's signature...
    const task = await h.nodeGet(b, '/v1/tasks/next');
    expect(task.status).toBe(200);
    const carried = Buffer.from(task.body.model.bytes, 'base64');
    expect(carried.equals(model.body as Buffer)).toBe(true);
    expect(await verifyArtifact(new Uint8Array(carried), task.body.model.signature, info.body.publicKey)).toBe(true);
    // ...and an update sealed to the old key by a node that has not followed yet still opens.
    const sealedToOld = await sealUpdate({ bytes: weights(0.4), coordinatorPublicKey: await loadPublicKey(oldKey), nodePrivateKey: b.privateKey });
    const late = await h.submit(b, studyId, 1, weights(0.4), defaultMeta(), { sealed: sealedToOld });
    expect(late.status).toBe(201);
  });

  it('an expired node key is refused', async () => {
    // Long enough to enroll on a loaded machine, then waited out to the second.
    const lifetimeSeconds = 6;
    const born = Date.now();
    const short = await generateIdentity({ name: 'short-lived', passphrase: 'test-passphrase-0123', expiresInSeconds: lifetimeSeconds });
    const privateKey = await loadPrivateKey(short.privateKeyArmored, 'test-passphrase-0123');
    const t = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName: 'short', region: 'eu', jurisdiction: 'US-CA-CCPA' });
    const e = await request(h.app).post('/v1/nodes/enroll').send({ token: t.body.token, publicKey: short.publicKeyArmored });
    expect(e.status).toBe(201);
    const signedWhileValid = await signRequest({ privateKey, method: 'GET', path: '/v1/tasks/next', body: new Uint8Array(0) });
    await new Promise((r) => setTimeout(r, Math.max(0, born + lifetimeSeconds * 1000 + 1500 - Date.now())));
    const res = await request(h.app).get('/v1/tasks/next').set('authorization', `Bearer ${e.body.apiKey}`).set(signedWhileValid);
    await expectAuthFailure(res, 403, 'SIGNATURE_EXPIRED_KEY');
  });

  it('a revoked node is refused at once', async () => {
    const c = await h.enroll(studyId, 'c');
    expect([200, 204]).toContain((await h.nodeGet(c, '/v1/tasks/next')).status);
    expect((await h.admin('post', `/v1/nodes/${c.nodeId}/revoke`).send({ reason: 'laptop stolen' })).status).toBe(200);
    const after = await h.nodeGet(c, '/v1/tasks/next');
    await expectAuthFailure(after, 401, 'UNAUTHENTICATED');
    expect(after.body.error.message).toMatch(/revoked/);
  });
});
