import { expect } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { Task } from '../../protocols/messages.ts';
import { sealUpdate } from '../../protocols/crypto/index.ts';
import { roundBinding, UPDATE_META_HEADER } from '../../protocols/messages.ts';
import { UPDATE_WITH_EVALUATION_TYPE } from '../../protocols/update-frame.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

/**
 * evaluationSchedule 'with-next-fit' (issue 13): the evaluation a fit task carries rides on the
 * node's update request (Task.evaluate.withUpdate, protocols/update-frame.ts), one signed request
 * for both; each part is judged as its own route would judge it.
 */

const fill = (x: number): WeightSet => [
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([x]) },
];
const report = (i: number) => evaluation([0, 1, 2 + i], [2 + i, 1, 0], 0.4);
const weights = (i: number, round: number) => encodeWeights(fill(0.01 * (i + round)));

async function waitFit(h: Harness, node: TestNode, round: number): Promise<Task> {
  return h.until(async () => {
    const res = await h.nodeGet(node, '/v1/tasks/next?wait=0');
    const t = res.status === 200 ? (res.body as Task) : undefined;
    return t && t.round === round && t.kind === 'fit' ? t : undefined;
  });
}

/** Three nodes through round 1; round 2's fit tasks (carrying round 1's evaluation) handed out. */
async function atRoundTwo(h: Harness) {
  const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
  const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
  await waitFit(h, nodes[0], 1);
  for (const [i, node] of nodes.entries()) expect((await h.submit(node, studyId, 1, weights(i, 1), defaultMeta(100))).status).toBe(201);
  const tasks = await Promise.all(nodes.map((n) => waitFit(h, n, 2)));
  return { studyId, nodes, tasks };
}

const stored = (h: Harness, table: 'evaluations' | 'updates', studyId: string, round: number) =>
  h.built.db.selectFrom(table).select('node_id').where('study_id', '=', studyId).where('round', '=', round).orderBy('node_id').execute().then((rows) => rows.map((r) => r.node_id));
const phaseOf = async (h: Harness, studyId: string, round: number) => (await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst())?.phase;

describeOnEachBackend('an evaluation riding on the update request', (run) => {
  run('is stored with the update, one request a node a round; round r completes; a retry stores neither twice', async (h) => {
    const { studyId, nodes, tasks } = await atRoundTwo(h);
    for (const t of tasks) expect(t.evaluate).toEqual({ round: 1, deadline: expect.any(String), withUpdate: true });
    const received = await h.built.db.selectFrom('audit_log').select('seq').where('kind', '=', 'evaluation.received').where('study_id', '=', studyId).execute();
    expect(received).toHaveLength(0);
    for (const [i, node] of nodes.entries()) {
      const res = await h.submit(node, studyId, 2, weights(i, 2), defaultMeta(100), { evaluation: { round: 1, report: report(i) } });
      expect(res.status).toBe(201);
      expect(res.body).toMatchObject({ round: 2, nodeId: node.nodeId, evaluation: { round: 1, stored: true } });
    }
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual(nodes.map((n) => n.nodeId).sort());
    expect(await stored(h, 'updates', studyId, 2)).toEqual(nodes.map((n) => n.nodeId).sort());
    expect(await h.built.db.selectFrom('audit_log').select('seq').where('kind', '=', 'evaluation.received').where('study_id', '=', studyId).execute()).toHaveLength(3);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'completed' ? true : undefined));
    // A retry (new signature, same bytes) is the same update and the same evaluation: neither stored again.
    const again = await h.submit(nodes[0], studyId, 2, weights(0, 2), defaultMeta(100), { evaluation: { round: 1, report: report(0) } });
    expect([200, 409]).toContain(again.status);
    expect(await stored(h, 'evaluations', studyId, 1)).toHaveLength(3);
    expect(await h.built.db.selectFrom('audit_log').select('seq').where('kind', '=', 'evaluation.received').where('study_id', '=', studyId).execute()).toHaveLength(3);
  });

  run('is signed with the update: a report changed in transit refuses the whole request, nothing stored', async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const honest = JSON.stringify({ round: 1, report: report(0) });
    // Same length, one count moved: what a man in the middle would do to flatter the round's AUC.
    const forged = honest.replace('"positives":[', '"positives":[').replace(/"loss":0\.4/, '"loss":0.1');
    expect(forged).not.toBe(honest);
    const res = await h.submit(nodes[0], studyId, 2, weights(0, 2), defaultMeta(100), {
      evaluation: honest,
      alter: (signed) => {
        const body = Buffer.from(signed);
        Buffer.from(forged).copy(body, 4);
        return body;
      },
    });
    expect(res.status).toBe(401);
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual([]);
    expect(await stored(h, 'updates', studyId, 2)).toEqual([]);
  });

  run("a refused evaluation is reported in the receipt and does not refuse the update", async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const [a] = nodes;
    expect((await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, report(0), `${studyId}/1`)).status).toBe(201);
    const res = await h.submit(a, studyId, 2, weights(0, 2), defaultMeta(100), { evaluation: { round: 1, report: report(1) } });
    expect(res.status).toBe(201);
    expect(res.body.evaluation).toMatchObject({ round: 1, refused: { status: 409, code: 'DUPLICATE_EVALUATION' } });
    expect(res.body.evaluation.stored).toBeUndefined();
    expect(await stored(h, 'updates', studyId, 2)).toEqual([a.nodeId]);
  });

  run('a refused update (409) keeps the evaluation riding on it: stored and audited, and as the last one it completes its round', async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const [a, b, c] = nodes;
    for (const [i, node] of [b, c].entries()) expect((await h.submit(node, studyId, 2, weights(i + 1, 2), defaultMeta(100), { evaluation: { round: 1, report: report(i + 1) } })).status).toBe(201);
    expect((await h.submit(a, studyId, 2, weights(0, 2), defaultMeta(100))).status).toBe(201); // a's update, bare
    // A second, different update from a, with a's evaluation (the last one owed for round 1).
    const res = await h.submit(a, studyId, 2, weights(5, 2), defaultMeta(100), { evaluation: { round: 1, report: report(0) } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('DUPLICATE_UPDATE');
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual([a.nodeId, b.nodeId, c.nodeId].sort());
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'completed' ? true : undefined));
    const audited = await h.built.db.selectFrom('audit_log').select('data').where('study_id', '=', studyId).where('kind', '=', 'evaluation.received').execute();
    expect(audited.map((r) => JSON.parse(r.data).nodeId)).toContain(a.nodeId);
  });

  run("an evaluation of another round than the fit's starting model, or not a report, is refused whole (400), nothing stored", async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const [a, b, c] = nodes;
    const wrongRound = await h.submit(a, studyId, 2, weights(0, 2), defaultMeta(100), { evaluation: { round: 2, report: report(0) } });
    expect(wrongRound.status).toBe(400);
    expect(wrongRound.body.error.field).toBe('body.evaluation.round');
    const notJson = await h.submit(b, studyId, 2, weights(1, 2), defaultMeta(100), { evaluation: '{"round":1,' });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.field).toBe('body.evaluation');
    // A NUL (or a lone surrogate) in any string is refused before the schema looks (PostgreSQL stores neither).
    const nul = await h.submit(b, studyId, 2, weights(1, 2), defaultMeta(100), { evaluation: JSON.stringify({ round: 1, report: report(1) }).replace('"binary"', '"bin\\u0000ary"') });
    expect(nul.status).toBe(400);
    expect(nul.body.error.field).toBe('body.evaluation');
    const extraField = await h.submit(c, studyId, 2, weights(2, 2), defaultMeta(100), { evaluation: { round: 1, report: { ...report(2), auc: 0.99 } } });
    expect(extraField.status).toBe(400);
    expect(String(extraField.body.error.field)).toMatch(/^body\.evaluation/);
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual([]);
    expect(await stored(h, 'updates', studyId, 2)).toEqual([]);
  });

  run("a large evaluation part (up to the evaluation route's own 1 MB) fits beside a model of the study's size limit", async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    // JSON allows whitespace: 1,000,000 spaces before the report (a big forecast or recommend report
    // would be this size) take the framed body past the sealed update's own limit (model + 1 MB).
    const padded = ' '.repeat(1_000_000) + JSON.stringify({ round: 1, report: report(0) });
    const res = await h.submit(nodes[0], studyId, 2, weights(0, 2), defaultMeta(100), { evaluation: padded });
    expect(res.status).toBe(201);
    expect(res.body.evaluation).toEqual({ round: 1, stored: true });
  });

  run('a sealed update that does not open refuses the request whole: the evaluation riding on it is not stored either', async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const garbage = new Uint8Array(300).map((_, i) => (i * 31) & 0xff);
    const res = await h.submit(nodes[0], studyId, 2, weights(0, 2), defaultMeta(100), { sealed: garbage, evaluation: { round: 1, report: report(0) } });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('INVALID_SEALED_UPDATE');
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual([]);
    expect(await stored(h, 'updates', studyId, 2)).toEqual([]);
  });

  run("the sealed part keeps the study's own size limit (the frame's allowance is the evaluation's): 413", async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    // tinyStudy's limit: 8 parameters x 4 bytes + 1,000,000.
    const oversized = new Uint8Array(1_000_100);
    const res = await h.submit(nodes[0], studyId, 2, weights(0, 2), defaultMeta(100), { sealed: oversized, evaluation: { round: 1, report: report(0) } });
    expect(res.status).toBe(413);
    expect(await stored(h, 'evaluations', studyId, 1)).toEqual([]);
  });

  run('a frame whose evaluation length runs past the body is a 400, signed or not; nothing stored', async (h) => {
    const { studyId, nodes } = await atRoundTwo(h);
    const [a] = nodes;
    const sealed = await sealUpdate({ bytes: weights(0, 2), coordinatorPublicKey: h.built.keyring.current.publicKey, nodePrivateKey: a.privateKey });
    const raw = new Uint8Array(4 + sealed.length);
    new DataView(raw.buffer).setUint32(0, sealed.length + 1);
    raw.set(sealed, 4);
    const metaHeader = JSON.stringify(defaultMeta(100));
    const res = await h.nodeRequest(a, 'post', `/v1/studies/${studyId}/rounds/2/updates`, undefined, { raw, roundId: roundBinding(studyId, 2, metaHeader), contentType: UPDATE_WITH_EVALUATION_TYPE, headers: { [UPDATE_META_HEADER]: metaHeader } });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'VALIDATION_FAILED', field: 'body' });
    expect(await stored(h, 'updates', studyId, 2)).toEqual([]);
  });

  run("round r's end checkpoint is signed after round r+1's close and round r+2's opening (the nodes' next tasks do not wait for it)", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await waitFit(h, nodes[0], 1);
    for (const [i, node] of nodes.entries()) expect((await h.submit(node, studyId, 1, weights(i, 1), defaultMeta(100))).status).toBe(201);
    await Promise.all(nodes.map((n) => waitFit(h, n, 2)));
    // The last update of round 2 carries the last evaluation of round 1: round 1 completes and
    // round 2's fit closes in the same request, two transitions at once.
    for (const [i, node] of nodes.entries()) expect((await h.submit(node, studyId, 2, weights(i, 2), defaultMeta(100), { evaluation: { round: 1, report: report(i) } })).status).toBe(201);
    await waitFit(h, nodes[0], 3);
    const seqOf = async (kind: string, round: number) => (await h.built.db.selectFrom('audit_log').select('seq').where('kind', '=', kind).where('study_id', '=', studyId).where('round', '=', round).executeTakeFirstOrThrow()).seq;
    const completed = Number(await seqOf('round.completed', 1));
    const opened = Number(await seqOf('round.started', 3));
    expect(opened).toBeGreaterThan(completed);
    const checkpoints = await h.until(async () => {
      const rows = await h.built.db.selectFrom('audit_checkpoints').select('seq').where('seq', '>=', completed as never).orderBy('seq').execute();
      return rows.length > 0 ? rows.map((r) => Number(r.seq)) : undefined;
    });
    // The first checkpoint since round 1 completed covers round 3's opening too: it was not
    // signed in between, while the nodes waited for their round 3 tasks.
    expect(checkpoints[0]).toBeGreaterThanOrEqual(opened);
  });
});
