import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { encodeWeights, decodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { UPDATE_META_HEADER } from '../../protocols/messages.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { ADMIN, bytesOrJson, defaultMeta, inProcessCoordinator, testNodeKey, tinyStudy, evaluation } from './harness.ts';

function logregWeights(fill: number, width = 7): WeightSet {
  return [
    { name: 'dense_0/kernel', shape: [width, 1], values: new Float32Array(width).fill(fill) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([fill]) },
  ];
}

/** Encodes without the codec's own NaN guard, to send what a buggy or hostile node could send. */
function rawWithValue(value: number): Uint8Array {
  const bytes = encodeWeights(logregWeights(0.25));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setFloat32(bytes.byteLength - 4, value, true);
  return bytes;
}

for (const backendName of BACKEND_NAMES) {
  describe(`coordinator HTTP API on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend);
    });
    afterAll(async () => {
      await h?.close();
    });
    const run = (name: string, fn: (hh: NonNullable<typeof h>) => Promise<void>) =>
      it(name, async (ctx) => {
        if (!h) return ctx.skip();
        await fn(h);
      });

    run('refuses a bad study with 400 naming the field, and a missing admin token with 401', async (h) => {
      const bad = await h.admin('post', '/v1/studies').send({ ...tinyStudy(), rounds: -1 });
      expect(bad.status).toBe(400);
      expect(bad.body.error.field).toBe('body.rounds');
      const noModel = await h.admin('post', '/v1/studies').send({ ...tinyStudy(), model: { kind: 'forest' } });
      expect(noModel.status).toBe(400);
      expect(noModel.body.error.field).toMatch(/^body\.model/);
      const notJson = await h.admin('post', '/v1/studies').set('content-type', 'application/json').send('{"name":');
      expect(notJson.status).toBe(400);
      const anon = await request(h.app).post('/v1/studies').send(tinyStudy());
      expect(anon.status).toBe(401);
      const wrong = await request(h.app).post('/v1/studies').set('authorization', 'Bearer nope-nope-nope-nope').send(tinyStudy());
      expect(wrong.status).toBe(401);
    });

    run('enrollment tokens are one-time and expire', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ minNodesToStart: 99 }));
      const t = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName: 'eu-1', region: 'eu', jurisdiction: 'US-CA-CCPA' });
      expect(t.status).toBe(201);
      const { publicKey, privateKey } = await testNodeKey(0);
      const noKey = await request(h.app).post('/v1/nodes/enroll').send({ token: t.body.token });
      expect(noKey.status).toBe(400);
      expect(noKey.body.error.field).toBe('body.publicKey');
      const privateInstead = await request(h.app).post('/v1/nodes/enroll').send({ token: t.body.token, publicKey: privateKey.armor() });
      expect(privateInstead.status).toBe(400); // a node must never send its private key
      const first = await request(h.app).post('/v1/nodes/enroll').send({ token: t.body.token, publicKey });
      expect(first.status).toBe(201);
      expect(first.body.apiKey).toMatch(/^fmnode_/);
      const again = await request(h.app).post('/v1/nodes/enroll').send({ token: t.body.token, publicKey });
      expect(again.status).toBe(409);
      expect(again.body.error.code).toBe('TOKEN_USED');
      const unknown = await request(h.app).post('/v1/nodes/enroll').send({ token: 'fmenroll_thisisnotarealtokenatall', publicKey });
      expect(unknown.status).toBe(401);
      const short = await request(h.app).post('/v1/nodes/enroll').send({ token: 'x', publicKey });
      expect(short.status).toBe(400);
      expect(short.body.error.field).toBe('body.token');
      // Expired: issued with 1 s, used after 1.1 s.
      const brief = await h.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName: 'eu-2', region: 'eu', expiresInSeconds: 1 });
      await new Promise((r) => setTimeout(r, 1100));
      const late = await request(h.app).post('/v1/nodes/enroll').send({ token: brief.body.token, publicKey });
      expect(late.status).toBe(401);
      expect(late.body.error.message).toMatch(/expired/);
      const unknownStudy = await h.admin('post', '/v1/enrollment-tokens').send({ studyId: 'study_nope', nodeName: 'x', region: 'eu' });
      expect(unknownStudy.status).toBe(404);
    });

    run('a round: bad updates refused and not stored, retries safe, duplicates and late updates refused', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 2 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      const task = await h.nodeGet(a, '/v1/tasks/next?wait=5');
      expect(task.status).toBe(200);
      expect(task.body).toMatchObject({ kind: 'fit', round: 1, modelVersion: 0 });
      const model = await h.nodeGet(a, `/v1/studies/${studyId}/models/0`);
      expect(model.status).toBe(200);
      expect(model.headers['fedmark-sha256']).toBe(task.body.modelSha256);
      expect(decodeWeights(new Uint8Array(model.body)).map((t) => t.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);

      // No running sum is stored with the round (issue 13: the fold is in memory, rebuilt from the
      // stored updates; only central DP stores its noised opening state).
      const atStart = (await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow()).accumulator;
      expect(atStart).toBeNull();

      // Wrong shape, NaN, Infinity, garbage, bad metadata, unknown round: each a 4xx with a reason.
      const wrongShape = await h.submit(a, studyId, 1, encodeWeights(logregWeights(0.1, 8)));
      expect(wrongShape.status).toBe(400);
      expect(wrongShape.body.error.message).toMatch(/dense_0\/kernel/);
      const nan = await h.submit(a, studyId, 1, rawWithValue(Number.NaN));
      expect(nan.status).toBe(400);
      expect(nan.body.error.message).toMatch(/NaN|finite/i);
      const inf = await h.submit(a, studyId, 1, rawWithValue(Number.POSITIVE_INFINITY));
      expect(inf.status).toBe(400);
      const garbage = await h.submit(a, studyId, 1, new Uint8Array([1, 2, 3, 4, 5]));
      expect(garbage.status).toBe(400);
      const badMeta = await h.submit(a, studyId, 1, encodeWeights(logregWeights(0.1)), { ...defaultMeta(), numExamples: -3 });
      expect(badMeta.status).toBe(400);
      expect(badMeta.body.error.field).toBe('headers.fedmark-update.numExamples');
      const noRound = await h.submit(a, studyId, 7, encodeWeights(logregWeights(0.1)));
      expect(noRound.status).toBe(404);
      const otherStudy = await h.submit(a, 'study_other', 1, encodeWeights(logregWeights(0.1)));
      expect([403, 404]).toContain(otherStudy.status);
      // Nothing of those was stored.
      expect(await h.built.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).execute()).toHaveLength(0);
      const round = await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow();
      expect(round.accumulator).toBeNull();
      expect(await h.built.db.selectFrom('round_kept_updates').select('seq').where('study_id', '=', studyId).execute()).toHaveLength(0);

      const ok = await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), defaultMeta(30));
      expect(ok.status).toBe(201);
      const retry = await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), defaultMeta(30));
      expect(retry.status).toBe(200);
      expect(retry.body).toEqual(ok.body);
      const different = await h.submit(a, studyId, 1, encodeWeights(logregWeights(2)), defaultMeta(30));
      expect(different.status).toBe(409);
      expect(different.body.error.code).toBe('DUPLICATE_UPDATE');
      // Same weights, different counts: not a retry. Refused, and the first submission stands.
      const otherMeta = await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), { ...defaultMeta(30), numExamples: 31, loss: 0.4 });
      expect(otherMeta.status).toBe(409);
      expect(otherMeta.body.error.code).toBe('DUPLICATE_UPDATE');
      expect(otherMeta.body.error.message).toMatch(/same weights|these weights/);
      expect(otherMeta.body.error.message).toMatch(/numExamples, loss/);
      const storedA = await h.built.db.selectFrom('updates').select(['num_examples', 'loss']).where('study_id', '=', studyId).where('node_id', '=', a.nodeId).execute();
      expect(storedA).toEqual([{ num_examples: 30, loss: 0.5 }]);
      // The same header with its keys in another order is the same metadata: still a safe retry.
      const { data, ...rest } = defaultMeta(30);
      const reordered = await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), { data, ...rest });
      expect(reordered.status).toBe(200);
      expect(reordered.body).toEqual(ok.body);
      // No second task for a node that already reported.
      expect((await h.nodeGet(a, '/v1/tasks/next?wait=0')).status).toBe(204);

      const okB = await h.submit(b, studyId, 1, encodeWeights(logregWeights(4)), defaultMeta(10));
      expect(okB.status).toBe(201);
      // All in: the round aggregates (FedAvg weighted by examples: (30*1 + 10*4)/40 = 1.75).
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      const v1 = await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson);
      const weights = decodeWeights(new Uint8Array(v1.body));
      expect(weights[0].values[0]).toBeCloseTo(1.75, 6);
      expect(weights[1].values[0]).toBeCloseTo(1.75, 6);

      // A late update for a closed fit phase is refused and not stored.
      const c = await h.enroll(studyId, 'c');
      const late = await h.submit(c, studyId, 1, encodeWeights(logregWeights(9)));
      expect(late.status).toBe(403); // c was not a participant of round 1
      const evalTask = await h.nodeGet(b, '/v1/tasks/next?wait=2');
      expect(evalTask.body).toMatchObject({ kind: 'evaluate', round: 1, modelVersion: 1 });
      const lateB = await h.submit(b, studyId, 1, encodeWeights(logregWeights(5)));
      expect(lateB.status).toBe(409); // a different update from b after the fact

      // Evaluations: bad histogram refused, good ones complete the round with a pooled AUC.
      const badEval = await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, { numExamples: 4, loss: 0.3, stats: { kind: 'binary', histogram: { bins: 4, positives: [0, 1], negatives: [1, 0, 0, 0] }, brierSum: 0, logLossSum: 0 } }, `${studyId}/1`);
      expect(badEval.status).toBe(400);
      const evalA = await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 0, 1, 1], [1, 1, 0, 0], 0.3), `${studyId}/1`);
      expect(evalA.status).toBe(201);
      const evalB = await h.nodePost(b, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1, 0, 0], [0, 1, 0, 0], 0.6), `${studyId}/1`);
      expect(evalB.status).toBe(201);
      const status = await h.until(async () => {
        const s = (await h.admin('get', `/v1/studies/${studyId}`)).body;
        return s.rounds[0].phase === 'completed' ? s : undefined;
      });
      // Pooled positives in bins 1, 2, 3 and negatives in bins 0, 1, 1: pairs won 1+1+3+3 with the
      // bin-1 tie pair counted half each: (1 + 2*0.5) + 3 + 3 = 8 of 9.
      expect(status.rounds[0].validationAuc).toBeCloseTo(8 / 9, 10);
      expect(status.rounds[0].meanLoss).toBeCloseTo(0.5, 6);
      expect(status.rounds[0].participants).toHaveLength(2);
      expect(status.rounds[0].updatesReceived).toBe(2);
    });

    run('a round fails at its deadline with too few updates, and the study goes on', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 1 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.enroll(studyId, 'c');
      await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)))).status).toBe(201);
      const status = await h.until(async () => {
        const s = (await h.admin('get', `/v1/studies/${studyId}`)).body;
        return s.rounds.length === 2 ? s : undefined;
      });
      expect(status.rounds[0].phase).toBe('failed');
      expect(status.rounds[0].failureReason).toMatch(/only 1 of 3 nodes reported.*at least 2/);
      expect(status.rounds[0].updatesReceived).toBe(1);
      expect(status.rounds[0].participants).toHaveLength(3);
      // b was invited but never sent anything: its update now comes too late, and is not stored.
      const lateB = await h.submit(b, studyId, 1, encodeWeights(logregWeights(3)));
      expect(lateB.status).toBe(409);
      expect(lateB.body.error.code).toBe('ROUND_CLOSED');
      expect(lateB.body.error.message).toMatch(/no longer accepts updates \(phase failed/);
      expect(await h.built.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('node_id', '=', b.nodeId).execute()).toHaveLength(0);
      expect(status.rounds[1].phase).toBe('fit');
      // The failed round kept the global model, and the next round can be worked on.
      const next = await h.nodeGet(a, '/v1/tasks/next');
      expect(next.status).toBe(200);
      expect(next.body).toMatchObject({ kind: 'fit', round: 2, modelVersion: 1 });
      const v0 = await h.admin('get', `/v1/studies/${studyId}/models/0`);
      const v1 = await h.admin('get', `/v1/studies/${studyId}/models/1`);
      expect(v1.headers['fedmark-sha256']).toBe(v0.headers['fedmark-sha256']);
      const late = await h.submit(a, studyId, 1, encodeWeights(logregWeights(2)));
      expect(late.status).toBe(409);
      const lateSame = await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)));
      expect(lateSame.status).toBe(200); // the retry of what was accepted still gets its receipt
    });

    run('a coordinator restart mid-round continues the round with the updates already accepted', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(2)), defaultMeta(10))).status).toBe(201);
      await h.restart();
      expect((await h.nodeGet(b, '/v1/tasks/next')).body).toMatchObject({ kind: 'fit', round: 1 });
      expect((await h.submit(b, studyId, 1, encodeWeights(logregWeights(6)), defaultMeta(30))).status).toBe(201);
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0].phase === 'evaluate' ? true : undefined));
      const v1 = await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson);
      expect(decodeWeights(new Uint8Array(v1.body))[0].values[3]).toBeCloseTo((10 * 2 + 30 * 6) / 40, 6);
    });

    run('at the deadline a round closes with the updates that arrived, when enough did; a late update in between is refused', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 30 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      const c = await h.enroll(studyId, 'c');
      await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), defaultMeta(10))).status).toBe(201);
      expect((await h.submit(b, studyId, 1, encodeWeights(logregWeights(5)), defaultMeta(30))).status).toBe(201);
      // 2 of 3 in, deadline 30 s away: the round waits for c.
      await h.built.rounds.advanceRound(studyId, 1);
      expect((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0].phase).toBe('fit');
      const before = (await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow()).accumulator;
      // The deadline passes; the timer has not run yet. c's update is late all the same.
      h.advanceClock(31_000);
      const late = await h.submit(c, studyId, 1, encodeWeights(logregWeights(100)));
      expect(late.status).toBe(409);
      expect(late.body.error.code).toBe('ROUND_CLOSED');
      expect(late.body.error.message).toMatch(/phase fit, deadline/);
      expect(await h.built.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('node_id', '=', c.nodeId).execute()).toHaveLength(0);
      const after = (await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow()).accumulator;
      expect(after).toEqual(before);
      expect((await h.built.db.selectFrom('round_kept_updates').select('node_id').where('study_id', '=', studyId).execute()).map((r) => r.node_id)).not.toContain(c.nodeId);
      // The deadline transition: 2 >= min 2, so the round aggregates exactly a and b.
      await h.built.rounds.advanceRound(studyId, 1);
      const s = (await h.admin('get', `/v1/studies/${studyId}`)).body;
      expect(s.rounds[0]).toMatchObject({ phase: 'evaluate', updatesReceived: 2, numExamples: 40 });
      expect(s.rounds[0].participants).toHaveLength(3);
      const v1 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
      for (const t of v1) for (const v of t.values) expect(v).toBeCloseTo((10 * 1 + 30 * 5) / 40, 6);
    });

    run('a coordinator down past a round\'s deadline closes that round on restart (resume)', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 30 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.enroll(studyId, 'c');
      await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(2)), defaultMeta(10))).status).toBe(201);
      expect((await h.submit(b, studyId, 1, encodeWeights(logregWeights(6)), defaultMeta(30))).status).toBe(201);
      // Down for a minute: the 30 s deadline passes with nobody running its timer.
      await h.restart({ downForMs: 60_000 });
      const s = await h.until(async () => {
        const st = (await h.admin('get', `/v1/studies/${studyId}`)).body;
        return st.rounds[0].phase === 'evaluate' ? st : undefined;
      }, 5_000);
      expect(s.rounds[0].updatesReceived).toBe(2);
      const v1 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
      expect(v1[0].values[3]).toBeCloseTo((10 * 2 + 30 * 6) / 40, 6);
    });

    run('participants that cannot train get no fit task, and the round closes without waiting for them', async (h) => {
      const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      const c = await h.enroll(studyId, 'c');
      await h.until(async () => ((await h.nodeGet(c, '/v1/tasks/next')).status === 200 ? true : undefined));
      // c's file broke: it says so, and from then on it is handed no fit task.
      expect((await h.nodePost(c, '/v1/nodes/me/status', { state: 'data-error', message: 'line 3: wrong number of fields' })).status).toBe(204);
      expect((await h.nodeGet(c, '/v1/tasks/next?wait=0')).status).toBe(204);
      expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), defaultMeta(10))).status).toBe(201);
      expect((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0].phase).toBe('fit');
      expect((await h.submit(b, studyId, 1, encodeWeights(logregWeights(3)), defaultMeta(10))).status).toBe(201);
      // Every remaining participant can't train: the round aggregates a and b now, not in 10 minutes.
      const s = await h.until(async () => {
        const st = (await h.admin('get', `/v1/studies/${studyId}`)).body;
        return st.rounds[0].phase === 'evaluate' ? st : undefined;
      }, 5_000);
      expect(s.rounds[0].updatesReceived).toBe(2);
      const detail = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
      expect(detail.mechanism.failures).toEqual([{ nodeId: c.nodeId, state: 'data-error' }]);
      const v1 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
      expect(v1[0].values[0]).toBeCloseTo(2, 6);
      // Evaluation: b loses its file after training; it gets no evaluation task and is not waited for.
      expect((await h.nodePost(b, '/v1/nodes/me/status', { state: 'data-error', message: 'file gone' })).status).toBe(204);
      expect((await h.nodeGet(b, '/v1/tasks/next?wait=0')).status).toBe(204);
      expect((await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1], [1, 0], 0.5), `${studyId}/1`)).status).toBe(201);
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0].phase === 'completed' ? true : undefined), 5_000);

      // With too few left, the round fails at once, saying how many could not train and why
      // (who they were is in mechanism.failures, which only admins and auditors see in full).
      const s2 = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, roundDeadlineSeconds: 600 }));
      const d = await h.enroll(s2, 'd');
      const e = await h.enroll(s2, 'e');
      await h.until(async () => ((await h.nodeGet(d, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(d, s2, 1, encodeWeights(logregWeights(1)))).status).toBe(201);
      expect((await h.nodePost(e, '/v1/nodes/me/status', { state: 'privacy-ceiling', message: 'over its ceiling' })).status).toBe(204);
      const failed = await h.until(async () => {
        const st = (await h.admin('get', `/v1/studies/${s2}`)).body;
        return st.rounds[0]?.phase === 'failed' ? st : undefined;
      }, 5_000);
      expect(failed.rounds[0].failureReason).toMatch(/only 1 of 2 nodes reported and every other participant said it cannot train; 1 could not train \(privacy-ceiling\)/);
      expect(failed.rounds[0].failureReason).not.toContain(e.nodeId);
      // A node that recovers gets the next round's task again.
      expect((await h.nodePost(e, '/v1/nodes/me/status', { state: 'ready' })).status).toBe(204);
      const next = await h.until(async () => {
        const t = await h.nodeGet(e, '/v1/tasks/next');
        return t.status === 200 ? t.body : undefined;
      }, 5_000);
      expect(next).toMatchObject({ kind: 'fit', round: 2 });
    });

    run('a node cannot read another study\'s model; unknown routes get 404 JSON', async (h) => {
      const s1 = await h.createStudy(tinyStudy({ minNodesToStart: 50 }));
      const s2 = await h.createStudy(tinyStudy({ minNodesToStart: 50 }));
      const a = await h.enroll(s1, 'a', false);
      expect((await h.nodeGet(a, `/v1/studies/${s2}/models/0`)).status).toBe(403);
      expect((await h.nodeGet(a, `/v1/studies/${s1}`)).status).toBe(403); // study status is for people
      const missing = await request(h.app).get('/v1/nope');
      expect(missing.status).toBe(404);
      expect(missing.body.error.code).toBe('NOT_FOUND');
    });

    run('an update from a caller who may not send one is refused before its body is read', async (h) => {
      const s1 = await h.createStudy(tinyStudy({ minNodesToStart: 50 }));
      const a = await h.enroll(s1, 'early-check', false);
      // Far bigger than the tiny study's model: read first, this would be a 413.
      const huge = Buffer.alloc(3_000_000, 7);
      const post = (path: string, token?: string) => {
        let req = request(h.app).post(path).set(UPDATE_META_HEADER, JSON.stringify(defaultMeta(5))).set('content-type', 'application/pgp-encrypted');
        if (token) req = req.set('authorization', `Bearer ${token}`);
        return req.send(huge);
      };
      expect((await post(`/v1/studies/${s1}/rounds/1/updates`)).status).toBe(401);
      expect((await post(`/v1/studies/${s1}/rounds/1/updates`, 'fmtok_unknown-token-0123456789')).status).toBe(401);
      expect((await post(`/v1/studies/${s1}/rounds/1/updates`, ADMIN)).status).toBe(403);
      // A node of study s1 posting to a study that does not exist learns nothing about it: 403, not 404.
      const other = await post('/v1/studies/study_does-not-exist/rounds/1/updates', a.apiKey);
      expect(other.status).toBe(403);
      expect(other.body.error.message).toMatch(/not enrolled in study study_does-not-exist/);
      // ... and its own study's limit still applies once it is known who is calling.
      expect((await post(`/v1/studies/${s1}/rounds/1/updates`, a.apiKey)).status).toBe(413);
    });
  });
}
