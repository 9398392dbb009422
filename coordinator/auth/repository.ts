import type { Insertable } from 'kysely';
import type { Db } from '../db/database.ts';
import { sqlOnce } from '../db/compiled-once.ts';
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

/** The node's row as a signed request's last step reads it, and whether its nonce was recorded now. */
export interface NodeAtNonce {
  id: string;
  study_id: string;
  name: string;
  region: string;
  state: Database['nodes']['state'];
  public_key: string | null;
  key_fingerprint: string | null;
  revoked_at: Date | string | null;
  jurisdiction: string | null;
  /** The latest version of its jurisdiction's policy profile (null: none), read in the same statement. */
  policy_version: number | null;
  recorded: boolean;
}

/**
 * One statement for a node's verified request (issue 13: auth was two PGlite round trips per
 * request, 1280 + 1280 of the demo's 8821 queries, 2.3 of 9.4 s): reads the node's row and records
 * the nonce, only while the node is not revoked and `fingerprint` is still its key; with the
 * latest version of its jurisdiction's policy (so a node's GET of its policy needs no query of its
 * own when that version's profile is known: 210 queries in the demo). `recorded` is
 * false for a replay, a revoked node, or a key rotated meanwhile; the row says which. Undefined
 * when there is no such node.
 */
export async function recordNonceForActiveNode(db: Db, nodeId: string, fingerprint: string, nonce: string): Promise<NodeAtNonce | undefined> {
  // sqlOnce: its text joined once (db/compiled-once.ts); every signed request runs it.
  const { rows } = await sqlOnce<NodeAtNonce>`
    with n as (
      select id, study_id, name, region, state, public_key, key_fingerprint, revoked_at, jurisdiction from nodes where id = ${nodeId}
    ), ins as (
      insert into request_nonces (fingerprint, nonce)
      select ${fingerprint}, ${nonce} from n where n.revoked_at is null and n.key_fingerprint = ${fingerprint}
      on conflict do nothing
      returning nonce
    )
    select n.*,
      (select max(p.version) from policies p where p.jurisdiction = n.jurisdiction) as policy_version,
      exists (select 1 from ins) as recorded
    from n`.execute(db);
  return rows[0];
}

/** Forgets nonces first seen before `before`. */
export async function forgetNoncesBefore(db: Db, before: Date) {
  await db.deleteFrom('request_nonces').where('seen_at', '<', before).execute();
}

/** Ids of the studies in which a region has at least one node (an analyst's visible studies). */
export async function studyIdsWithNodeInRegion(db: Db, region: string): Promise<Set<string>> {
  return new Set((await db.selectFrom('nodes').select('study_id').distinct().where('region', '=', region).execute()).map((r) => r.study_id));
}
