import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { parse } from 'yaml';
import { APP_ROLE } from '../coordinator/db/migrations/20261129_0009_app_role.ts';
import { backendOrSkip } from './helpers/databases.ts';

type Service = { build?: string; image?: string; command?: string[]; environment?: Record<string, string>; volumes?: string[]; depends_on?: Record<string, { condition?: string }> | string[]; ports?: string[]; restart?: string; healthcheck?: { test?: string[] } };
const compose = parse(readFileSync(fileURLToPath(new URL('../docker-compose.yml', import.meta.url)), 'utf8')) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const dockerfile = readFileSync(fileURLToPath(new URL('../Dockerfile', import.meta.url)), 'utf8');
const initSqlPath = fileURLToPath(new URL('../docker/postgres-init/10-fedmark-app-role.sql', import.meta.url));
const initSql = readFileSync(initSqlPath, 'utf8');

/** Compose's own variable interpolation (${VAR}, ${VAR:-default}, ${VAR:?error}), to read URLs as the container sees them. */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    if (env[name]) return env[name];
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return op === '-' ? (arg ?? '') : '';
  });
}
const secrets = { FEDMARK_DB_OWNER_PASSWORD: 'owner0123abcd', FEDMARK_DB_APP_PASSWORD: 'app0123abcd', FEDMARK_ADMIN_TOKEN: 'x'.repeat(32), FEDMARK_KEY_PASSPHRASE: 'y'.repeat(32) };

/** docker compose cannot run here (no engine): the file's wiring is checked as data instead. */
describe('docker-compose.yml', () => {
  it('has PostgreSQL, the coordinator and three regional nodes', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['coordinator', 'node-cn', 'node-eu', 'node-us', 'postgres']);
    expect(compose.services.postgres.image).toMatch(/^postgres:/);
  });

  it('points the coordinator at PostgreSQL, with its secrets from the environment and its key on a volume', () => {
    const c = compose.services.coordinator;
    expect(c.command?.[0]).toBe('coordinator');
    const postgres = compose.services.postgres.environment!;
    // The app logs in as the role the init SQL creates (a member of fedmark_app, owning nothing);
    // the superuser that owns the schema is used for the migrations only.
    const app = new URL(interpolate(c.environment!.DATABASE_URL, secrets));
    const owner = new URL(interpolate(c.environment!.FEDMARK_MIGRATION_DATABASE_URL, secrets));
    for (const db of [app, owner]) {
      expect(db.hostname).toBe('postgres');
      expect(db.pathname.slice(1)).toBe(postgres.POSTGRES_DB);
    }
    expect(app.username).toBe(postgres.FEDMARK_DB_APP_USER);
    expect(app.username).not.toBe(postgres.POSTGRES_USER);
    expect(app.password).toBe(interpolate(postgres.FEDMARK_DB_APP_PASSWORD, secrets));
    expect(owner.username).toBe(postgres.POSTGRES_USER);
    expect(owner.password).toBe(interpolate(postgres.POSTGRES_PASSWORD, secrets));
    // Both passwords are required, never defaulted.
    expect(postgres.POSTGRES_PASSWORD).toMatch(/^\$\{FEDMARK_DB_OWNER_PASSWORD:\?/);
    expect(postgres.FEDMARK_DB_APP_PASSWORD).toMatch(/^\$\{FEDMARK_DB_APP_PASSWORD:\?/);
    expect(() => interpolate(postgres.FEDMARK_DB_APP_PASSWORD, {})).toThrow(/FEDMARK_DB_APP_PASSWORD/);
    expect(c.environment!.FEDMARK_ADMIN_TOKEN).toMatch(/^\$\{FEDMARK_ADMIN_TOKEN:\?/); // required, no default secret
    expect(c.environment!.FEDMARK_KEY_PASSPHRASE).toMatch(/^\$\{FEDMARK_KEY_PASSPHRASE:\?/);
    expect(c.volumes).toContain('coordinator-keys:/keys');
    expect(c.depends_on).toHaveProperty('postgres');
  });

  it('gives each node the coordinator, its own data volume, its own state and its jurisdiction', () => {
    const mounts = new Set<string>();
    for (const [name, region, jurisdiction] of [['node-eu', 'eu', 'EU-GDPR'], ['node-us', 'us', 'US-CA-CCPA'], ['node-cn', 'cn', 'CN-PIPL']]) {
      const n = compose.services[name];
      expect(n.command?.[0]).toBe('node');
      expect(n.command?.[n.command.indexOf('--coordinator') + 1]).toBe('http://coordinator:8080');
      const data = n.volumes!.find((v) => v.endsWith(':/data:ro'))!;
      expect(data).toBe(`./deploy/${region}:/data:ro`); // read-only: the node never writes the partner's data
      expect(n.volumes!.some((v) => v.startsWith(`${name}-state:`))).toBe(true);
      expect(n.environment!.FEDMARK_NODE_JURISDICTION).toBe(jurisdiction);
      expect(n.environment!.FEDMARK_NODE_KEY_PASSPHRASE).toMatch(/:\?/);
      expect(n.ports).toBeUndefined(); // nodes accept no inbound connections
      for (const v of n.volumes!) {
        expect(mounts.has(v)).toBe(false); // no volume shared between nodes
        mounts.add(v);
      }
    }
  });

  it('creates the app\'s login role on first start: a member of fedmark_app, from the environment', () => {
    expect(compose.services.postgres.volumes).toContain('./docker/postgres-init:/docker-entrypoint-initdb.d:ro');
    expect(initSql).toMatch(/\\set ON_ERROR_STOP on/);
    expect(initSql).toMatch(/\\getenv app_user FEDMARK_DB_APP_USER/);
    expect(initSql).toMatch(/\\getenv app_password FEDMARK_DB_APP_PASSWORD/);
    expect(initSql).toContain(`CREATE ROLE ${APP_ROLE} NOLOGIN`);
    expect(initSql).toMatch(/CREATE ROLE %I LOGIN NOSUPERUSER/);
    expect(initSql).toContain(`GRANT ${APP_ROLE} TO %I`);
    expect(initSql).toMatch(/CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT/);
  });

  it('the init SQL, run as PostgreSQL\'s entrypoint runs it, makes a login member of fedmark_app, and can be re-run', async (ctx) => {
    const backend = await backendOrSkip('postgres');
    const psql = spawnSync('psql', ['--version']);
    if (!backend || psql.status !== 0) return ctx.skip();
    const adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
    const user = `fedmark_compose_${randomBytes(4).toString('hex')}`;
    const run = (env: Record<string, string>) => spawnSync('psql', ['--no-psqlrc', '-d', adminUrl, '-f', initSqlPath], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    try {
      const missing = run({ FEDMARK_DB_APP_USER: user, FEDMARK_DB_APP_PASSWORD: '' });
      expect(missing.status).not.toBe(0);
      expect(missing.stderr).toMatch(/set FEDMARK_DB_APP_PASSWORD/);
      for (let i = 0; i < 2; i++) expect(run({ FEDMARK_DB_APP_USER: user, FEDMARK_DB_APP_PASSWORD: 'pw-0123' }).status).toBe(0);
      const { rows } = await admin.query(`select rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, pg_has_role(rolname, '${APP_ROLE}', 'MEMBER') as member from pg_roles where rolname = $1`, [user]);
      expect(rows).toEqual([{ rolcanlogin: true, rolsuper: false, rolcreaterole: false, rolcreatedb: false, member: true }]);
      expect((await admin.query(`select rolcanlogin from pg_roles where rolname = '${APP_ROLE}'`)).rows).toEqual([{ rolcanlogin: false }]);
    } finally {
      await admin.query(`drop role if exists ${user}`);
      await admin.end();
    }
  });

  it('restarts the coordinator and nodes on failure; nodes wait for a healthy coordinator and take their token from the environment', () => {
    const c = compose.services.coordinator;
    expect(c.restart).toBe('on-failure');
    expect(c.healthcheck?.test?.join(' ')).toMatch(/127\.0\.0\.1:8080\/healthz/);
    for (const [name, region] of [['node-eu', 'EU'], ['node-us', 'US'], ['node-cn', 'CN']]) {
      const n = compose.services[name];
      // A node started before its token is exported exits; on-failure brings it back.
      expect(n.restart).toBe('on-failure');
      expect(n.depends_on).toEqual({ coordinator: { condition: 'service_healthy' } });
      expect(n.environment!.FEDMARK_ENROLLMENT_TOKEN).toBe(`\${FEDMARK_TOKEN_${region}:-}`);
    }
  });

  it('the image owns its volume mount points, so keys and node state are writable as USER node', () => {
    const lines = dockerfile.split('\n');
    const user = lines.findIndex((l) => /^USER node\s*$/.test(l));
    expect(user).toBeGreaterThan(0);
    const prepare = lines.findIndex((l) => /^RUN .*mkdir -p .*\/keys.*\/state/.test(l));
    expect(prepare).toBeGreaterThanOrEqual(0);
    expect(prepare).toBeLessThan(user);
    expect(lines[prepare]).toMatch(/chown node:node \/keys \/state/);
    // Every named volume mounted by a service of this image is one of those folders.
    for (const name of ['coordinator', 'node-eu', 'node-us', 'node-cn']) {
      for (const v of compose.services[name].volumes!) {
        const [source, target] = v.split(':');
        if (!source.startsWith('.')) expect(['/keys', '/state']).toContain(target);
      }
    }
  });

  it('builds one image with the CLI as its entry point', () => {
    for (const name of ['coordinator', 'node-eu', 'node-us', 'node-cn']) expect(compose.services[name].build).toBe('.');
    expect(dockerfile).toMatch(/ENTRYPOINT \["node", "bin\/fedmark.js"\]/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    for (const dir of ['protocols', 'models', 'coordinator', 'client-node', 'cli', 'bin']) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
  });
});
