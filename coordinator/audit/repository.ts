import { sql, type Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * SQL of the audit log: the chain's head row, entries, signed checkpoints. Plain functions taking
 * `db` or a transaction (a `Transaction` is a `Kysely`), as in Kysely's example repositories.
 *
 * @example
 *   const head = await lockAuditHead(tx); // inside db.transaction().execute(...)
 */
export type AuditLogRow = Database['audit_log'];
export type AuditCheckpointRow = Database['audit_checkpoints'];

/** The head row (last entry's seq and hash), locked: holding it serializes appends (the fallback of appendAudits, and checkpoints). */
export async function lockAuditHead(tx: Transaction<Database>) {
  return tx.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).forUpdate().executeTakeFirstOrThrow();
}

/**
 * Inserts entries (in seq order, the last one the new head) and moves the head row to the last,
 * in one statement (a data-modifying CTE): an append costs two round trips, the head's lock and
 * this, instead of three (issue 13).
 */
export async function insertAuditEntriesAndSetHead(tx: Db, rows: AuditLogRow[]) {
  const last = rows[rows.length - 1];
  await tx
    .with('entries', (qc) => qc.insertInto('audit_log').values(rows).returning('seq'))
    .updateTable('audit_head')
    .set({ seq: last.seq, hash: last.hash })
    .where('id', '=', 1)
    .execute();
}

/**
 * Appends entries after `expected` only if the head row still holds it, in one statement (issue
 * 13: the head's lock cost one statement of the two per entry, ~1 in 6 of a round's statements).
 * The update is the compare-and-swap: it matches the head row only while it is `expected`, and the
 * insert takes its rows from the update's result, so it inserts nothing when the head moved.
 * Under READ COMMITTED, an update that waited on a concurrent append re-checks its WHERE against
 * the row that append committed (and so matches nothing), or against the old row when that append
 * rolled back. Returns false when nothing was written: the caller falls back to the lock.
 */
export async function appendAuditEntriesIfHead(db: Db, expected: { seq: number; hash: string }, rows: AuditLogRow[]): Promise<boolean> {
  const last = rows[rows.length - 1];
  // Typed casts: a VALUES list in a SELECT takes no types from the target columns.
  const values = rows.map((r) => sql`(${r.seq}::integer, ${r.at}::text, ${r.actor}::text, ${r.kind}::text, ${r.study_id}::text, ${r.round}::integer, ${r.data}::text, ${r.prev_hash}::text, ${r.hash}::text)`);
  const result = await sql<{ seq: number }>`
    with head as (
      update audit_head set seq = ${last.seq}, hash = ${last.hash}
      where id = 1 and seq = ${expected.seq} and hash = ${expected.hash}
      returning id
    )
    insert into audit_log (seq, at, actor, kind, study_id, round, data, prev_hash, hash)
    select v.* from head cross join (values ${sql.join(values)}) as v(seq, at, actor, kind, study_id, round, data, prev_hash, hash)
    returning seq`.execute(db);
  return result.rows.length > 0;
}

export async function findAuditEntry(db: Db, seq: number) {
  return db.selectFrom('audit_log').selectAll().where('seq', '=', seq).executeTakeFirst();
}

export async function hasCheckpointAt(db: Db, seq: number): Promise<boolean> {
  return (await db.selectFrom('audit_checkpoints').select('seq').where('seq', '=', seq).executeTakeFirst()) !== undefined;
}

export async function insertCheckpoint(tx: Db, row: AuditCheckpointRow) {
  await tx.insertInto('audit_checkpoints').values(row).execute();
}

export async function listAuditEntries(db: Db) {
  return db.selectFrom('audit_log').selectAll().orderBy('seq').execute();
}

/** Entries from `seq` on, in order: the part of the chain a new checkpoint adds to the last one. */
export async function listAuditEntriesFrom(db: Db, seq: number) {
  return db.selectFrom('audit_log').selectAll().where('seq', '>=', seq).orderBy('seq').execute();
}

export async function findCheckpoint(db: Db, seq: number) {
  return db.selectFrom('audit_checkpoints').selectAll().where('seq', '=', seq).executeTakeFirst();
}

/**
 * The checkpoints at these seqs and how many checkpoints there are, in one read (the signed head's
 * check at each checkpoint needs both: issue 13).
 */
export async function findCheckpointsAndCount(db: Db, seqs: number[]): Promise<{ found: AuditCheckpointRow[]; count: number }> {
  // The count's one-row table on the left: the answer has a row even when no checkpoint matches.
  const rows = await db
    .selectFrom((eb) => eb.selectFrom('audit_checkpoints').select((e) => e.fn.countAll<string | number>().as('total')).as('n'))
    .leftJoin('audit_checkpoints as c', (join) => join.on('c.seq', 'in', seqs))
    .select(['n.total', 'c.seq', 'c.head_hash', 'c.at', 'c.coordinator_fingerprint', 'c.number', 'c.signature'])
    .execute();
  const found = rows.filter((r) => r.seq !== null).map((r) => ({ seq: r.seq!, head_hash: r.head_hash!, at: r.at!, coordinator_fingerprint: r.coordinator_fingerprint!, number: r.number, signature: r.signature! }));
  return { found, count: Number(rows[0].total) };
}

export async function countCheckpoints(db: Db): Promise<number> {
  const row = await db.selectFrom('audit_checkpoints').select((eb) => eb.fn.countAll<string | number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The checkpoint with the highest seq (what nodes witness), or undefined before the first. */
export async function latestCheckpoint(db: Db) {
  return db.selectFrom('audit_checkpoints').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirst();
}

export async function listCheckpoints(db: Db) {
  return db.selectFrom('audit_checkpoints').selectAll().orderBy('seq').execute();
}

/** The coordinator's first public key (armored), or undefined on a database without one. */
export async function firstCoordinatorPublicKey(db: Db): Promise<string | undefined> {
  const row = await db.selectFrom('coordinator_keys').select('public_key').orderBy('created_at').orderBy('fingerprint').executeTakeFirst();
  return row?.public_key;
}
