import { sql, type Insertable } from 'kysely';
import type { Db } from '../db/database.ts';
import { compiledOnce } from '../db/compiled-once.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of studies and their published global models. Plain functions taking `db` or a transaction.
 *
 * @example
 *   const row = await findStudyRow(db, studyId); // undefined when there is no such study
 */
export async function findStudyRow(db: Db, studyId: string) {
  return db.selectFrom('studies').selectAll().where('id', '=', studyId).executeTakeFirst();
}

/**
 * What a study's status shows, in two statements instead of five (issue 13: the demo follows the
 * status ~58 times, 5 statements each, the rounds read with their state blobs): the study row
 * with its nodes (by name), then its rounds with each round's model hash and update count,
 * without the rounds' accumulator and server state. Undefined when there is no such study.
 * Its rounds from `fromRound` on only (a follower asks only for those it has not seen closed).
 */
export async function findStudyStatusRows(db: Db, studyId: string, fromRound = 0) {
  const [study] = await statusStudyQuery(db, { studyId });
  if (!study) return undefined;
  const rounds = await statusRoundsQuery(db, { studyId, fromRound });
  return { study, rounds };
}

// Compiled once (db/compiled-once.ts): the status is long-polled once or twice a round by every
// follower (the demo, `fedmark study watch`, the dashboard), and kysely building these two was a
// round's largest query-building cost. The study's config is not read: the status takes the
// study's cached parse of it (study-service.ts).
const statusStudyQuery = compiledOnce((db, a: { studyId: string }) =>
  db
    .selectFrom('studies as s')
    .select(['s.id', 's.name', 's.state', 's.current_round', 's.latest_model_version', 's.stop_reason', 's.stopped_by', 's.stopped_at'])
    .select(sql<StatusNodeRow[]>`coalesce((select json_agg(json_build_object('id', n.id, 'name', n.name, 'region', n.region, 'state', n.state, 'state_message', n.state_message) order by n.name) from nodes n where n.study_id = s.id), '[]')`.as('nodes'))
    .where('s.id', '=', a.studyId),
);

const statusRoundsQuery = compiledOnce((db, a: { studyId: string; fromRound: number }) =>
  db
    .selectFrom('rounds as r')
    .select(['r.round', 'r.phase', 'r.participants', 'r.num_examples', 'r.mean_loss', 'r.validation_auc', 'r.validation_loss', 'r.validation_metrics', 'r.personalized_metrics', 'r.personalized_nodes', 'r.global_on_personalized_metrics', 'r.failure_reason', 'r.started_at', 'r.closed_at'])
    .select((eb) => [
      eb.selectFrom('models as m').select('m.sha256').whereRef('m.study_id', '=', 'r.study_id').whereRef('m.version', '=', 'r.round').as('model_sha256'),
      eb.selectFrom('updates as u').select((e) => e.fn.countAll<number>().as('n')).whereRef('u.study_id', '=', 'r.study_id').whereRef('u.round', '=', 'r.round').as('updates_received'),
    ])
    .where('r.study_id', '=', a.studyId)
    .where('r.round', '>=', a.fromRound)
    .orderBy('r.round'),
);

/** A study's node as its status lists it. */
export interface StatusNodeRow {
  id: string;
  name: string;
  region: string;
  state: string;
  state_message: string | null;
}

export async function findStudyConfig(db: Db, studyId: string): Promise<unknown | undefined> {
  return (await db.selectFrom('studies').select('config').where('id', '=', studyId).executeTakeFirst())?.config;
}

export async function listStudyRows(db: Db) {
  return db.selectFrom('studies').select(['id', 'name', 'state', 'current_round', 'config', 'created_at', 'stop_reason', 'stopped_by', 'stopped_at']).orderBy('created_at').execute();
}

/** Rounds closed (completed or failed) per study, by study id. */
export async function closedRoundCounts(db: Db): Promise<Map<string, number>> {
  const rows = await db.selectFrom('rounds').select(['study_id', (eb) => eb.fn.countAll<string>().as('n')]).where('phase', 'in', ['completed', 'failed']).groupBy('study_id').execute();
  return new Map(rows.map((r) => [r.study_id, Number(r.n)]));
}

export async function insertStudy(db: Db, row: Insertable<Database['studies']>) {
  await db.insertInto('studies').values(row).execute();
}

export async function insertModel(db: Db, row: Insertable<Database['models']>) {
  await db.insertInto('models').values(row).execute();
}

/** The study's latest global model version, or undefined when there is no such study. */
export async function latestModelVersion(db: Db, studyId: string): Promise<number | undefined> {
  return (await db.selectFrom('studies').select('latest_model_version').where('id', '=', studyId).executeTakeFirst())?.latest_model_version;
}

export async function findModel(db: Db, studyId: string, version: number) {
  return db.selectFrom('models').select(['version', 'weights', 'sha256', 'signature', 'signer_fingerprint']).where('study_id', '=', studyId).where('version', '=', version).executeTakeFirst();
}

/** Each published model's hash, by version. */
export async function modelHashes(db: Db, studyId: string): Promise<Map<number, string>> {
  const rows = await db.selectFrom('models').select(['version', 'sha256']).where('study_id', '=', studyId).execute();
  return new Map(rows.map((m) => [m.version, m.sha256]));
}
