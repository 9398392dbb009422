import { type Kysely, sql } from 'kysely';

/**
 * The audit log: append-only, hash-chained (protocols/audit/audit-chain.ts), with signed
 * checkpoints. Append-only is enforced by the database itself: triggers refuse UPDATE, DELETE and
 * TRUNCATE on both tables for every role, the application's included.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('audit_log')
    .addColumn('seq', 'integer', (c) => c.primaryKey())
    // Text, not timestamptz or jsonb: the chain hashes these exact strings.
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('study_id', 'text')
    .addColumn('round', 'integer')
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .execute();
  await db.schema
    .createTable('audit_checkpoints')
    .addColumn('seq', 'integer', (c) => c.primaryKey())
    .addColumn('head_hash', 'text', (c) => c.notNull())
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('coordinator_fingerprint', 'text', (c) => c.notNull())
    .addColumn('signature', 'text', (c) => c.notNull())
    .execute();
  // One row holding the head; locking it serializes appends (an empty table has no row to lock).
  await db.schema.createTable('audit_head').addColumn('id', 'integer', (c) => c.primaryKey()).addColumn('seq', 'integer', (c) => c.notNull()).execute();
  await sql`insert into audit_head (id, seq) values (1, 0)`.execute(db);
  await sql`
    create or replace function fedmark_audit_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'the audit log is append-only: % on % refused', tg_op, tg_table_name;
    end $$`.execute(db);
  for (const table of ['audit_log', 'audit_checkpoints']) {
    await sql.raw(`create trigger ${table}_no_update before update or delete on ${table} for each row execute function fedmark_audit_append_only()`).execute(db);
    await sql.raw(`create trigger ${table}_no_truncate before truncate on ${table} for each statement execute function fedmark_audit_append_only()`).execute(db);
  }
}

export async function down(): Promise<void> {
  // Deliberately irreversible: an audit log is not rolled back.
  throw new Error('the audit migration cannot be undone');
}
