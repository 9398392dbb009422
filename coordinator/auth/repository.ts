import type { Insertable } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of people's API tokens and of signed-request nonces. Plain functions taking `db` or a
 * transaction.
 *
 * @example
 *   const row = await findApiTokenByHash(db, hashSecret(token));
 */
export async function findApiTokenByHash(db: Db, tokenHash: string) {
  return db.selectFrom('api_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
}

export async function insertApiToken(db: Db, row: Insertable<Database['api_tokens']>) {
  await db.insertInto('api_tokens').values(row).execute();
}

/** Revokes an active token; false when there is no active token with that id. */
export async function revokeApiToken(db: Db, id: string, at: Date): Promise<boolean> {
  const result = await db.updateTable('api_tokens').set({ revoked_at: at }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function listApiTokens(db: Db) {
  return db.selectFrom('api_tokens').select(['id', 'role', 'name', 'region', 'created_at', 'revoked_at']).orderBy('created_at').execute();
}

/** Records a request nonce for a key; false when that key already used it (a replay). */
export async function recordNonce(db: Db, fingerprint: string, nonce: string): Promise<boolean> {
  const inserted = await db.insertInto('request_nonces').values({ fingerprint, nonce }).onConflict((oc) => oc.doNothing()).returning('nonce').executeTakeFirst();
  return inserted !== undefined;
}

/** Forgets nonces first seen before `before`. */
export async function forgetNoncesBefore(db: Db, before: Date) {
  await db.deleteFrom('request_nonces').where('seen_at', '<', before).execute();
}

/** Ids of the studies in which a region has at least one node (an analyst's visible studies). */
export async function studyIdsWithNodeInRegion(db: Db, region: string): Promise<Set<string>> {
  return new Set((await db.selectFrom('nodes').select('study_id').distinct().where('region', '=', region).execute()).map((r) => r.study_id));
}
