import type { Insertable, Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of regional models, and what a region's model is folded from at close: the round's stored
 * updates (and legacy running sums). Plain functions taking `db` or a transaction.
 *
 * @example
 *   const refs = await listKeptUpdateRefs(tx, studyId, round); // [{ seq, node_id, weight }] in arrival order
 */

/** The round's stored updates in arrival order: node and weight, not the weights (migration 0020). */
export async function listKeptUpdateRefs(tx: Db, studyId: string, round: number) {
  return tx.selectFrom('round_kept_updates').select(['seq', 'node_id', 'weight']).where('study_id', '=', studyId).where('round', '=', round).orderBy('seq').execute();
}

/** One stored update's bytes (a weights frame, as the global fold took it). */
export async function readKeptUpdate(tx: Db, studyId: string, round: number, seq: number): Promise<Uint8Array> {
  const row = await tx.selectFrom('round_kept_updates').select('weights').where('study_id', '=', studyId).where('round', '=', round).where('seq', '=', seq).executeTakeFirstOrThrow();
  return new Uint8Array(row.weights);
}

/** Running sums a coordinator before issue 13 wrote for the round (an upgrade mid-round), by region. */
export async function listRegionalAccumulators(tx: Db, studyId: string, round: number) {
  return tx.selectFrom('regional_accumulators').select(['region', 'state']).where('study_id', '=', studyId).where('round', '=', round).orderBy('region').execute();
}

/** A closed round's legacy running sums go with it (published or failed). */
export async function dropRegionalAccumulators(tx: Db, studyId: string, round: number): Promise<void> {
  await tx.deleteFrom('regional_accumulators').where('study_id', '=', studyId).where('round', '=', round).execute();
}

/** Region and jurisdiction of the given nodes. */
export async function nodeRegionsAndJurisdictions(tx: Db, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return tx.selectFrom('nodes').select(['id', 'region', 'jurisdiction']).where('id', 'in', nodeIds).execute();
}

export async function insertRegionalModel(tx: Db, row: Insertable<Database['regional_models']>): Promise<void> {
  await tx.insertInto('regional_models').values(row).execute();
}

/** A region's model of `version`, or its latest one. */
export async function findRegionalModel(db: Db, studyId: string, region: string, version?: number) {
  let query = db.selectFrom('regional_models').selectAll().where('study_id', '=', studyId).where('region', '=', region);
  query = version === undefined ? query.orderBy('version', 'desc') : query.where('version', '=', version);
  return query.limit(1).executeTakeFirst();
}

/** Version, hash and counts of every model of the region (never its weights). */
export async function listRegionalModelSummaries(db: Db, studyId: string, region: string) {
  return db.selectFrom('regional_models').select(['version', 'sha256', 'nodes', 'num_examples']).where('study_id', '=', studyId).where('region', '=', region).execute();
}

/** The study's id and config (undefined when there is no such study). */
export async function findStudyConfigRow(db: Db, studyId: string) {
  return db.selectFrom('studies').select(['id', 'config']).where('id', '=', studyId).executeTakeFirst();
}

/** The study's nodes of the region, by name. */
export async function listRegionMembers(db: Db, studyId: string, region: string) {
  return db.selectFrom('nodes').select(['id', 'name', 'state']).where('study_id', '=', studyId).where('region', '=', region).orderBy('name').execute();
}

/** Every round of the study with its phase and mechanism (where a withheld regional model's reason is). */
export async function listRoundPhases(db: Db, studyId: string) {
  return db.selectFrom('rounds').select(['round', 'phase', 'mechanism']).where('study_id', '=', studyId).orderBy('round').execute();
}

/** The given nodes' updates of the study: round, counts and released loss (never weights). */
export async function listNodeUpdates(db: Db, studyId: string, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return db.selectFrom('updates').select(['round', 'node_id', 'num_examples', 'loss']).where('study_id', '=', studyId).where('node_id', 'in', nodeIds).execute();
}

/** The given nodes' evaluation reports of the study. */
export async function listNodeEvaluations(db: Db, studyId: string, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return db.selectFrom('evaluations').select(['round', 'node_id', 'histogram', 'stats']).where('study_id', '=', studyId).where('node_id', 'in', nodeIds).execute();
}
