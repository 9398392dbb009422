import { type Kysely, sql } from 'kysely';

/**
 * Unauthenticated refusals counted, not logged one by one (issue 11): one row per source address,
 * minute, claimed actor and reason, whose count goes up by one per refusal. A flood of refusals
 * then grows a count, not the hash-chained audit log (which can never be pruned); this table may
 * be pruned. `sample` keeps the first refusal's method, path and request id, each bounded in size.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('refusal_counts')
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('minute', 'timestamptz', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('status', 'integer', (c) => c.notNull())
    .addColumn('count', 'bigint', (c) => c.notNull().check(sql`count > 0`))
    .addColumn('sample', 'jsonb', (c) => c.notNull())
    .addColumn('last_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('refusal_counts_pk', ['source', 'minute', 'actor', 'reason'])
    .execute();
  // Pruning deletes by age.
  await db.schema.createIndex('refusal_counts_minute').on('refusal_counts').column('minute').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('refusal_counts').ifExists().execute();
}
