import type { Selectable } from 'kysely';
import type { Db } from '../db/database.ts';
import type { RoundsTable } from '../db/schema.ts';

/**
 * The rounds' SQL that the strategy plumbing needs: plain functions taking `db` or a transaction
 * (Kysely's repository style). The round state machine (round-service.ts) calls these.
 */
export type RoundRow = Selectable<RoundsTable>;

/** Locks one round row for the rest of the transaction. */
export async function lockRound(tx: Db, studyId: string, round: number): Promise<RoundRow | undefined> {
  return tx.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).forUpdate().executeTakeFirst();
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

/** The updates an every-update strategy kept for a round, in arrival order. */
export async function keptUpdates(tx: Db, studyId: string, round: number): Promise<Uint8Array[]> {
  const rows = await tx.selectFrom('round_kept_updates').select('weights').where('study_id', '=', studyId).where('round', '=', round).orderBy('seq').execute();
  return rows.map((r) => new Uint8Array(r.weights));
}

/** Stores one kept update (once: the node's row is unique per round). */
export async function keepUpdate(tx: Db, input: { studyId: string; round: number; nodeId: string; bytes: Uint8Array }): Promise<void> {
  const { count } = await tx
    .selectFrom('round_kept_updates')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .where('study_id', '=', input.studyId)
    .where('round', '=', input.round)
    .executeTakeFirstOrThrow();
  await tx.insertInto('round_kept_updates').values({ study_id: input.studyId, round: input.round, seq: Number(count), node_id: input.nodeId, weights: input.bytes }).execute();
}

/** A closed round keeps no update: only published models persist. */
export async function dropKeptUpdates(tx: Db, studyId: string, round: number): Promise<void> {
  await tx.deleteFrom('round_kept_updates').where('study_id', '=', studyId).where('round', '=', round).execute();
}
