import { type Kysely, sql } from 'kysely';

/** The chain head's hash beside its sequence number: an append then needs no read of the previous entry. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_head').addColumn('hash', 'text').execute();
  await sql`update audit_head set hash = (select hash from audit_log where audit_log.seq = audit_head.seq) where id = 1`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_head').dropColumn('hash').execute();
}
