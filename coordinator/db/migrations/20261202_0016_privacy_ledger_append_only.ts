import { type Kysely, sql } from 'kysely';

/**
 * The coordinator's privacy ledger (privacy_ledger, migration 0002) becomes append-only like the
 * audit tables (migration 0005): triggers refuse UPDATE, DELETE and TRUNCATE for every role, and
 * the app role holds only SELECT and INSERT on it (APPEND_ONLY_TABLES in migration 0009, whose
 * grants are re-applied after every migration run). A round is charged by inserting its row
 * before any node trains; nothing in the coordinator updates or deletes one, so a charge, once
 * made, cannot be taken back by the application or by someone holding its credentials. The
 * schema owner can still drop the trigger: that is what the app role separation (0009) is for.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function fedmark_privacy_ledger_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'the privacy ledger is append-only: % on % refused', tg_op, tg_table_name;
    end $$`.execute(db);
  await sql`create trigger privacy_ledger_no_update before update or delete on privacy_ledger for each row execute function fedmark_privacy_ledger_append_only()`.execute(db);
  await sql`create trigger privacy_ledger_no_truncate before truncate on privacy_ledger for each statement execute function fedmark_privacy_ledger_append_only()`.execute(db);
}

export async function down(): Promise<void> {
  // Deliberately irreversible, like the audit log: spent privacy is not rolled back.
  throw new Error('the privacy ledger append-only migration cannot be undone');
}
