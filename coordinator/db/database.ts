import { mkdirSync } from 'node:fs';
import { Kysely, PGliteDialect, PostgresDialect } from 'kysely';
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';
import type { Database } from './schema.ts';
import * as initial from './migrations/20261123_0001_initial.ts';
import * as privacy from './migrations/20261123_0002_privacy.ts';
import * as roles from './migrations/20261123_0003_roles.ts';
import * as identity from './migrations/20261123_0004_identity.ts';
import * as audit from './migrations/20261123_0005_audit.ts';
import * as policies from './migrations/20261123_0006_policies.ts';
import * as auditHeadHash from './migrations/20261123_0007_audit_head_hash.ts';

export type Db = Kysely<Database>;

/** Migrations are listed here rather than read from a folder, so a bundled image carries them. */
class StaticMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return { '20261123_0001_initial': initial, '20261123_0002_privacy': privacy, '20261123_0003_roles': roles, '20261123_0004_identity': identity, '20261123_0005_audit': audit, '20261123_0006_policies': policies, '20261123_0007_audit_head_hash': auditHeadHash };
  }
}

export interface DatabaseTarget {
  /** PostgreSQL connection string; when absent, an embedded PGlite database in `dataDir`. */
  databaseUrl?: string;
  dataDir?: string;
}

/**
 * Opens the coordinator's database: real PostgreSQL through `pg` when a URL is given, otherwise
 * PGlite (PostgreSQL compiled to WebAssembly) in a local folder. Both run the same migrations and
 * the same SQL, so what is tested on one holds on the other.
 */
export async function openDatabase(target: DatabaseTarget): Promise<{ db: Db; kind: 'postgres' | 'pglite'; location: string }> {
  let db: Db;
  let kind: 'postgres' | 'pglite';
  let location: string;
  if (target.databaseUrl) {
    const pg = await import('pg');
    // Timestamps come back as Date, bigint counts as numbers: both dialects then return the same shapes.
    pg.default.types.setTypeParser(20, (v: string) => Number(v));
    const pool = new pg.default.Pool({ connectionString: target.databaseUrl, max: 10 });
    // An idle connection the server closes (restart, failover, an admin's terminate) is dropped
    // from the pool and replaced on next use; it must not crash the coordinator.
    pool.on('error', (err) => process.emitWarning(`PostgreSQL idle connection lost: ${err.message}`));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    kind = 'postgres';
    location = target.databaseUrl.replace(/\/\/[^@/]*@/, '//***@');
  } else {
    const dataDir = target.dataDir ?? '.fedmark/coordinator-db';
    mkdirSync(dataDir, { recursive: true });
    const { PGlite } = await import('@electric-sql/pglite');
    const pglite = new PGlite(dataDir);
    db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
    kind = 'pglite';
    location = dataDir;
  }
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`database migration ${failed ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { db, kind, location };
}
