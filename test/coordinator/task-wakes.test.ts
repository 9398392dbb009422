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
});
