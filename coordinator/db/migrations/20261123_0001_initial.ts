import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('studies')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('config', 'jsonb', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('running', 'completed')`))
    .addColumn('current_round', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('latest_model_version', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('nodes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('region', 'text', (c) => c.notNull())
    .addColumn('api_key_hash', 'text', (c) => c.notNull().unique())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('state_message', 'text')
    .addColumn('data_report', 'jsonb')
    .addColumn('enrolled_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_seen_at', 'timestamptz')
    .addUniqueConstraint('nodes_study_name_unique', ['study_id', 'name'])
    .execute();

  await db.schema
    .createTable('enrollment_tokens')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('node_name', 'text', (c) => c.notNull())
    .addColumn('region', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz')
    .addColumn('node_id', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('models')
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('weights', 'bytea', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('bytes', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('models_pk', ['study_id', 'version'])
    .execute();

  await db.schema
    .createTable('rounds')
    .addColumn('study_id', 'text', (c) => c.notNull().references('studies.id'))
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('phase', 'text', (c) => c.notNull().check(sql`phase in ('fit', 'evaluate', 'completed', 'failed')`))
    .addColumn('participants', 'jsonb', (c) => c.notNull())
    .addColumn('fit_deadline', 'timestamptz', (c) => c.notNull())
    .addColumn('evaluation_deadline', 'timestamptz')
    .addColumn('accumulator', 'bytea')
    .addColumn('num_examples', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('mean_loss', 'double precision')
    .addColumn('validation_auc', 'double precision')
    .addColumn('validation_loss', 'double precision')
    .addColumn('failure_reason', 'text')
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('closed_at', 'timestamptz')
    .addPrimaryKeyConstraint('rounds_pk', ['study_id', 'round'])
    .execute();

  await db.schema
    .createTable('updates')
    .addColumn('study_id', 'text', (c) => c.notNull())
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull().references('nodes.id'))
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('bytes', 'integer', (c) => c.notNull())
    .addColumn('num_examples', 'integer', (c) => c.notNull())
    .addColumn('loss', 'double precision', (c) => c.notNull())
    .addColumn('meta', 'jsonb', (c) => c.notNull())
    .addColumn('accepted_at', 'timestamptz', (c) => c.notNull())
    // One update per node and round: the database, not only the service, refuses a second one.
    .addPrimaryKeyConstraint('updates_pk', ['study_id', 'round', 'node_id'])
    .addForeignKeyConstraint('updates_round_fk', ['study_id', 'round'], 'rounds', ['study_id', 'round'])
    .execute();

  await db.schema
    .createTable('evaluations')
    .addColumn('study_id', 'text', (c) => c.notNull())
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull().references('nodes.id'))
    .addColumn('num_examples', 'integer', (c) => c.notNull())
    .addColumn('loss', 'double precision', (c) => c.notNull())
    .addColumn('histogram', 'jsonb', (c) => c.notNull())
    .addColumn('received_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('evaluations_pk', ['study_id', 'round', 'node_id'])
    .addForeignKeyConstraint('evaluations_round_fk', ['study_id', 'round'], 'rounds', ['study_id', 'round'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['evaluations', 'updates', 'rounds', 'models', 'enrollment_tokens', 'nodes', 'studies']) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
