import type { Kysely } from 'kysely';

/**
 * The jurisdiction a node enrolls under is the operator's decision, written on its enrollment
 * token (like its region), not something the node declares for itself.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('enrollment_tokens').addColumn('jurisdiction', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('enrollment_tokens').dropColumn('jurisdiction').execute();
}
