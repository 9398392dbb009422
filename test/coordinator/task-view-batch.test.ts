import { expect, vi } from 'vitest';
import { sql } from 'kysely';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { Task, UpdateReceipt } from '../../protocols/messages.ts';
import { findTaskView, listStudyOpenRounds } from '../../coordinator/rounds/round-repository.ts';
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

  run("the batched views read neither the study's update history nor its closed rounds", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60 }));
    const [a, b] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    expect((await h.submit(a, studyId, 1, weights(0.1), defaultMeta(100))).status).toBe(201);
    // A long study, as the tables would hold it at its round 1,002: rounds 1-1,001 closed, with
    // both nodes' updates; round 1,002 in its fit phase, a's update in, b's not.
    const db = h.built.db;
    await sql`update rounds set phase = 'completed' where study_id = ${studyId} and round = 1`.execute(db);
    await sql`insert into rounds (study_id, round, phase, participants, fit_deadline)
      select ${studyId}, g, 'completed', '[]'::jsonb, now() from generate_series(2, 1001) as g`.execute(db);
    await sql`insert into rounds (study_id, round, phase, participants, fit_deadline)
      values (${studyId}, 1002, 'fit', ${JSON.stringify([a.nodeId, b.nodeId])}::jsonb, now() + interval '1 hour')`.execute(db);
    await sql`insert into updates (study_id, round, node_id, sha256, bytes, num_examples, meta, accepted_at)
      select ${studyId}, g, n.id, repeat('0', 64), 1, 1, '{}'::jsonb, now()
      from generate_series(2, 1001) as g cross join (select id from nodes where study_id = ${studyId}) as n
      union all select ${studyId}, 1002, ${a.nodeId}, repeat('0', 64), 1, 1, '{}'::jsonb, now()`.execute(db);
    await sql`analyze updates`.execute(db);
    const asks = [{ nodeId: a.nodeId, jurisdiction: undefined }, { nodeId: b.nodeId, jurisdiction: undefined }];
    // What the statement read, from the table statistics this session has not flushed yet
    // (pg_stat_xact_user_tables), before and after it in one transaction: the seeding's own reads
    // (the foreign-key checks of 2,001 inserts) drop out of the difference.
    type Counts = { seq_scan: number; seq_tup_read: number; idx_tup_fetch: number };
    const countsOf = async (tx: typeof db) => {
      const { rows } = await sql<Counts & { relname: string }>`
        select relname, seq_scan::int, seq_tup_read::int, idx_tup_fetch::int from pg_stat_xact_user_tables where relname in ('updates', 'rounds')`.execute(tx);
      const of = (t: string): Counts => rows.find((r) => r.relname === t) ?? { seq_scan: 0, seq_tup_read: 0, idx_tup_fetch: 0 };
      return { updates: of('updates'), rounds: of('rounds') };
    };
    const readsOf = async <T>(tx: typeof db, read: () => Promise<T>) => {
      const before = await countsOf(tx);
      const result = await read();
      const after = await countsOf(tx);
      const minus = (t: 'updates' | 'rounds'): Counts => ({ seq_scan: after[t].seq_scan - before[t].seq_scan, seq_tup_read: after[t].seq_tup_read - before[t].seq_tup_read, idx_tup_fetch: after[t].idx_tup_fetch - before[t].idx_tup_fetch });
      return { result, reads: { updates: minus('updates'), rounds: minus('rounds') } };
    };
    const { batched, alone, open } = await db.transaction().execute(async (trx) => {
      const tx = trx as unknown as typeof db;
      // The generic plans, which prepared statements reach after their first executions: an EXISTS in
      // the select list hashes every update there, where a first custom plan would still probe by key.
      await sql`set local plan_cache_mode = force_generic_plan`.execute(tx);
      const batched = await readsOf(tx, () => findTaskViewsOf<{ round: number; submitted: boolean }>(tx, studyId, asks));
      // A node asking alone gets the one-node statement (round-repository.ts), which must not walk either.
      const alone = await readsOf(tx, () => findTaskView(tx, studyId, b.nodeId));
      // And the study's open rounds, read at each round's opening.
      const open = await readsOf(tx, () => listStudyOpenRounds(tx, studyId));
      return { batched, alone, open };
    });
    expect(open.result).toEqual([{ round: 1002, phase: 'fit' }]);
    expect(batched.result.map((v) => [v.round, v.submitted])).toEqual([[1002, true], [1002, false]]);
    expect([alone.result?.round, alone.result?.submitted]).toEqual([1002, false]);
    for (const { reads } of [batched, alone, open]) {
      // Each node's update of the open round probed by key (no hashed scan of every update; the lateral in task-views.ts).
      expect({ seq_scan: reads.updates.seq_scan, seq_tup_read: reads.updates.seq_tup_read }).toEqual({ seq_scan: 0, seq_tup_read: 0 });
      // The evaluations owed found among the rounds in flight (migration 0024), not by walking the
      // study's 1,001 closed rounds from the first for each node: a handful of rows, not thousands.
      expect(reads.rounds.seq_tup_read).toBe(0);
      expect(reads.rounds.idx_tup_fetch).toBeLessThan(20);
    }
  });
});
