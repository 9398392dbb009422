import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { join } from 'node:path';
import { Kysely, PGliteDialect, PostgresDialect, sql, type LogEvent } from 'kysely';
import { pgliteByteaOptions } from './pglite-bytea.ts';
import { usePreparedStatements } from './pglite-prepared.ts';
import { preparedPool } from './pg-prepared.ts';
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';
import type { Database } from './schema.ts';
import * as initial from './migrations/20261123_0001_initial.ts';
import * as privacy from './migrations/20261123_0002_privacy.ts';
import * as roles from './migrations/20261123_0003_roles.ts';
import * as identity from './migrations/20261123_0004_identity.ts';
import * as audit from './migrations/20261123_0005_audit.ts';
import * as policies from './migrations/20261123_0006_policies.ts';
import * as auditHeadHash from './migrations/20261123_0007_audit_head_hash.ts';
import * as enrollmentJurisdiction from './migrations/20261129_0010_enrollment_jurisdiction.ts';
import * as regionalModels from './migrations/20261129_0011_regional_models.ts';
import * as coreV2 from './migrations/20261202_0012_core_v2.ts';
import * as claimBounds from './migrations/20261202_0013_claim_bounds.ts';
import * as refusalCounts from './migrations/20261202_0014_refusal_counts.ts';
import * as auditCheckpointNumber from './migrations/20261202_0015_audit_checkpoint_number.ts';
import * as privacyLedgerAppendOnly from './migrations/20261202_0016_privacy_ledger_append_only.ts';
import * as studyStop from './migrations/20261202_0017_study_stop.ts';
import * as spare18 from './migrations/20261202_0018_spare.ts';
import * as personalizedMetrics from './migrations/20261202_0019_personalized_metrics.ts';
import * as foldUpdates from './migrations/20261202_0020_fold_updates.ts';
import * as uncompressedWeights from './migrations/20261203_0021_uncompressed_weights.ts';
import * as reuseKeptUpdateSpace from './migrations/20261203_0022_reuse_kept_update_space.ts';
import * as evaluationStatsJson from './migrations/20261203_0023_evaluation_stats_json.ts';
import * as roundsInFlight from './migrations/20261204_0024_rounds_in_flight.ts';
// Kysely runs migrations in name order, so later ones (0010, 0011, ...) make tables after this one has
// granted: `migrate` re-grants after every run, which covers them.
import * as appRole from './migrations/20261129_0009_app_role.ts';
import { APP_ROLE, APPEND_ONLY_TABLES, grantAppRole, isPglite } from './migrations/20261129_0009_app_role.ts';

export type Db = Kysely<Database>;

/** Migrations are listed here rather than read from a folder, so a bundled image carries them. */
class StaticMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return { '20261123_0001_initial': initial, '20261123_0002_privacy': privacy, '20261123_0003_roles': roles, '20261123_0004_identity': identity, '20261123_0005_audit': audit, '20261123_0006_policies': policies, '20261123_0007_audit_head_hash': auditHeadHash, '20261129_0010_enrollment_jurisdiction': enrollmentJurisdiction, '20261129_0011_regional_models': regionalModels, '20261202_0012_core_v2': coreV2, '20261202_0013_claim_bounds': claimBounds, '20261202_0014_refusal_counts': refusalCounts, '20261202_0015_audit_checkpoint_number': auditCheckpointNumber, '20261202_0016_privacy_ledger_append_only': privacyLedgerAppendOnly, '20261202_0017_study_stop': studyStop, '20261202_0018_spare': spare18, '20261202_0019_personalized_metrics': personalizedMetrics, '20261202_0020_fold_updates': foldUpdates, '20261203_0021_uncompressed_weights': uncompressedWeights, '20261203_0022_reuse_kept_update_space': reuseKeptUpdateSpace, '20261203_0023_evaluation_stats_json': evaluationStatsJson, '20261204_0024_rounds_in_flight': roundsInFlight, '20261129_0009_app_role': appRole };
  }
}

export interface DatabaseTarget {
  /** PostgreSQL connection string; when absent, an embedded PGlite database in `dataDir`. */
  databaseUrl?: string;
  /**
   * PostgreSQL connection string of the role that owns the schema and runs the migrations; the
   * app itself then connects with `databaseUrl` as a role that may not alter the audit tables.
   * Defaults to `databaseUrl` (one role does both: simpler, but that role can switch off the
   * audit log's triggers; see `checkAppRole`).
   */
  migrationDatabaseUrl?: string;
  dataDir?: string;
  /**
   * `migrate` (the coordinator): bring the schema up to date first. `read-only` (an audit
   * export): never migrate, never write, and fail clearly when there is no fedmark schema.
   */
  mode?: 'migrate' | 'read-only';
  /** kysely's log hook, given every query and its duration (the coordinator's metrics: http/metrics.ts). */
  log?: (event: LogEvent) => void;
  /** Told of every PGlite transaction (the debug query counter, query-stats.ts; PostgreSQL's `begin` reaches `log`). */
  onTransaction?: () => void;
}

export interface OpenedDatabase {
  db: Db;
  kind: 'postgres' | 'pglite';
  location: string;
}

/** Tables a read-only opener needs: the audit log, its checkpoints and the coordinator's keys. */
const AUDIT_TABLES = ['audit_log', 'audit_checkpoints', 'coordinator_keys'] as const;

const redact = (url: string) => url.replace(/\/\/[^@/]*@/, '//***@');

async function openPostgres(url: string, options: { max: number; readOnly: boolean; log?: (event: LogEvent) => void }): Promise<{ db: Db; enablePrepared(): void }> {
  const pg = await import('pg');
  // Timestamps come back as Date, bigint counts as numbers: both dialects then return the same shapes.
  pg.default.types.setTypeParser(20, (v: string) => Number(v));
  // Read-only is the server's job: every transaction on these connections refuses writes.
  const pool = new pg.default.Pool({ connectionString: url, max: options.max, ...(options.readOnly ? { options: '-c default_transaction_read_only=on' } : {}) });
  // An idle connection the server closes (restart, failover, an admin's terminate) is dropped
  // from the pool and replaced on next use; it must not crash the coordinator.
  pool.on('error', (err) => process.emitWarning(`PostgreSQL idle connection lost: ${err.message}`));
  const prepared = preparedPool(pool);
  return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool: prepared.pool }), log: options.log }), enablePrepared: prepared.enable };
}

async function migrate(db: Db): Promise<void> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    const message = error instanceof Error ? error.message : String(error);
    const hint = /permission denied|must be owner/i.test(message) ? ' (the role connecting cannot change the schema: set FEDMARK_MIGRATION_DATABASE_URL to the schema owner\'s connection string)' : '';
    throw new Error(`database migration ${failed ?? ''} failed: ${message}${hint}`);
  }
  // Tables from any migration get the app role's grants, not only those that existed when 0009 ran.
  await grantAppRole(db);
}

/**
 * PGlite's shared buffer pool. Its default (128MB, from initdb) is touched at start-up and stays
 * resident: with 16MB the coordinator starts ~110MB smaller (issue 13: peak RSS). The embedded
 * database is small (the coordinator's tables, one model per version), so 16MB still holds its
 * working set; a larger deployment runs PostgreSQL. Durability is unchanged: PGlite already runs
 * with fsync off (its `-F` start parameter), so a commit is in the OS page cache when the call
 * returns: a coordinator crash loses nothing committed, an OS crash or power loss can.
 */
const PGLITE_SHARED_BUFFERS = '16MB';

/**
 * Opens PGlite in `dataDir`. A new database is first created (initdb) in a short-lived child
 * process: PGlite's initdb grows its WebAssembly memory to ~600MB, which never shrinks, so doing
 * it in this process would leave the coordinator's peak RSS there for good (issue 13: 880MB
 * against 216MB when the database already exists).
 */
async function openPglite(dataDir: string, create: boolean) {
  compileWasmOnOneThread();
  const { PGlite } = await import('@electric-sql/pglite');
  if (create && !existsSync(join(dataDir, 'PG_VERSION'))) await initPgliteInChild(dataDir);
  // wal_init_zero=off: a new 16 MB WAL segment is created with only its last byte written, not
  // 16 MB of zeros first. The zeros are for file systems that must allocate ahead; with fsync off
  // (PGLITE_SHARED_BUFFERS above) they bought nothing, and at 4.3 MB of WAL per stored 1M-parameter
  // update they were ~4 MB more written per update (a 0.1 s stall every fourth update in
  // bench/coordinator-path-bench.ts; issue 13). The WAL's content and recovery are unchanged.
  // plan_cache_mode=force_generic_plan: the coordinator's statements run prepared
  // (pglite-prepared.ts) and are all key lookups; under `auto` PostgreSQL re-plans a statement at
  // every execution whenever it judges the generic plan no cheaper, which it did for the task view
  // and the intake's round lock (0.53 -> 0.33 ms and 0.59 -> 0.53 ms per execution in the demo;
  // the demo's statements 2.52 -> 2.33 s in all). PostgreSQL proper is left to its own setting.
  return new PGlite(dataDir, { ...pgliteByteaOptions, startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${PGLITE_SHARED_BUFFERS}`, '-c', 'wal_init_zero=off', '-c', 'plan_cache_mode=force_generic_plan'] });
}

/**
 * PGlite's 9 MB WebAssembly module is compiled by V8 in the background, by default on every
 * worker thread at once (Liftoff, then TurboFan for the hot functions); each thread's compilation
 * memory comes from its own malloc arena, which keeps it resident afterwards. One compilation task
 * does the same work with one arena: opening the database peaks ~40 MB lower (issue 13, the
 * coordinator's peak RSS; measured on this 2-core machine: open of the demo's database, VmHWM
 * 206 -> 164 MB, 2 runs each; the 10-node demo at load ~5, 2 runs each: coordinatorPeakRssMb
 * 324.7/335.5 -> 299.9/306.2 MB, coordinator CPU 13.7/13.5 -> 15.3/12.7 s). The flag only sets how many tasks compile WebAssembly (the
 * coordinator runs no other), read when a compilation starts, so setting it at run time is safe.
 */
function compileWasmOnOneThread(): void {
  setFlagsFromString('--wasm-num-compilation-tasks=1');
}

async function initPgliteInChild(dataDir: string): Promise<void> {
  const script = 'const { PGlite } = await import(process.argv[1]); const pg = new PGlite(process.argv[2]); await pg.waitReady; await pg.close();';
  try {
    await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, import.meta.resolve('@electric-sql/pglite'), dataDir]);
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`creating the embedded database in ${dataDir} failed: ${(e.stderr || e.message).trim().slice(0, 500)}`, { cause: err });
  }
}

/** Refuses a database that has no fedmark audit log, naming what is missing. */
async function requireAuditSchema(db: Db, location: string): Promise<void> {
  const { rows } = await sql<{ name: string; present: boolean }>`
    select t.name, to_regclass(t.name) is not null as present
    from unnest(${sql.val([...AUDIT_TABLES])}::text[]) as t(name)`.execute(db);
  const missing = rows.filter((r) => !r.present).map((r) => r.name);
  if (missing.length > 0) {
    throw new Error(`${location} holds no fedmark coordinator database: table${missing.length > 1 ? 's' : ''} ${missing.join(', ')} missing (is this the coordinator's database? it is opened read-only and never migrated)`);
  }
}

/**
 * Opens the coordinator's database: real PostgreSQL through `pg` when a URL is given, otherwise
 * PGlite (PostgreSQL compiled to WebAssembly) in a local folder. Both run the same migrations and
 * the same SQL, so what is tested on one holds on the other.
 */
export async function openDatabase(target: DatabaseTarget): Promise<OpenedDatabase> {
  const readOnly = target.mode === 'read-only';
  let db: Db;
  let kind: 'postgres' | 'pglite';
  let location: string;
  if (target.databaseUrl) {
    kind = 'postgres';
    location = redact(target.databaseUrl);
    const migrationUrl = target.migrationDatabaseUrl ?? target.databaseUrl;
    if (!readOnly && migrationUrl !== target.databaseUrl) {
      // The owner migrates over its own short-lived connection; the app never holds it.
      const { db: owner } = await openPostgres(migrationUrl, { max: 1, readOnly: false });
      try {
        await migrate(owner);
      } finally {
        await owner.destroy();
      }
    }
    const app = await openPostgres(target.databaseUrl, { max: 10, readOnly, log: target.log });
    db = app.db;
    if (!readOnly && migrationUrl === target.databaseUrl) {
      try {
        await migrate(db);
      } catch (err) {
        await db.destroy();
        throw err;
      }
    }
    // After the migrations, as on PGlite below.
    app.enablePrepared();
  } else {
    const dataDir = target.dataDir ?? '.fedmark/coordinator-db';
    location = dataDir;
    kind = 'pglite';
    if (readOnly) {
      // PGlite would happily create an empty database in a mistyped folder: refuse instead.
      if (!existsSync(join(dataDir, 'PG_VERSION'))) throw new Error(`${dataDir} holds no database (no PG_VERSION file): pass the coordinator's FEDMARK_DATA_DIR`);
    } else {
      mkdirSync(dataDir, { recursive: true });
    }
    const pglite = await openPglite(dataDir, !readOnly);
    if (target.onTransaction) {
      const transaction = pglite.transaction.bind(pglite);
      const told = target.onTransaction;
      pglite.transaction = ((fn: Parameters<typeof transaction>[0]) => (told(), transaction(fn))) as typeof pglite.transaction;
    }
    db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }), log: target.log });
    if (readOnly) {
      // One embedded session: this makes every later transaction on it read-only.
      await sql`set default_transaction_read_only = on`.execute(db);
    } else {
      try {
        await migrate(db);
      } catch (err) {
        await db.destroy();
        throw err;
      }
    }
    // After the migrations: a statement prepared before a table changed could not run after it.
    usePreparedStatements(pglite);
  }
  if (readOnly) {
    try {
      await requireAuditSchema(db, location);
    } catch (err) {
      await db.destroy();
      throw err;
    }
  }
  return { db, kind, location };
}

/**
 * What the role the app connects as could do to the audit log beyond appending to it: empty when
 * it is an ordinary member of the app role. The coordinator logs each line as a WARNING at
 * start-up; on PGlite (one embedded superuser, nobody else connects) there is nothing to check.
 */
export async function checkAppRole(db: Db): Promise<string[]> {
  if (await isPglite(db)) return [];
  const { rows } = await sql<{ role: string; superuser: boolean; bypassrls: boolean; owns: string[]; may_change: string[]; member: boolean }>`
    select current_user as role,
           r.rolsuper as superuser,
           r.rolbypassrls as bypassrls,
           coalesce((select array_agg(c.relname::text order by c.relname) from pg_class c
                     where c.oid in (${sql.join(APPEND_ONLY_TABLES.map((t) => sql`to_regclass(${t})`))})
                       and pg_has_role(current_user, c.relowner, 'USAGE')), '{}') as owns,
           coalesce((select array_agg(t order by t) from unnest(${sql.val([...APPEND_ONLY_TABLES])}::text[]) as t
                     where to_regclass(t) is not null
                       and (has_table_privilege(t, 'UPDATE') or has_table_privilege(t, 'DELETE') or has_table_privilege(t, 'TRUNCATE'))), '{}') as may_change,
           exists (select from pg_roles a where a.rolname = ${APP_ROLE} and pg_has_role(current_user, a.oid, 'MEMBER')) as member
    from pg_roles r where r.rolname = current_user`.execute(db);
  const r = rows[0];
  if (!r) return [];
  const fix = `connect DATABASE_URL as a login role that is a member of ${APP_ROLE} and set FEDMARK_MIGRATION_DATABASE_URL to the schema owner (README: "Database")`;
  const problems: string[] = [];
  if (r.superuser) problems.push(`the app connects as superuser "${r.role}": it can switch the audit log's append-only triggers off (session_replication_role, ALTER TABLE ... DISABLE TRIGGER) and rewrite it; ${fix}`);
  else if (r.owns.length > 0) problems.push(`the app connects as "${r.role}", which owns ${r.owns.join(', ')}: an owner can disable or drop the append-only triggers and rewrite the log; ${fix}`);
  if (!r.superuser && r.may_change.length > 0) problems.push(`the app's role "${r.role}" holds UPDATE, DELETE or TRUNCATE on ${r.may_change.join(', ')}; only SELECT and INSERT are needed`);
  if (!r.superuser && r.owns.length === 0 && !r.member) problems.push(`the app's role "${r.role}" is not a member of ${APP_ROLE}: it may lack the privileges the coordinator needs`);
  return problems;
}
