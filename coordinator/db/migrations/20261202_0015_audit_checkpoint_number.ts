import type { Kysely } from 'kysely';

/**
 * Each signed checkpoint carries its number (1, 2, 3, ...), inside the signed payload: a verifier
 * then sees a checkpoint that was removed from the middle of the sequence, not only a cut tail.
 * Checkpoints signed before this migration keep a null number (their signatures cover no number);
 * the next one is numbered by its position, so the sequence stays gap-free.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_checkpoints').addColumn('number', 'integer').execute();
}

export async function down(): Promise<void> {
  // Like the audit migration itself: signed checkpoints are not rolled back.
  throw new Error('the audit checkpoint number migration cannot be undone');
}
