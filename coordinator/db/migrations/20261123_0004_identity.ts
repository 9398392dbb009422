import { type Kysely, sql } from 'kysely';

/** OpenPGP identities: pinned node keys, replay protection, signed models, coordinator key history. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('nodes').addColumn('public_key', 'text').execute();
  await db.schema.alterTable('nodes').addColumn('key_fingerprint', 'text').execute();
  await db.schema.alterTable('nodes').addColumn('revoked_at', 'timestamptz').execute();
  await db.schema.alterTable('models').addColumn('signature', 'text').execute();
  await db.schema.alterTable('models').addColumn('signer_fingerprint', 'text').execute();
  await db.schema
    .createTable('request_nonces')
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('nonce', 'text', (c) => c.notNull())
    .addColumn('seen_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    // Replay protection is this constraint: a second INSERT of the same nonce fails atomically.
    .addPrimaryKeyConstraint('request_nonces_pk', ['fingerprint', 'nonce'])
    .execute();
  await db.schema
    .createTable('coordinator_keys')
    .addColumn('fingerprint', 'text', (c) => c.primaryKey())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('announcement', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('coordinator_keys').ifExists().execute();
  await db.schema.dropTable('request_nonces').ifExists().execute();
  for (const c of ['signer_fingerprint', 'signature']) await db.schema.alterTable('models').dropColumn(c).execute();
  for (const c of ['revoked_at', 'key_fingerprint', 'public_key']) await db.schema.alterTable('nodes').dropColumn(c).execute();
}
