import { type Kysely, sql } from 'kysely';

/**
 * Core v2 (strategies and model kinds):
 * - `rounds.server_state`: the strategy's server state the round started from (momentum, Adam
 *   moments, adaptive clip norm), and `rounds.next_server_state`: the state after its fit phase,
 *   carried to the next round ("no new weights" carries the old state unchanged). Persisted with
 *   the round, so a coordinator restart resumes a strategy exactly.
 * - `rounds.instructions`: each participant's fit instructions (the strategy's configureFit),
 *   fixed when the round opens so every retry of a task gets the same ones.
 * - `rounds.validation_metrics`: the model kind's pooled metrics (AUC, log loss, Brier; RMSE, MAE,
 *   R^2 and the mean-only baseline...).
 * - `round_kept_updates`: for strategies that need every update (trimmed mean, median, Krum),
 *   each accepted update stored once, in arrival order; emptied when the round is aggregated.
 * - `evaluations.stats`: the kind's sufficient statistics (replaces the binary-only histogram,
 *   which becomes nullable); `evaluations.loss` and `updates.loss` become nullable (a study may
 *   not release losses).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('rounds')
    .addColumn('server_state', 'bytea')
    .addColumn('next_server_state', 'bytea')
    .addColumn('instructions', 'jsonb')
    .addColumn('validation_metrics', 'jsonb')
    .execute();
  await db.schema
    .createTable('round_kept_updates')
    .addColumn('study_id', 'text', (c) => c.notNull())
    .addColumn('round', 'integer', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('weights', 'bytea', (c) => c.notNull())
    .addPrimaryKeyConstraint('round_kept_updates_pk', ['study_id', 'round', 'seq'])
    .addUniqueConstraint('round_kept_updates_node', ['study_id', 'round', 'node_id'])
    .addForeignKeyConstraint('round_kept_updates_round_fk', ['study_id', 'round'], 'rounds', ['study_id', 'round'])
    .execute();
  await db.schema.alterTable('evaluations').addColumn('stats', 'jsonb').execute();
  await sql`alter table evaluations alter column histogram drop not null`.execute(db);
  await sql`alter table evaluations alter column loss drop not null`.execute(db);
  await sql`alter table updates alter column loss drop not null`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('evaluations').dropColumn('stats').execute();
  await db.schema.dropTable('round_kept_updates').execute();
  await db.schema.alterTable('rounds').dropColumn('server_state').dropColumn('next_server_state').dropColumn('instructions').dropColumn('validation_metrics').execute();
}
