import { type Kysely, sql } from 'kysely';
import { DEFAULT_POLICIES } from '../../../protocols/policy/jurisdiction-policy.ts';

/** Jurisdiction policy profiles, versioned (a change is a new version, never an edit), and each node's jurisdiction. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('policies')
    .addColumn('jurisdiction', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('profile', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('policies_pk', ['jurisdiction', 'version'])
    .execute();
  for (const p of DEFAULT_POLICIES) {
    await db.insertInto('policies').values({ jurisdiction: p.jurisdiction, version: p.version, profile: JSON.stringify(p) }).execute();
  }
  await db.schema.alterTable('nodes').addColumn('jurisdiction', 'text').execute();
  await db.schema.alterTable('nodes').addColumn('withdrawn_at', 'timestamptz').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('nodes').dropColumn('withdrawn_at').execute();
  await db.schema.alterTable('nodes').dropColumn('jurisdiction').execute();
  await db.schema.dropTable('policies').ifExists().execute();
}
