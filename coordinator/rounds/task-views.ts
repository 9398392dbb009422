import { sql } from 'kysely';
import type { Db } from '../db/database.ts';

/**
 * Task views looked up at the same moment, read in one statement (the SQL of round-repository.ts
 * findTaskView's batch; kept here so that file stays one job).
 *
 * Why (issue 13): a round's opening wakes every node waiting for its task at once, and each woken
 * long-poll looked up its own view: ten statements one after another on PGlite's single
 * connection (~1 ms each in the demo), while every node waited for its task. The lookups started
 * in the same turn of the event loop (those woken by one notify) are gathered until the
 * microtasks of that turn have run (process.nextTick) and read together; a lone lookup keeps the
 * one-node statement. The view of each node is exactly the one-node statement's: the same
 * subqueries, per node in a lateral join.
 */

interface Ask<V> {
  nodeId: string;
  jurisdiction: string | undefined;
  resolve: (row: V | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * Batches `one` (a single node's view) per database and study: asks made before the next tick
 * are read with `many` when there are several of them.
 */
export function createTaskViewBatcher<V>(one: (db: Db, studyId: string, nodeId: string, jurisdiction: string | undefined) => Promise<V | undefined>, many: (db: Db, studyId: string, asks: Array<{ nodeId: string; jurisdiction: string | undefined }>) => Promise<Array<V & { asked_node_id: string; asked_index: number }>>) {
  const pending = new Map<Db, Map<string, Array<Ask<V>>>>();

  function flush(db: Db, studyId: string): void {
    const asks = pending.get(db)?.get(studyId) ?? [];
    pending.get(db)?.delete(studyId);
    if (pending.get(db)?.size === 0) pending.delete(db);
    if (asks.length === 1) {
      const [a] = asks;
      one(db, studyId, a.nodeId, a.jurisdiction).then(a.resolve, a.reject);
      return;
    }
    many(db, studyId, asks).then(
      (rows) => {
        const byIndex = new Map(rows.map((r) => [Number(r.asked_index), r]));
        asks.forEach((a, i) => {
          const row = byIndex.get(i + 1);
          if (!row) return a.resolve(undefined);
          const { asked_node_id: node, asked_index: _index, ...view } = row;
          // Belt and braces: a row is only ever handed to the node it was read for.
          if (node !== a.nodeId) return a.reject(new Error(`task view batch: row ${i + 1} is node ${node}'s, asked for ${a.nodeId}`));
          a.resolve(view as V);
        });
      },
      // The batch failed: each lookup on its own, so one cause cannot fail every woken node at once.
      () => asks.forEach((a) => one(db, studyId, a.nodeId, a.jurisdiction).then(a.resolve, a.reject)),
    );
  }

  return function lookUp(db: Db, studyId: string, nodeId: string, jurisdiction: string | undefined): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      let ofDb = pending.get(db);
      if (!ofDb) pending.set(db, (ofDb = new Map()));
      let asks = ofDb.get(studyId);
      if (!asks) {
        ofDb.set(studyId, (asks = []));
        process.nextTick(() => flush(db, studyId));
      }
      asks.push({ nodeId, jurisdiction, resolve, reject });
    });
  };
}

/**
 * Several nodes' task views of one study in one statement: round-repository.ts taskViewBuilder's
 * query, per asked node (`asked_index`, 1-based, in the order asked). A node asked without a
 * jurisdiction gets `policy_version` null, as the one-node query without one.
 */
export async function findTaskViewsOf<V>(db: Db, studyId: string, asks: Array<{ nodeId: string; jurisdiction: string | undefined }>): Promise<Array<V & { asked_node_id: string; asked_index: number }>> {
  const nodeIds = asks.map((a) => a.nodeId);
  const jurisdictions = asks.map((a) => a.jurisdiction ?? null);
  const withPolicy = asks.map((a) => a.jurisdiction !== undefined);
  const { rows } = await sql<V & { asked_node_id: string; asked_index: number }>`
    select q.node_id as asked_node_id, q.i as asked_index,
      s.state as study_state, r.round, r.phase, r.participants, r.instructions, r.fit_deadline, owed.owed_round, owed.owed_deadline,
      (select nodes.state from nodes where nodes.id = q.node_id) as node_state,
      sub.submitted is not null as submitted,
      (select to_json(obj) from (select * from audit_checkpoints order by seq desc limit 1) as obj) as checkpoint,
      case when q.with_policy then (select max(policies.version) from policies where policies.jurisdiction = q.jurisdiction) else null::integer end as policy_version
    from unnest(${nodeIds}::text[], ${jurisdictions}::text[], ${withPolicy}::boolean[]) with ordinality as q(node_id, jurisdiction, with_policy, i)
    join studies as s on s.id = ${studyId}
    left join lateral (
      select round, phase, participants, instructions, fit_deadline, evaluation_deadline from rounds
      where rounds.study_id = s.id and phase in ('fit', 'evaluate') order by round desc limit 1
    ) as r on true
    left join lateral (
      select o.round as owed_round, o.evaluation_deadline as owed_deadline from rounds as o
      where o.study_id = s.id and o.phase = 'evaluate'
        and exists (select ou.node_id from updates as ou where ou.study_id = o.study_id and ou.round = o.round and ou.node_id = q.node_id)
        and not exists (select oe.node_id from evaluations as oe where oe.study_id = o.study_id and oe.round = o.round and oe.node_id = q.node_id)
      order by o.round limit 1
    ) as owed on true
    -- A lateral probe of updates_pk per asked node, not an EXISTS in the select list: for that one
    -- PostgreSQL's generic plan hashes the whole updates table at every call, so each round's
    -- opening read every update of the study's history (600 rows at round 60 of the demo, growing
    -- by 10 a round: 1.49-1.97 ms for the ten nodes' views against 1.02-1.28 ms; issue 13).
    left join lateral (
      select true as submitted from updates as u where u.study_id = s.id and u.round = r.round and u.node_id = q.node_id limit 1
    ) as sub on true
    order by q.i`.execute(db);
  return rows;
}
