import { expect, vi } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { Task, UpdateReceipt } from '../../protocols/messages.ts';
import { findTaskView } from '../../coordinator/rounds/round-repository.ts';
import { findTaskViewsOf } from '../../coordinator/rounds/task-views.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness } from './harness.ts';

// Every batched read counted with how many nodes it read for.
// `fail`: the next batched read throws; `swap`: it hands back its rows in reverse order.
const batches = vi.hoisted(() => ({ sizes: [] as number[], fail: false, swap: false }));
vi.mock('../../coordinator/rounds/task-views.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../coordinator/rounds/task-views.ts')>();
  return {
    ...original,
    findTaskViewsOf: async (...args: Parameters<typeof original.findTaskViewsOf>) => {
      batches.sizes.push(args[2].length);
      if (batches.fail) throw new Error('the batched statement failed');
      const rows = await original.findTaskViewsOf(...args);
      return batches.swap ? rows.reverse().map((r, i) => ({ ...r, asked_index: i + 1 })) : rows;
    },
  };
});

const weights = (x: number) => encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([x]) },
]);
const phaseOf = async (h: Harness, studyId: string, round: number) => (await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst())?.phase;

/**
 * Issue 13: the task lookups of nodes woken together (a round's opening) are one statement
 * (coordinator/rounds/task-views.ts), and each node's view is exactly the one-node statement's.
 */
describeOnEachBackend('task views looked up together', (run) => {
  run("the nodes woken by a round's opening are looked up in one statement, and each gets its own task", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    batches.sizes.length = 0;
    // Every node's update waits for its next task: the last one closes round 1 and opens round 2,
    // which wakes all three at once.
    const answers = await Promise.all(nodes.map((n, i) => h.submit(n, studyId, 1, weights(0.1 * (i + 1)), defaultMeta(100), { query: '?wait=10' })));
    for (const [i, res] of answers.entries()) {
      expect(res.status).toBe(201);
      const next = (res.body as UpdateReceipt).next as Task | undefined;
      // Round 2's fit carrying round 1's evaluation; or, for the node whose update closed round 1
      // and looked before round 2 opened, round 1's evaluation on its own (it is due then).
      if (next?.kind === 'fit') expect(next).toMatchObject({ round: 2, evaluate: { round: 1, withUpdate: true } });
      else expect(next).toMatchObject({ kind: 'evaluate', round: 1 });
      expect((res.body as UpdateReceipt).nodeId).toBe(nodes[i].nodeId);
    }
    expect(answers.filter((r) => ((r.body as UpdateReceipt).next as Task | undefined)?.kind === 'fit').length).toBeGreaterThanOrEqual(2);
    expect(Math.max(0, ...batches.sizes)).toBeGreaterThanOrEqual(2);
  });

  run("each node's view in a batch is the one-node statement's (participant or not, submitted or not, evaluation owed or not, policy or not)", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, evaluationSchedule: 'with-next-fit' }));
    const [a, b, c] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    for (const n of [a, b, c]) expect((await h.submit(n, studyId, 1, weights(0.1), defaultMeta(100))).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 2)) === 'fit' ? true : undefined));
    // a: round 2 submitted with its evaluation of round 1; b: round 1's evaluation posted alone; c: nothing yet.
    expect((await h.submit(a, studyId, 2, weights(0.2), defaultMeta(100), { evaluation: { round: 1, report: evaluation([0, 1, 2], [2, 1, 0], 0.4) } })).status).toBe(201);
    expect((await h.nodePost(b, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1, 2], [2, 1, 0], 0.4), `${studyId}/1`)).status).toBe(201);
    const asks = [
      { nodeId: a.nodeId, jurisdiction: undefined },
      { nodeId: b.nodeId, jurisdiction: 'EU' },
      { nodeId: c.nodeId, jurisdiction: undefined },
      { nodeId: 'node_unknown', jurisdiction: 'US' },
      { nodeId: c.nodeId, jurisdiction: 'nowhere' },
    ];
    const one = await Promise.all(asks.map(async (q) => {
      // One at a time: each alone in its turn, so the one-node statement answers it.
      await new Promise((r) => setImmediate(r));
      return findTaskView(h.built.db, studyId, q.nodeId, q.jurisdiction);
    }));
    const batched = await findTaskViewsOf(h.built.db, studyId, asks);
    expect(batched.map(({ asked_node_id: _n, asked_index: _i, ...view }) => view)).toEqual(one);
    // And through the batcher, asked in one turn: the same views, each to its asker.
    expect(await Promise.all(asks.map((q) => findTaskView(h.built.db, studyId, q.nodeId, q.jurisdiction)))).toEqual(one);
    // A study that does not exist: no view for anyone, batched or not.
    expect(await Promise.all(asks.slice(0, 2).map((q) => findTaskView(h.built.db, 'study_nope', q.nodeId, q.jurisdiction)))).toEqual([undefined, undefined]);
  });

  run('a failed batch falls back to one lookup per node; a row is never handed to another node than the one it was read for', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60 }));
    const [a, b] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    expect((await h.submit(a, studyId, 1, weights(0.1), defaultMeta(100))).status).toBe(201);
    const asks = [a.nodeId, b.nodeId];
    const alone = [];
    for (const id of asks) {
      alone.push(await findTaskView(h.built.db, studyId, id));
      await new Promise((r) => setImmediate(r));
    }
    expect(alone[0]?.submitted).toBe(true);
    expect(alone[1]?.submitted).toBe(false);
    try {
      batches.fail = true;
      expect(await Promise.all(asks.map((id) => findTaskView(h.built.db, studyId, id)))).toEqual(alone);
      batches.fail = false;
      batches.swap = true;
      const swapped = await Promise.allSettled(asks.map((id) => findTaskView(h.built.db, studyId, id)));
      expect(swapped.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    } finally {
      batches.fail = false;
      batches.swap = false;
    }
  });
});
