import { type Kysely, sql } from 'kysely';

/** Differential privacy: the mechanism of each round, and the study's privacy ledger. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('rounds').addColumn('mechanism', 'jsonb').execute();
  await db.schema.alterTable('rounds').addColumn('clip_norm', 'double precision').execute();
  await db.schema.alterTable('studies').addColumn('stop_reason', 'text').execute();
  await db.schema
    .createTable('privacy_ledger')
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('accountant', 'text', (c) => c.notNull())
    .addColumn('delta', 'double precision', (c) => c.notNull())
    .addColumn('sampling_rate', 'double precision', (c) => c.notNull())
    .addColumn('noise_multiplier', 'double precision', (c) => c.notNull())
    .addColumn('epsilon_round', 'double precision', (c) => c.notNull())
    .addColumn('epsilon_total', 'double precision', (c) => c.notNull())
    .addColumn('budget_epsilon', 'double precision')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    // A round is charged once; the primary key makes a double charge impossible, not just unlikely.
    .addPrimaryKeyConstraint('privacy_ledger_pk', ['study_id', 'round'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('privacy_ledger').ifExists().execute();
  await db.schema.alterTable('studies').dropColumn('stop_reason').execute();
  await db.schema.alterTable('rounds').dropColumn('clip_norm').execute();
  await db.schema.alterTable('rounds').dropColumn('mechanism').execute();
}
