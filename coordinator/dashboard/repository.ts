import { sql, type Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

type Executor = Db | Transaction<Database>;

/** Every study with what the dashboard's list shows. */
export async function listStudySummaryRows(db: Db) {
  return db.selectFrom('studies').select(['id', 'name', 'state', 'current_round', 'config', 'stop_reason', 'created_at']).orderBy('created_at').execute();
}

/** Audit entries after `seq`, in order (all of them for seq 0). */
export async function listAuditEntriesAfter(db: Executor, seq: number) {
  return db.selectFrom('audit_log').selectAll().where('seq', '>', seq).orderBy('seq').execute();
}

/**
 * Checkpoints after the first `skip`, in the order the dashboard verifies them: by seq, then by
 * number (two checkpoints may seal the same head: a restart with no entry in between).
 */
export async function listCheckpointsAfter(db: Executor, skip: number) {
  return db.selectFrom('audit_checkpoints').selectAll().orderBy('seq').orderBy(sql`number nulls first`).offset(skip).limit(Number.MAX_SAFE_INTEGER).execute();
}

/**
 * Digests the database computes over every column of entries 1..`entriesUpTo` and of the first
 * `checkpoints` checkpoints (in listCheckpointsAfter's order): equal digests mean those rows are
 * byte for byte the ones verified before, without sending them to the coordinator again.
 */
export async function auditPrefixDigests(db: Executor, entriesUpTo: number, checkpoints: number): Promise<{ entries: string; checkpoints: string }> {
  const { rows } = await sql<{ entries: string; checkpoints: string }>`select
    (select md5(coalesce(string_agg(a::text, E'\\n' order by a.seq), '')) from audit_log a where a.seq <= ${entriesUpTo}) as entries,
    (select md5(coalesce(string_agg(c::text, E'\\n' order by c.seq, c.number nulls first), ''))
       from (select * from audit_checkpoints order by seq, number nulls first limit ${checkpoints}) c) as checkpoints`.execute(db);
  return rows[0];
}
