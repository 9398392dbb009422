import { expect, vi } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { Task } from '../../protocols/messages.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

// Every task lookup counted (tasks.ts reads the task view through this one function).
const lookups = vi.hoisted(() => ({ n: 0 }));
vi.mock('../../coordinator/rounds/round-repository.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../coordinator/rounds/round-repository.ts')>();
  return { ...original, findTaskView: (...args: Parameters<typeof original.findTaskView>) => (lookups.n++, original.findTaskView(...args)) };
});

const weights = (x: number) => encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([x]) },
]);
const phaseOf = async (h: Harness, studyId: string, round: number) => (await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst())?.phase;
const postEvaluation = (h: Harness, node: TestNode, studyId: string, round: number) => h.nodePost(node, `/v1/studies/${studyId}/rounds/${round}/evaluations`, evaluation([0, 1, 2], [2, 1, 0], 0.4), `${studyId}/${round}`);

/**
 * Issue 13: a node long-polling for its next task is woken only by a change that can give it one
 * (a round opening, a round aggregating, a node or the study changing), not by a round completing:
 * each such wake cost a task lookup per waiting node (~10 a round in the demo).
 */
describeOnEachBackend('task long-polls', (run) => {
  run('a round that completes wakes the study watchers but not the nodes waiting for a task', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const [a, b, c] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    for (const n of [a, b, c]) expect((await h.submit(n, studyId, 1, weights(0.1), defaultMeta(100))).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 2)) === 'fit' ? true : undefined));
    // a does its round-2 work (round 1's evaluation rides on its fit task), then waits.
    expect(((await h.nodeGet(a, '/v1/tasks/next?wait=0')).body as Task).evaluate?.round).toBe(1);
    expect((await postEvaluation(h, a, studyId, 1)).status).toBe(201);
    expect((await h.submit(a, studyId, 2, weights(0.2), defaultMeta(100))).status).toBe(201);
    const seen = h.built.rounds.changeCount(studyId);
    const watcher = h.built.rounds.waitForChange(studyId, 2, seen);
    const before = lookups.n;
    const waiting = h.nodeGet(a, '/v1/tasks/next?wait=2');
    await new Promise((r) => setTimeout(r, 300));
    // b and c evaluate round 1 (standalone tasks are not needed: they post directly): round 1 completes.
    for (const n of [b, c]) expect((await postEvaluation(h, n, studyId, 1)).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'completed' ? true : undefined));
    await watcher;
    expect(h.built.rounds.changeCount(studyId)).toBeGreaterThan(seen); // the watchers heard of it
    expect((await waiting).status).toBe(204);
    // a's long-poll looked when it came in and when its wait ended, not when round 1 completed.
    expect(lookups.n - before).toBe(2);
  });

  // round-service.ts: watchers (the dashboard) are woken after what follows a completed round is
  // committed. Woken before, a page read the study still running (or ended without its end
  // checkpoint) and could stop following it. The watcher reads at once: on PostgreSQL over another
  // connection, beside the study's ending transaction if it were still open.
  run("a watcher woken by the last round's completion reads the study ended and its end checkpoint signed", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'own-phase' }));
    const [a, b] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    for (const n of [a, b]) expect((await h.submit(n, studyId, 1, weights(0.1), defaultMeta(100))).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'evaluate' ? true : undefined));
    expect((await postEvaluation(h, a, studyId, 1)).status).toBe(201);
    const read = async () => {
      const [study, ended, checkpoint] = await Promise.all([
        h.built.db.selectFrom('studies').select('state').where('id', '=', studyId).executeTakeFirst(),
        h.built.db.selectFrom('audit_log').select('seq').where('study_id', '=', studyId).where('kind', '=', 'study.completed').executeTakeFirst(),
        h.built.db.selectFrom('audit_checkpoints').select(({ fn }) => fn.max('seq').as('seq')).executeTakeFirst(),
      ]);
      return { state: study?.state, endCheckpointed: ended !== undefined && Number(checkpoint?.seq ?? 0) >= ended.seq };
    };
    const woken = (async () => {
      for (let seen = h.built.rounds.changeCount(studyId); ; seen = h.built.rounds.changeCount(studyId)) {
        await h.built.rounds.waitForChange(studyId, 10, seen);
        const now = await read();
        if (now.state !== 'running' || (await phaseOf(h, studyId, 1)) === 'completed') return now;
      }
    })();
    expect((await postEvaluation(h, b, studyId, 1)).status).toBe(201);
    expect(await woken).toEqual({ state: 'completed', endCheckpointed: true });
  });
  // Issue 13: an update sent with ?wait=S brings the node's next task on its receipt
  // (UpdateReceipt.next), and the wait skips its first look when nothing that may make a task
  // happened since the node's last one (its own fit was just done): one lookup, at the wake.
  run('an update with ?wait=S brings the next task on its receipt after one lookup; a change since the last look makes it look first', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const [a, b] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    const first = (await h.nodeGet(a, '/v1/tasks/next?wait=0')).body as Task & { config?: unknown; configSha256: string };
    expect(first).toMatchObject({ kind: 'fit', round: 1 });
    const before = lookups.n;
    let answered = false;
    const riding = h.submit(a, studyId, 1, weights(0.1), defaultMeta(100), { query: `?wait=10&config=${first.configSha256}` }).then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 400));
    expect(answered).toBe(false); // held: accepted, waiting for a's next task
    expect(await h.built.db.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', 1).execute()).toEqual([{ node_id: a.nodeId }]);
    // b's update closes round 1; round 2 opens: a's answer is its receipt with the fit task of
    // round 2 (carrying the evaluation of model 1), config left out (a holds it by its hash).
    const closing = await h.submit(b, studyId, 1, weights(0.2), defaultMeta(100));
    expect(closing.status).toBe(201);
    expect(closing.body.next).toBeUndefined(); // b did not ask
    const receipt = await riding;
    expect(receipt.status).toBe(201);
    expect(receipt.body).toMatchObject({ round: 1, nodeId: a.nodeId, next: { kind: 'fit', round: 2, evaluate: { round: 1 }, configSha256: first.configSha256 } });
    expect(receipt.body.next.config).toBeUndefined();
    expect(lookups.n - before).toBe(1); // at the wake only (the skipped first look would find nothing)

    // Round 2: a node enrolling meanwhile (a change that may make a task) makes the next wait look first.
    await h.enroll(studyId, 'c');
    const looked = lookups.n;
    const timedOut = await h.submit(a, studyId, 2, weights(0.3), defaultMeta(100), { query: '?wait=1', evaluation: { round: 1, report: evaluation([0, 1, 2], [2, 1, 0], 0.4) } });
    expect(timedOut.status).toBe(201);
    expect(timedOut.body).toMatchObject({ round: 2, evaluation: { round: 1, stored: true } });
    expect(timedOut.body.next).toBeUndefined(); // b has not sent round 2: no task within 1 s, the update stands
    expect(lookups.n - looked).toBe(2); // when it came in, and when its wait ended
    // A retry of an update (its answer, and the task on it, may have been lost) looks first too.
    const again = lookups.n;
    const replay = await h.submit(a, studyId, 2, weights(0.3), defaultMeta(100), { query: '?wait=1', evaluation: { round: 1, report: evaluation([0, 1, 2], [2, 1, 0], 0.4) } });
    expect(replay.status).toBe(200);
    expect(replay.body).toMatchObject({ round: 2, nodeId: a.nodeId, sha256: timedOut.body.sha256 });
    expect(lookups.n - again).toBe(2);
  });

  // The wait after an update skips its first look (above); its first real look comes after a wait,
  // so it must read the policy version again, as any look after a wait does (tasks.ts
  // skippedLook): a profile published meanwhile (here by another replica, which wakes nothing
  // here) is in the task, not the version the update request's own auth read.
  run("a task brought on an update's receipt names the policy version published while the update was held", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const [a, b] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    const first = (await h.nodeGet(a, '/v1/tasks/next?wait=0')).body as Task;
    const before = first.policyInForce?.version ?? 0;
    const riding = h.submit(a, studyId, 1, weights(0.1), defaultMeta(100), { query: '?wait=10' });
    await h.until(async () => ((await h.built.db.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', 1).execute()).length === 1 ? true : undefined));
    const published = { jurisdiction: 'US-CA-CCPA', version: before + 1, minNodesPerAggregate: 2 };
    await h.built.db.insertInto('policies').values({ jurisdiction: 'US-CA-CCPA', version: published.version, profile: JSON.stringify(published) }).execute();
    expect((await h.submit(b, studyId, 1, weights(0.2), defaultMeta(100))).status).toBe(201);
    const receipt = await riding;
    expect(receipt.body).toMatchObject({ next: { kind: 'fit', round: 2, policyInForce: { jurisdiction: 'US-CA-CCPA', version: published.version } } });
  });
});
