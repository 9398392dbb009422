import type { Insertable } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of the coordinator's keys: every key it has used, with the announcement (signed by the key
 * before it) that introduced it. Plain functions taking `db` or a transaction.
 *
 * @example
 *   await recordKey(tx, { fingerprint, public_key: armored, announcement }); // in the rotation's transaction
 */

/** Records a key at start-up; a key already on record is left as it is. */
export async function recordKeyIfAbsent(db: Db, row: Insertable<Database['coordinator_keys']>): Promise<void> {
  await db.insertInto('coordinator_keys').values(row).onConflict((oc) => oc.column('fingerprint').doNothing()).execute();
}

export async function recordKey(tx: Db, row: Insertable<Database['coordinator_keys']>): Promise<void> {
  await tx.insertInto('coordinator_keys').values(row).execute();
}

/** Whether the key with this fingerprint is on record (i.e. its rotation committed). */
export async function isKeyRecorded(db: Db, fingerprint: string): Promise<boolean> {
  return (await db.selectFrom('coordinator_keys').select('fingerprint').where('fingerprint', '=', fingerprint).executeTakeFirst()) !== undefined;
}

/** Every key on record with its announcement, oldest first. */
export async function listKeyHistory(db: Db) {
  return db.selectFrom('coordinator_keys').select(['fingerprint', 'announcement', 'created_at']).orderBy('created_at').execute();
}
