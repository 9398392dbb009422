import type { Insertable } from 'kysely';
import type { Db } from '../db/database.ts';
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
