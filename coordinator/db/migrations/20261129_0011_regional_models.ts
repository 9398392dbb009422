import type { Kysely } from 'kysely';

/**
 * Regional models: for each region, the FedAvg of that region's nodes' local models in a round,
 * which a regional team (analyst) may read. `regional_accumulators` holds the running sums while
 * a round is open (crash safety, as `rounds.accumulator` does for the global model) and is
 * emptied when the round is aggregated; `regional_models` keeps what was published, signed.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('regional_accumulators')
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('region', 'text', (c) => c.notNull())
    .addColumn('state', 'bytea', (c) => c.notNull())
    .addPrimaryKeyConstraint('regional_accumulators_pk', ['study_id', 'round', 'region'])
    .execute();
  await db.schema
    .createTable('regional_models')
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('region', 'text', (c) => c.notNull())
    .addColumn('weights', 'bytea', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('bytes', 'integer', (c) => c.notNull())
    .addColumn('nodes', 'integer', (c) => c.notNull())
    .addColumn('num_examples', 'integer', (c) => c.notNull())
    .addColumn('signature', 'text', (c) => c.notNull())
    .addColumn('signer_fingerprint', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(db.fn('now')))
    .addPrimaryKeyConstraint('regional_models_pk', ['study_id', 'version', 'region'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('regional_models').execute();
  await db.schema.dropTable('regional_accumulators').execute();
}
