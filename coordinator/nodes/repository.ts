import type { Insertable, Transaction, Updateable } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of nodes and their enrollment tokens. Plain functions taking `db` or a transaction;
 * `.forUpdate()` where a row is locked for the rest of the transaction.
 *
 * @example
 *   const row = await findNodeByApiKeyHash(db, hashSecret(apiKey));
 */
type NodeRow = Database['nodes'];

export async function insertEnrollmentToken(db: Db, row: Insertable<Database['enrollment_tokens']>) {
  await db.insertInto('enrollment_tokens').values(row).execute();
}

/** The token row, locked until the transaction ends (a token is used once, by one enrollment). */
export async function lockEnrollmentToken(tx: Transaction<Database>, tokenHash: string) {
  return tx.selectFrom('enrollment_tokens').selectAll().where('token_hash', '=', tokenHash).forUpdate().executeTakeFirst();
}

export async function markEnrollmentTokenUsed(db: Db, tokenHash: string, nodeId: string, at: Date) {
  await db.updateTable('enrollment_tokens').set({ used_at: at, node_id: nodeId }).where('token_hash', '=', tokenHash).execute();
}

export async function findNodeIdByName(db: Db, studyId: string, name: string): Promise<string | undefined> {
  return (await db.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('name', '=', name).executeTakeFirst())?.id;
}

export async function insertNode(db: Db, row: Insertable<NodeRow>) {
  await db.insertInto('nodes').values(row).execute();
}

export async function findNodeByApiKeyHash(db: Db, apiKeyHash: string) {
  return db.selectFrom('nodes').select(['id', 'study_id', 'name', 'region', 'state', 'public_key', 'key_fingerprint', 'revoked_at']).where('api_key_hash', '=', apiKeyHash).executeTakeFirst();
}

/** The same columns as findNodeByApiKeyHash, by node id. */
export async function findNodeForAuth(db: Db, nodeId: string) {
  return db.selectFrom('nodes').select(['id', 'study_id', 'name', 'region', 'state', 'public_key', 'key_fingerprint', 'revoked_at']).where('id', '=', nodeId).executeTakeFirst();
}

export async function findNodeForRevocation(db: Db, nodeId: string) {
  return db.selectFrom('nodes').select(['id', 'study_id', 'revoked_at']).where('id', '=', nodeId).executeTakeFirst();
}

export async function updateNode(db: Db, nodeId: string, changes: Updateable<NodeRow>) {
  await db.updateTable('nodes').set(changes).where('id', '=', nodeId).execute();
}

/** A status report's changes, unless the node withdrew or was revoked meanwhile (a report racing those must not bring it back). */
export async function updateActiveNode(db: Db, nodeId: string, changes: Updateable<NodeRow>) {
  await db.updateTable('nodes').set(changes).where('id', '=', nodeId).where('withdrawn_at', 'is', null).where('revoked_at', 'is', null).execute();
}

/** The node's jurisdiction (null when it has none); throws when there is no such node. */
export async function nodeJurisdiction(db: Db, nodeId: string): Promise<string | null> {
  return (await db.selectFrom('nodes').select('jurisdiction').where('id', '=', nodeId).executeTakeFirstOrThrow()).jurisdiction;
}

/** Id, name and jurisdiction of the given nodes, by name. */
export async function nodesWithJurisdiction(db: Db, nodeIds: string[]) {
  if (nodeIds.length === 0) return [];
  return db.selectFrom('nodes').select(['id', 'name', 'jurisdiction']).where('id', 'in', nodeIds).orderBy('name').execute();
}

/** Ids of a study's nodes in one region. */
export async function nodeIdsInRegion(db: Db, studyId: string, region: string): Promise<Set<string>> {
  return new Set((await db.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('region', '=', region).execute()).map((n) => n.id));
}

/** Whether a region has any node in a study. */
export async function regionHasNode(db: Db, studyId: string, region: string): Promise<boolean> {
  return (await db.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('region', '=', region).executeTakeFirst()) !== undefined;
}

/** A study's nodes as its status shows them, by name. */
export async function listStudyNodes(db: Db, studyId: string) {
  return db.selectFrom('nodes').select(['id', 'name', 'region', 'state', 'state_message']).where('study_id', '=', studyId).orderBy('name').execute();
}

/**
 * Nodes with the number of rounds each took part in (rounds it sent an accepted update or an
 * evaluation to: under node sampling a node may evaluate rounds it was not sampled to train), by
 * study then name; narrowed to one study, one region or one node when given.
 */
export async function listNodesWithRounds(db: Db, where: { studyId?: string; region?: string; nodeId?: string }) {
  const sent = db.selectFrom('updates').select(['node_id', 'round']).union(db.selectFrom('evaluations').select(['node_id', 'round']));
  const taken = db.selectFrom(sent.as('sent')).select(['sent.node_id', (eb) => eb.fn.count<string>('sent.round').distinct().as('rounds')]).groupBy('sent.node_id');
  let query = db
    .selectFrom('nodes')
    .leftJoin(taken.as('taken'), 'taken.node_id', 'nodes.id')
    .select(['nodes.id', 'nodes.study_id', 'nodes.name', 'nodes.region', 'nodes.jurisdiction', 'nodes.state', 'nodes.state_message', 'nodes.last_seen_at', 'nodes.enrolled_at', 'taken.rounds']);
  if (where.studyId !== undefined) query = query.where('nodes.study_id', '=', where.studyId);
  if (where.region !== undefined) query = query.where('nodes.region', '=', where.region);
  if (where.nodeId !== undefined) query = query.where('nodes.id', '=', where.nodeId);
  return query.orderBy('nodes.study_id').orderBy('nodes.name').execute();
}

/** Enrollment tokens (never the token itself: only its hash is stored), newest first, of one study when given. */
export async function listEnrollmentTokens(db: Db, studyId?: string) {
  let query = db.selectFrom('enrollment_tokens').select(['token_hash', 'study_id', 'node_name', 'region', 'jurisdiction', 'expires_at', 'used_at', 'node_id', 'created_at']);
  if (studyId !== undefined) query = query.where('study_id', '=', studyId);
  return query.orderBy('created_at', 'desc').execute();
}
