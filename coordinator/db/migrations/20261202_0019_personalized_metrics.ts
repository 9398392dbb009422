import type { Kysely } from 'kysely';

/**
 * Migration 0019_personalized_metrics (issue 9, regional personalization: `fedmark node
 * --personalize`). A node may report, beside its evaluation of the final global model, the same
 * kind's statistics for its locally fine-tuned copy on the same validation rows:
 * - `evaluations.personalized_stats` (jsonb) and `personalized_num_examples` (bigint): that part
 *   of the report, null when the node sent none;
 * - `rounds.personalized_metrics` (jsonb): the kind's pool of those statistics;
 *   `rounds.personalized_nodes` (integer, default 0): how many nodes they came from;
 *   `rounds.global_on_personalized_metrics` (jsonb): the global model pooled over the same nodes.
 * Nullable or defaulted, so every row written before reads as "no personalization".
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('evaluations').addColumn('personalized_stats', 'jsonb').addColumn('personalized_num_examples', 'bigint').execute();
  await db.schema
    .alterTable('rounds')
    .addColumn('personalized_metrics', 'jsonb')
    .addColumn('personalized_nodes', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('global_on_personalized_metrics', 'jsonb')
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('rounds').dropColumn('personalized_metrics').dropColumn('personalized_nodes').dropColumn('global_on_personalized_metrics').execute();
  await db.schema.alterTable('evaluations').dropColumn('personalized_stats').dropColumn('personalized_num_examples').execute();
}
