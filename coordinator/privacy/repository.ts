import type { Insertable, Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of the privacy ledger (client-level DP charged per round) and the reads behind the privacy
 * reports. Plain functions taking `db` or a transaction.
 *
 * @example
 *   const { rounds, total } = await ledgerTotals(tx, studyId); // inside the study's lock
 */

/** Rounds charged so far and the epsilon total after the last of them (null before any). */
export async function ledgerTotals(tx: Transaction<Database> | Db, studyId: string): Promise<{ rounds: number; total: number | null }> {
  const row = await tx.selectFrom('privacy_ledger').select(({ fn }) => [fn.countAll<number>().as('rounds'), fn.max('epsilon_total').as('total')]).where('study_id', '=', studyId).executeTakeFirstOrThrow();
  return { rounds: Number(row.rounds), total: row.total === null || row.total === undefined ? null : Number(row.total) };
}

export async function insertLedgerEntry(tx: Db, row: Insertable<Database['privacy_ledger']>) {
  await tx.insertInto('privacy_ledger').values(row).execute();
}

export async function listLedger(db: Db, studyId: string) {
  return db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).orderBy('round').execute();
}

export async function findStudyPrivacyRow(db: Db, studyId: string) {
  return db.selectFrom('studies').select(['config', 'stop_reason', 'state']).where('id', '=', studyId).executeTakeFirst();
}

/** A study's rounds: what the privacy report shows of each (no update values). */
export async function listRoundMechanisms(db: Db, studyId: string) {
  return db.selectFrom('rounds').select(['round', 'phase', 'clip_norm', 'mechanism', 'participants', 'started_at']).where('study_id', '=', studyId).orderBy('round').execute();
}

/** A study's nodes (or just `onlyNode`), by name. */
export async function listReportNodes(db: Db, studyId: string, onlyNode?: string) {
  let query = db.selectFrom('nodes').select(['id', 'name', 'region', 'enrolled_at']).where('study_id', '=', studyId);
  if (onlyNode !== undefined) query = query.where('id', '=', onlyNode);
  return query.orderBy('name').execute();
}

/** A study's updates' metadata (DP-SGD spending rides in it), by round; all nodes' or `onlyNode`'s. */
export async function listUpdateMeta(db: Db, studyId: string, onlyNode?: string) {
  let query = db.selectFrom('updates').select(['node_id', 'round', 'meta']).where('study_id', '=', studyId);
  if (onlyNode !== undefined) query = query.where('node_id', '=', onlyNode);
  return query.orderBy('round').execute();
}
