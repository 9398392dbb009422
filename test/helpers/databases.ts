import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { APP_ROLE, CREATE_APP_ROLE_SQL } from '../../coordinator/db/migrations/20261129_0009_app_role.ts';

/**
 * The database backends every coordinator suite runs against: PGlite always; real PostgreSQL when
 * it answers. With REQUIRE_POSTGRES=1 (CI) an unreachable PostgreSQL is a failure, not a skip.
 */
export interface DatabaseBackend {
  name: 'pglite' | 'postgres';
  /**
   * A fresh, empty database for one suite. With `appRole` (PostgreSQL only), `databaseUrl`
   * connects as a new LOGIN role that is a member of `fedmark_app`, as in production, and
   * `migrationDatabaseUrl` as the superuser that owns the schema; `appLogin` names that role.
   */
  create(options?: { appRole?: boolean }): Promise<{ databaseUrl?: string; migrationDatabaseUrl?: string; appLogin?: string; dataDir?: string; drop(): Promise<void> }>;
}

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function postgresReachable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('select 1');
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    await client.end().catch(() => {});
  }
}

const pgliteBackend: DatabaseBackend = {
  name: 'pglite',
  async create() {
    const dataDir = mkdtempSync(join(tmpdir(), 'fedmark-pglite-'));
    return { dataDir, drop: async () => rmSync(dataDir, { recursive: true, force: true }) };
  },
};

const postgresBackend: DatabaseBackend = {
  name: 'postgres',
  async create(options = {}) {
    const name = `fedmark_test_${randomBytes(6).toString('hex')}`;
    // Roles are cluster-wide: each suite gets its own login role, dropped with its database.
    const login = options.appRole ? `${name}_app` : undefined;
    const admin = new pg.Client({ connectionString: ADMIN_URL });
    await admin.connect();
    await admin.query(`create database ${name}`);
    if (login) {
      // The group role is normally made by the first migration; a member must exist before the
      // coordinator connects as it, so it is made here the same (race-tolerant) way.
      await admin.query(CREATE_APP_ROLE_SQL);
      await admin.query(`create role ${login} login nosuperuser nocreatedb nocreaterole inherit in role ${APP_ROLE}`);
    }
    await admin.end();
    const url = new URL(ADMIN_URL);
    url.pathname = `/${name}`;
    const appUrl = new URL(url);
    if (login) {
      appUrl.username = login;
      appUrl.password = '';
    }
    return {
      databaseUrl: appUrl.toString(),
      ...(login ? { migrationDatabaseUrl: url.toString(), appLogin: login } : {}),
      async drop() {
        // Let the suite's pool finish closing its connections first: a forced drop would cut
        // them mid-goodbye and surface as an unhandled error in the test process.
        await new Promise((r) => setTimeout(r, 250));
        const c = new pg.Client({ connectionString: ADMIN_URL });
        await c.connect();
        await c.query(`drop database if exists ${name} with (force)`);
        if (login) await c.query(`drop role if exists ${login}`);
        await c.end();
      },
    };
  },
};

let cached: Promise<DatabaseBackend[]> | undefined;

/** Resolves which backends to run; prints why PostgreSQL is skipped when it is. */
export function databaseBackends(): Promise<DatabaseBackend[]> {
  cached ??= (async () => {
    const problem = await postgresReachable();
    if (!problem) return [pgliteBackend, postgresBackend];
    if (process.env.REQUIRE_POSTGRES === '1') throw new Error(`REQUIRE_POSTGRES=1 but PostgreSQL at ${ADMIN_URL} cannot be reached: ${problem}`);
    console.warn(`[fedmark tests] PostgreSQL suites skipped: cannot reach ${ADMIN_URL} (${problem}). Set TEST_DATABASE_URL, or REQUIRE_POSTGRES=1 to make this an error.`);
    return [pgliteBackend];
  })();
  return cached;
}

/** Synchronous list for describe.each: PostgreSQL is included and skipped inside when unreachable. */
export const BACKEND_NAMES = ['pglite', 'postgres'] as const;

export async function backendOrSkip(name: 'pglite' | 'postgres'): Promise<DatabaseBackend | undefined> {
  return (await databaseBackends()).find((b) => b.name === name);
}
