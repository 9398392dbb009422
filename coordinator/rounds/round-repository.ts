import type { Insertable, Selectable, Transaction, Updateable } from 'kysely';
import { sql } from 'kysely';
import { jsonObjectFrom } from 'kysely/helpers/postgres';
import type { Db } from '../db/database.ts';
import { compiledOnce, sqlOnce } from '../db/compiled-once.ts';
import type { Database, RoundsTable, StudiesTable } from '../db/schema.ts';
import { isPglite } from '../db/migrations/20261129_0009_app_role.ts';
import { createTaskViewBatcher, findTaskViewsOf } from './task-views.ts';

/**
 * SQL of rounds: the round state machine's (opening, closing, submitting; see round-service.ts)
 * and the read-only round views (GET a round, a submission, a study's round list). Plain functions
 * taking `db` or a transaction (Kysely's repository style); `.forUpdate()` where a row is locked
 * for the rest of the transaction.
 *
 * @example
 *   const row = await lockRound(tx, studyId, 1); // inside db.transaction().execute(...)
 *   const view = await findRound(db, studyId, 1); // undefined when the study has no round 1
 */
export type RoundRow = Selectable<RoundsTable>;

/**
 * The phases of a round that is still open, as SQL literals, not bound parameters: the partial
 * index of the rounds in flight (migration 0024) serves a statement only when its text says which
 * phases, and the coordinator's statements run prepared with a generic plan
 * (db/pglite-prepared.ts), which cannot look at a parameter's value. Bound, each of these walked
 * every round of the study (issue 13).
 */
const OPEN_PHASES_SQL = (['fit', 'evaluate'] as const).map((phase) => sql.lit<RoundsTable['phase']>(phase));
const EVALUATE_SQL = sql.lit<RoundsTable['phase']>('evaluate');

// ---- the round row ------------------------------------------------------------------------------

/** Locks one round row for the rest of the transaction. */
export async function lockRound(tx: Db, studyId: string, round: number): Promise<RoundRow | undefined> {
  return tx.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).forUpdate().executeTakeFirst();
}

/** A round's phase, participants and deadlines: what a caller deciding on the phase needs. */
export type RoundHead = Pick<RoundRow, 'study_id' | 'round' | 'phase' | 'participants' | 'fit_deadline' | 'evaluation_deadline'>;

/**
 * Locks one round row like lockRound, reading only its head: not the state blobs (accumulator,
 * server state, next server state: up to 8 bytes a parameter each, e.g. FedAdam's moments), which
 * only the fit phase's intake and close use.
 */
export async function lockRoundHead(tx: Db, studyId: string, round: number): Promise<RoundHead | undefined> {
  const [row] = await lockRoundHeadQuery(tx, { studyId, round });
  return row;
}
const ROUND_HEAD = ['study_id', 'round', 'phase', 'participants', 'fit_deadline', 'evaluation_deadline'] as const;
const lockRoundHeadQuery = compiledOnce((tx, a: { studyId: string; round: number }) => tx.selectFrom('rounds').select(ROUND_HEAD).where('study_id', '=', a.studyId).where('round', '=', a.round).forUpdate());

/**
 * What the intake needs of the locked round row: its head and mechanism (the strategy's round
 * context). The state blobs (server state, accumulator) only `withState`: central DP resumes from
 * them on every update and every-update strategies start each accept from the server state;
 * otherwise the fold cache reads them only when it rebuilds (loadRoundState), once a round.
 */
export type IntakeRound = RoundHead & Pick<RoundRow, 'mechanism'> & Partial<Pick<RoundRow, 'server_state' | 'accumulator'>>;

/** Locks one round row for the rest of the transaction, reading what the intake needs (see IntakeRound). */
export async function lockIntakeRound(tx: Db, studyId: string, round: number, withState: boolean): Promise<IntakeRound | undefined> {
  const [row] = await (withState ? lockIntakeRoundWithState : lockIntakeRoundHead)(tx, { studyId, round });
  return row;
}

// `mechanism` gives roundContext its denominator (expectedParticipants = q x ready nodes). No fold
// built at accept consumes it today: q < 1 exists only under central DP, whose fold is rebuilt
// from the full row at close (close-fit.ts), and every other study has q = 1, where it equals
// participants.length. So leaving it out passes every test (a mutation run, stop 18); it stays so
// that a fold built here always carries the round's true context.
const INTAKE_HEAD = [...ROUND_HEAD, 'mechanism'] as const;
const lockIntakeRoundHead = compiledOnce((tx, a: { studyId: string; round: number }) => tx.selectFrom('rounds').select(INTAKE_HEAD).where('study_id', '=', a.studyId).where('round', '=', a.round).forUpdate());
const lockIntakeRoundWithState = compiledOnce((tx, a: { studyId: string; round: number }) =>
  tx.selectFrom('rounds').select([...INTAKE_HEAD, 'server_state', 'accumulator']).where('study_id', '=', a.studyId).where('round', '=', a.round).forUpdate(),
);

/** The round row's state blobs (read under the lock the caller's transaction already holds). */
export async function loadRoundState(tx: Db, studyId: string, round: number): Promise<Pick<RoundRow, 'server_state' | 'accumulator'>> {
  return tx.selectFrom('rounds').select(['server_state', 'accumulator']).where('study_id', '=', studyId).where('round', '=', round).executeTakeFirstOrThrow();
}

/** The round before `round`, for the server state it handed on. */
export async function previousRound(tx: Db, studyId: string, round: number): Promise<Pick<RoundRow, 'round' | 'phase' | 'server_state' | 'next_server_state' | 'mechanism'> | undefined> {
  return tx
    .selectFrom('rounds')
    .select(['round', 'phase', 'server_state', 'next_server_state', 'mechanism'])
    .where('study_id', '=', studyId)
    .where('round', '<', round)
    .orderBy('round', 'desc')
    .limit(1)
    .executeTakeFirst();
}

/**
 * The number of the study's latest open round (fit or evaluate), if any. Under evaluationSchedule
 * 'with-next-fit' round r may still be evaluating while round r+1 is in its fit phase: r+1 then.
 */
export async function findOpenRoundNumber(db: Db, studyId: string): Promise<number | undefined> {
  return (await db.selectFrom('rounds').select('round').where('study_id', '=', studyId).where('phase', 'in', OPEN_PHASES_SQL).orderBy('round', 'desc').limit(1).executeTakeFirst())?.round;
}

/** The study's open rounds (at most two: see findOpenRoundNumber) with their phase, oldest first. */
export async function listStudyOpenRounds(db: Db, studyId: string): Promise<Array<{ round: number; phase: string }>> {
  return studyOpenRoundsQuery(db, { studyId });
}
const studyOpenRoundsQuery = compiledOnce((db, a: { studyId: string }) => db.selectFrom('rounds').select(['round', 'phase']).where('study_id', '=', a.studyId).where('phase', 'in', OPEN_PHASES_SQL).orderBy('round'));

/** The study's latest open round, whole (not locked: a node's task is only read from it). */
export async function findLatestOpenRound(db: Db, studyId: string): Promise<RoundRow | undefined> {
  return db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('phase', 'in', OPEN_PHASES_SQL).orderBy('round', 'desc').executeTakeFirst();
}

/**
 * Everything a node's task request needs, in one statement (issue 13: each woken long-poll used to
 * cost six): the study's state, its latest open round (without the large state columns), the
 * node's state now, whether it already sent its update for that round, the oldest round in its
 * evaluation phase that this node trained in and has not evaluated yet (`owed_round`: with
 * evaluationSchedule 'with-next-fit' it may be the round before the open fit round), and the
 * latest signed audit checkpoint (handed to the node as a witness). With `jurisdiction`, also the
 * latest version of that jurisdiction's policy (`policy_version`, null: none; tasks.ts
 * policyInForce re-reads it after a long-poll wait, in this statement rather than one more).
 * Undefined: no such study.
 */
export function findTaskView(db: Db, studyId: string, nodeId: string, jurisdiction?: string) {
  // Lookups woken together (a round's opening) are read in one statement (task-views.ts).
  return taskViews(db, studyId, nodeId, jurisdiction);
}

async function findOneTaskView(db: Db, studyId: string, nodeId: string, jurisdiction: string | undefined) {
  const [row] = jurisdiction === undefined ? await taskViewQuery(db, { studyId, nodeId }) : await taskViewWithPolicyQuery(db, { studyId, nodeId, jurisdiction });
  return row;
}
type OneTaskView = NonNullable<Awaited<ReturnType<typeof findOneTaskView>>>;
const taskViews = createTaskViewBatcher<OneTaskView>(findOneTaskView, (db, studyId, asks) => findTaskViewsOf<OneTaskView>(db, studyId, asks));

/** Compiled once (db/compiled-once.ts): the task view is the coordinator's most frequent query. */
const taskViewQuery = compiledOnce((db, a: { studyId: string; nodeId: string }) => taskViewBuilder(db, a.studyId, a.nodeId, undefined));
const taskViewWithPolicyQuery = compiledOnce((db, a: { studyId: string; nodeId: string; jurisdiction: string }) => taskViewBuilder(db, a.studyId, a.nodeId, a.jurisdiction));

function taskViewBuilder(db: Db, studyId: string, nodeId: string, jurisdiction: string | undefined) {
  return db
    .selectFrom('studies as s')
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('rounds')
          .select(['round', 'phase', 'participants', 'instructions', 'fit_deadline', 'evaluation_deadline'])
          .whereRef('rounds.study_id', '=', 's.id')
          .where('phase', 'in', OPEN_PHASES_SQL)
          .orderBy('round', 'desc')
          .limit(1)
          .as('r'),
      (join) => join.onTrue(),
    )
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('rounds as o')
          .select(['o.round as owed_round', 'o.evaluation_deadline as owed_deadline'])
          .whereRef('o.study_id', '=', 's.id')
          .where('o.phase', '=', EVALUATE_SQL)
          .where(({ exists, selectFrom }) => exists(selectFrom('updates as ou').select('ou.node_id').whereRef('ou.study_id', '=', 'o.study_id').whereRef('ou.round', '=', 'o.round').where('ou.node_id', '=', nodeId)))
          .where(({ not, exists, selectFrom }) => not(exists(selectFrom('evaluations as oe').select('oe.node_id').whereRef('oe.study_id', '=', 'o.study_id').whereRef('oe.round', '=', 'o.round').where('oe.node_id', '=', nodeId))))
          .orderBy('o.round')
          .limit(1)
          .as('owed'),
      (join) => join.onTrue(),
    )
    .select(['s.state as study_state', 'r.round', 'r.phase', 'r.participants', 'r.instructions', 'r.fit_deadline', 'owed.owed_round', 'owed.owed_deadline'])
    .select((eb) => [
      eb.selectFrom('nodes').select('nodes.state').where('nodes.id', '=', nodeId).as('node_state'),
      // One row asks: the planner probes updates_pk for it even in a generic plan (the batched views
      // need a lateral for that: task-views.ts; test/coordinator/task-view-batch.test.ts checks both).
      eb.exists(eb.selectFrom('updates as u').select('u.node_id').whereRef('u.study_id', '=', 's.id').whereRef('u.round', '=', 'r.round').where('u.node_id', '=', nodeId)).as('submitted'),
      jsonObjectFrom(eb.selectFrom('audit_checkpoints').selectAll().orderBy('seq', 'desc').limit(1)).as('checkpoint'),
      (jurisdiction === undefined ? sql<number | null>`null::integer` : eb.selectFrom('policies').select((q) => q.fn.max('policies.version').as('v')).where('policies.jurisdiction', '=', jurisdiction)).as('policy_version'),
    ])
    .where('s.id', '=', studyId);
}
export type TaskView = NonNullable<Awaited<ReturnType<typeof findTaskView>>>;

/** Every open round of every study, with the deadline of its phase (for re-arming timers). */
export async function listOpenRounds(db: Db) {
  return db.selectFrom('rounds').select(['study_id', 'round', 'phase', 'fit_deadline', 'evaluation_deadline']).where('phase', 'in', OPEN_PHASES_SQL).execute();
}

/**
 * Open rounds whose phase deadline is at or before `at` (the round service's clock, not the
 * database's, so a test clock moves it too): what the deadline sweep closes, oldest first.
 */
export async function listOverdueRounds(db: Db, at: Date) {
  return db
    .selectFrom('rounds')
    .select(['study_id', 'round', 'phase'])
    .where((eb) => eb.or([eb.and([eb('phase', '=', 'fit'), eb('fit_deadline', '<=', at)]), eb.and([eb('phase', '=', 'evaluate'), eb('evaluation_deadline', '<=', at)])]))
    .orderBy('study_id')
    .orderBy('round')
    .execute();
}

/** Running studies with no open round: one may be due to open (the sweep asks each). */
export async function listRunningStudiesWithoutOpenRound(db: Db): Promise<string[]> {
  const rows = await db
    .selectFrom('studies')
    .select('id')
    .where('state', '=', 'running')
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('rounds').select('round').whereRef('rounds.study_id', '=', 'studies.id').where('rounds.phase', 'in', OPEN_PHASES_SQL))))
    .orderBy('id')
    .execute();
  return rows.map((r) => r.id);
}

export async function insertRound(tx: Db, row: Insertable<RoundsTable>): Promise<void> {
  await tx.insertInto('rounds').values(row).execute();
}

export async function updateRound(tx: Db, studyId: string, round: number, changes: Updateable<RoundsTable>): Promise<void> {
  await tx.updateTable('rounds').set(changes).where('study_id', '=', studyId).where('round', '=', round).execute();
}

// ---- kept updates (strategies that need every update) ----------------------------------------

/** The updates an every-update strategy kept for a round, in arrival order. */
export async function keptUpdates(tx: Db, studyId: string, round: number): Promise<Uint8Array[]> {
  const rows = await tx.selectFrom('round_kept_updates').select('weights').where('study_id', '=', studyId).where('round', '=', round).orderBy('seq').execute();
  return rows.map((r) => new Uint8Array(r.weights));
}

/**
 * Stores one kept update (once: the node's row is unique per round), its seq the number already
 * kept, in one statement (it was a count, then an insert; issue 13).
 */
export async function keepUpdate(tx: Db, input: { studyId: string; round: number; nodeId: string; bytes: Uint8Array; weight?: number }): Promise<void> {
  await sql`insert into round_kept_updates (study_id, round, seq, node_id, weights, weight)
    select ${input.studyId}, ${input.round}::int, count(*)::int, ${input.nodeId}, ${input.bytes}::bytea, ${input.weight ?? null}::double precision
    from round_kept_updates where study_id = ${input.studyId} and round = ${input.round}`.execute(tx);
}

/** A closed round keeps no update: only published models persist. Returns the bytes the dropped updates took (their space, for reclaimKeptUpdateSpace). */
export async function dropKeptUpdates(tx: Db, studyId: string, round: number): Promise<number> {
  const rows = await tx
    .deleteFrom('round_kept_updates')
    .where('study_id', '=', studyId)
    .where('round', '=', round)
    .returning(sql<number>`pg_column_size(weights)`.as('size'))
    .execute();
  return rows.reduce((sum, r) => sum + Number(r.size), 0);
}

/**
 * Dropped kept updates, in bytes, after which their space is reclaimed (reclaimKeptUpdateSpace).
 * A VACUUM of the table costs ~8 ms of the coordinator's single thread on PGlite however little
 * it frees: after every round of the 10-node demo (ten 19 KB updates) it was 2-3% of the
 * coordinator's CPU for 190 KB; now it runs every sixth round there. The file grows by at most this
 * much plus one round's updates before its space is reused, and a round of 1M-parameter updates
 * (4 MB each) still reclaims after every close.
 */
export const KEPT_SPACE_RECLAIM_BYTES = 1024 * 1024;

const embedded = new WeakMap<Db, Promise<boolean>>();

/**
 * Frees the space of dropped kept updates for the next round's (issue 13): `VACUUM` of
 * `round_kept_updates` on PGlite, which runs no autovacuum; migration 0022 keeps the freed pages
 * in the file, so the next round writes its updates into them instead of growing the file (which
 * writes every new page twice: zeros, then data). Without it PGlite's database grew by every
 * update ever received (400 MB a round at 100 nodes x 1M parameters). On PostgreSQL autovacuum
 * does this: false, nothing run. Outside any transaction (VACUUM cannot run in one).
 */
export async function reclaimKeptUpdateSpace(db: Db): Promise<boolean> {
  let pglite = embedded.get(db);
  if (!pglite) embedded.set(db, (pglite = isPglite(db)));
  if (!(await pglite)) return false;
  await sql`vacuum round_kept_updates`.execute(db);
  return true;
}

// ---- updates and evaluations --------------------------------------------------------------------

/** A node's accepted update for a round (a retry is compared with it), if any. */
export async function findUpdate(db: Db, studyId: string, round: number, nodeId: string) {
  return db.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('round', '=', round).where('node_id', '=', nodeId).executeTakeFirst();
}

/**
 * Of the round's participants, how many the fit phase still waits for: no update yet, and a node
 * state that still allows training (or no node row at all). 0: all in. One query where it was
 * two (issue 13).
 */
export async function countAwaitedUpdates(db: Db, studyId: string, round: number, participants: string[], allowed: ReadonlySet<string>): Promise<number> {
  if (participants.length === 0) return 0;
  const { rows } = await sql<{ n: number | string }>`
    select count(*) as n from unnest(${sql.val(participants)}::text[]) as p(id)
    left join nodes on nodes.id = p.id
    where not exists (select from updates u where u.study_id = ${studyId} and u.round = ${round} and u.node_id = p.id)
      and (nodes.state is null or nodes.state = any(${sql.val([...allowed])}::text[]))`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Of the nodes that sent an update for the round, how many the evaluation phase still waits for:
 * no evaluation yet, and a node state that still allows evaluating (or no node row). 0: all in.
 */
export async function countAwaitedEvaluations(db: Db, studyId: string, round: number, allowed: ReadonlySet<string>): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`
    select count(*) as n from updates u
    left join nodes on nodes.id = u.node_id
    where u.study_id = ${studyId} and u.round = ${round}
      and not exists (select from evaluations e where e.study_id = u.study_id and e.round = u.round and e.node_id = u.node_id)
      and (nodes.state is null or nodes.state = any(${sql.val([...allowed])}::text[]))`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** A node's earlier update of the round, as a retry is compared with it. */
export type PreviousUpdate = { sha256: string; bytes: number; meta: unknown; accepted_at: Date | string };

/**
 * Everything an arriving update is checked against, in one statement read under the round row's
 * lock (it was four; issue 13): the node's state and the row count of its status report, its
 * earlier update of the round (a retry or a duplicate), the nodes of the round's stored updates in
 * fold order (the fold cache's check, fold-cache.ts), and how many other participants the fit
 * phase still waits for (countAwaitedUpdates without this node: 0 means all in once it is stored).
 * It must follow the lock in its own statement: on PostgreSQL a statement's snapshot is taken
 * before it waits for a lock, so a read in the locking statement could miss the update the lock
 * holder committed meanwhile. Throws when there is no such node (an authenticated node always is).
 */
export async function readUpdateIntake(tx: Db, input: { studyId: string; round: number; nodeId: string; participants: string[]; allowed: ReadonlySet<string> }) {
  const { studyId, round, nodeId } = input;
  const query = sqlOnce<{ state: string; status_rows: unknown; sha256: string | null; bytes: number | null; meta: unknown; accepted_at: Date | string | null; kept_node_ids: string[] | null; awaited_others: number | string }>`
    select n.state, n.data_report -> 'rows' as status_rows, u.sha256, u.bytes, u.meta, u.accepted_at,
      (select array_agg(k.node_id order by k.seq) from round_kept_updates k where k.study_id = ${studyId} and k.round = ${round}) as kept_node_ids,
      (select count(*) from unnest(${input.participants}::text[]) as p(id) left join nodes pn on pn.id = p.id
        where p.id <> n.id
          and not exists (select from updates w where w.study_id = ${studyId} and w.round = ${round} and w.node_id = p.id)
          and (pn.state is null or pn.state = any(${[...input.allowed]}::text[]))) as awaited_others
    from nodes n left join updates u on u.study_id = ${studyId} and u.round = ${round} and u.node_id = n.id
    where n.id = ${nodeId}`;
  const { rows } = await query.execute(tx);
  const row = rows[0];
  if (!row) throw new Error(`no node ${nodeId}`);
  const previous: PreviousUpdate | undefined = row.sha256 === null ? undefined : { sha256: row.sha256, bytes: Number(row.bytes), meta: row.meta, accepted_at: row.accepted_at! };
  return { state: row.state, statusRows: numberOrUndefined(row.status_rows), previous, keptNodeIds: row.kept_node_ids ?? [], awaitedOthers: Number(row.awaited_others) };
}

/**
 * Everything an arriving evaluation is checked against, in one statement read under the round
 * row's lock (it was three, and the count after the insert a fourth; issue 13): the node's update
 * of the round (no update, no evaluation; its declared rows), its status report's row count, its
 * earlier evaluation (a retry or a duplicate), and how many other nodes that trained the phase
 * still waits for (countAwaitedEvaluations without this node). Why after the lock: readUpdateIntake.
 */
export async function readEvaluationIntake(tx: Db, input: { studyId: string; round: number; nodeId: string; allowed: ReadonlySet<string> }) {
  const { studyId, round, nodeId } = input;
  const query = sqlOnce<{ status_rows: unknown; trained: boolean; update_meta: unknown; evaluated: boolean; histogram: unknown; stats: unknown; num_examples: number; loss: number | null; personalized_stats: unknown; awaited_others: number | string }>`
    select n.data_report -> 'rows' as status_rows, u.node_id is not null as trained, u.meta as update_meta,
      e.node_id is not null as evaluated, e.histogram, e.stats, e.num_examples, e.loss, e.personalized_stats,
      (select count(*) from updates w left join nodes wn on wn.id = w.node_id
        where w.study_id = ${studyId} and w.round = ${round} and w.node_id <> n.id
          and not exists (select from evaluations x where x.study_id = w.study_id and x.round = w.round and x.node_id = w.node_id)
          and (wn.state is null or wn.state = any(${[...input.allowed]}::text[]))) as awaited_others
    from nodes n
      left join updates u on u.study_id = ${studyId} and u.round = ${round} and u.node_id = n.id
      left join evaluations e on e.study_id = ${studyId} and e.round = ${round} and e.node_id = n.id
    where n.id = ${nodeId}`;
  const { rows } = await query.execute(tx);
  const row = rows[0];
  if (!row) throw new Error(`no node ${nodeId}`);
  const previous = row.evaluated ? { histogram: row.histogram, stats: row.stats, num_examples: Number(row.num_examples), loss: row.loss, personalized_stats: row.personalized_stats } : undefined;
  return { statusRows: numberOrUndefined(row.status_rows), update: row.trained ? { meta: row.update_meta } : undefined, previous, awaitedOthers: Number(row.awaited_others) };
}

const numberOrUndefined = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

/**
 * Stores an accepted update in one statement (it was up to five; issue 13): its record, the node
 * seen at `at`, and either its kept (folded) form at `kept.seq` (the number of updates the caller
 * read as stored, under the round row's lock) or, under central DP, the round's noised running
 * state. Data-modifying CTEs run whether or not the insert reads them.
 */
export async function recordUpdate(tx: Db, input: { update: Insertable<Database['updates']>; at: Date } & ({ kept: { seq: number; bytes: Uint8Array; weight: number } } | { accumulator: Uint8Array })): Promise<void> {
  const u = input.update;
  // The two forms storeUpdate writes, each one text joined once (sqlOnce, db/compiled-once.ts).
  if ('kept' in input) {
    await sqlOnce`with seen as (update nodes set last_seen_at = ${input.at} where id = ${u.node_id}),
      kept as (insert into round_kept_updates (study_id, round, seq, node_id, weights, weight) values (${u.study_id}, ${u.round}, ${input.kept.seq}, ${u.node_id}, ${input.kept.bytes}, ${input.kept.weight}))
      insert into updates (study_id, round, node_id, sha256, bytes, num_examples, loss, meta, accepted_at)
      values (${u.study_id}, ${u.round}, ${u.node_id}, ${u.sha256}, ${u.bytes}, ${u.num_examples}, ${u.loss ?? null}, ${u.meta}, ${u.accepted_at})`.execute(tx);
    return;
  }
  await sqlOnce`with seen as (update nodes set last_seen_at = ${input.at} where id = ${u.node_id}),
    state as (update rounds set accumulator = ${input.accumulator} where study_id = ${u.study_id} and round = ${u.round})
    insert into updates (study_id, round, node_id, sha256, bytes, num_examples, loss, meta, accepted_at)
    values (${u.study_id}, ${u.round}, ${u.node_id}, ${u.sha256}, ${u.bytes}, ${u.num_examples}, ${u.loss ?? null}, ${u.meta}, ${u.accepted_at})`.execute(tx);
}

/** The nodes whose update for the round was accepted. */
export async function listUpdaterIds(db: Db, studyId: string, round: number): Promise<string[]> {
  const rows = await db.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute();
  return rows.map((r) => r.node_id);
}

/** What each accepted update of the round contributes to its totals: counts and released loss. */
export async function listUpdateContributions(db: Db, studyId: string, round: number) {
  return db.selectFrom('updates').select(['node_id', 'num_examples', 'loss']).where('study_id', '=', studyId).where('round', '=', round).execute();
}

export async function insertUpdate(tx: Db, row: Insertable<Database['updates']>): Promise<void> {
  await tx.insertInto('updates').values(row).execute();
}

/** A node's evaluation report for a round (a retry is compared with it), if any. */
export async function findEvaluation(db: Db, studyId: string, round: number, nodeId: string) {
  return db.selectFrom('evaluations').select(['histogram', 'stats', 'num_examples', 'loss', 'personalized_stats']).where('study_id', '=', studyId).where('round', '=', round).where('node_id', '=', nodeId).executeTakeFirst();
}

/** The round's evaluation reports, for pooling. */
export async function listRoundEvaluations(db: Db, studyId: string, round: number) {
  return db.selectFrom('evaluations').select(['node_id', 'num_examples', 'loss', 'histogram', 'stats', 'personalized_stats', 'personalized_num_examples']).where('study_id', '=', studyId).where('round', '=', round).execute();
}

export async function insertEvaluation(tx: Db, row: Insertable<Database['evaluations']>): Promise<void> {
  await tx.insertInto('evaluations').values(row).execute();
}

/** A node's evaluation report as the intake stores it, every column given (sqlOnce: its text joined once). */
export async function insertEvaluationReport(tx: Db, row: { study_id: string; round: number; node_id: string; num_examples: number; loss: number | null; histogram: null; stats: string; personalized_stats: string | null; personalized_num_examples: number | null }): Promise<void> {
  await sqlOnce`insert into evaluations (study_id, round, node_id, num_examples, loss, histogram, stats, personalized_stats, personalized_num_examples)
    values (${row.study_id}, ${row.round}, ${row.node_id}, ${row.num_examples}, ${row.loss}, ${row.histogram}, ${row.stats}, ${row.personalized_stats}, ${row.personalized_num_examples})`.execute(tx);
}

// ---- the study, its nodes and its models, as the round machine needs them ----------------------

/** The study row, locked: opening a round (and charging its budget) holds it. */
export async function lockStudy(tx: Transaction<Database>, studyId: string) {
  return tx.selectFrom('studies').selectAll().where('id', '=', studyId).forUpdate().executeTakeFirst();
}

/** The study's state (undefined when there is no such study). */
export async function findStudyState(db: Db, studyId: string): Promise<string | undefined> {
  return (await db.selectFrom('studies').select('state').where('id', '=', studyId).executeTakeFirst())?.state;
}

/** Studies by state and rounds by phase, counted (the metrics' gauges: every end counted, operator stops and restarts included). */
export async function countStudiesAndRounds(db: Db): Promise<{ studies: Array<{ state: string; n: number }>; rounds: Array<{ phase: string; n: number }> }> {
  const studies = await db.selectFrom('studies').select(['state', db.fn.countAll<number>().as('n')]).groupBy('state').execute();
  const rounds = await db.selectFrom('rounds').select(['phase', db.fn.countAll<number>().as('n')]).groupBy('phase').execute();
  return { studies: studies.map((r) => ({ state: r.state, n: Number(r.n) })), rounds: rounds.map((r) => ({ phase: r.phase, n: Number(r.n) })) };
}

export async function listRunningStudyIds(db: Db): Promise<string[]> {
  const rows = await db.selectFrom('studies').select('id').where('state', '=', 'running').execute();
  return rows.map((r) => r.id);
}

export async function updateStudy(tx: Db, studyId: string, changes: Updateable<StudiesTable>): Promise<void> {
  await tx.updateTable('studies').set(changes).where('id', '=', studyId).execute();
}

/** The study's ready nodes, by id. */
export async function listReadyNodeIds(tx: Db, studyId: string): Promise<string[]> {
  const rows = await tx.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('state', '=', 'ready').orderBy('id').execute();
  return rows.map((r) => r.id);
}

/** Id and region of the given nodes, by id. */
export async function nodeRegions(tx: Db, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return tx.selectFrom('nodes').select(['id', 'region']).where('id', 'in', nodeIds).orderBy('id').execute();
}

/** Id and state of the given nodes, by id. */
export async function nodeStates(tx: Db, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return tx.selectFrom('nodes').select(['id', 'state']).where('id', 'in', nodeIds).orderBy('id').execute();
}

export async function markNodeSeen(tx: Db, nodeId: string, at: Date): Promise<void> {
  await tx.updateTable('nodes').set({ last_seen_at: at }).where('id', '=', nodeId).execute();
}

/** A published global model's bytes, hash and size; throws (NoResultError) when there is none. */
export async function getModel(tx: Db, studyId: string, version: number) {
  return tx.selectFrom('models').select(['weights', 'sha256', 'bytes']).where('study_id', '=', studyId).where('version', '=', version).executeTakeFirstOrThrow();
}

export async function insertModel(tx: Db, row: Insertable<Database['models']>): Promise<void> {
  await tx.insertInto('models').values(row).execute();
}

// ---- read-only round views ----------------------------------------------------------------------

export async function findRound(db: Db, studyId: string, round: number) {
  return db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
}

export async function listRounds(db: Db, studyId: string) {
  return db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).orderBy('round').execute();
}

/** Updates received per round. */
export async function updateCountsByRound(db: Db, studyId: string): Promise<Map<number, number>> {
  const rows = await db.selectFrom('updates').select(['round', ({ fn }) => fn.countAll<number>().as('count')]).where('study_id', '=', studyId).groupBy('round').execute();
  return new Map(rows.map((r) => [r.round, Number(r.count)]));
}

/** A round's accepted updates with their node's name and region, in the order they came. */
export async function listRoundUpdates(db: Db, studyId: string, round: number) {
  return db
    .selectFrom('updates')
    .innerJoin('nodes', 'nodes.id', 'updates.node_id')
    .select(['updates.node_id', 'nodes.name', 'nodes.region', 'updates.sha256', 'updates.bytes', 'updates.num_examples', 'updates.loss', 'updates.meta', 'updates.accepted_at'])
    .where('updates.study_id', '=', studyId)
    .where('updates.round', '=', round)
    .orderBy('updates.accepted_at')
    .execute();
}
