import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerAuditCommands, type AuditCommandDeps } from '../../cli/audit-command.ts';
import { canonicalJson, type AuditEntry } from '../../protocols/audit/audit-chain.ts';
import { writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { buildLog, generateTestKey, type TestKey } from './fixture.ts';
import pino from 'pino';
import { sql } from 'kysely';
import { exportFromCoordinator, exportFromDatabase } from '../../coordinator/audit/audit-export-sources.ts';
import { loadCoordinatorConfig } from '../../coordinator/config.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { startCoordinator } from '../../coordinator/main.ts';
import { appendAudit, checkpointAudit } from '../../coordinator/audit/audit-log.ts';
import { CoordinatorKeyring } from '../../coordinator/identity.ts';
import { backendOrSkip } from '../helpers/databases.ts';

let root: string;
let dir: string;
let key: TestKey;
let entries: AuditEntry[];

beforeAll(async () => {
  key = await generateTestKey('fedmark coordinator');
  const log = await buildLog(30, key);
  entries = log.entries;
  root = mkdtempSync(join(tmpdir(), 'fedmark-audit-cli-'));
  dir = join(root, 'export');
  await writeAuditExport(dir, { ...log, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: '2025-03-02T00:00:00.000Z', source: 'test', signingKey: key.privateKey });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let stdout: string;
let stderr: string;
beforeEach(() => {
  stdout = '';
  stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  process.exitCode = undefined;
});
afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});

async function run(args: string[], deps: AuditCommandDeps = {}) {
  const program = new Command('fedmark').exitOverride();
  registerAuditCommands(program, deps);
  await program.parseAsync(args, { from: 'user' });
  return { stdout, stderr, exitCode: process.exitCode };
}

describe('fedmark audit verify', () => {
  it('prints OK with the counts and the head, and exits 0', async () => {
    const r = await run(['audit', 'verify', dir]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(`OK: 30 entries, 4 checkpoints, head ${entries[29].hash}`);
    expect(r.stdout).toContain(key.fingerprint);
    expect(r.stderr).toBe('');
  });

  it('checks --fingerprint', async () => {
    expect((await run(['audit', 'verify', dir, '--fingerprint', key.fingerprint])).exitCode).toBe(0);
    const r = await run(['audit', 'verify', dir, '--fingerprint', 'AB'.repeat(20)]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: bad-checkpoint-signature: the export's coordinator key is/);
  });

  it('prints FAILED with the problem and the entry to stderr, exits 1, no stack trace', async () => {
    const tampered = join(root, 'tampered');
    const { cpSync, readFileSync } = await import('node:fs');
    cpSync(dir, tampered, { recursive: true });
    const lines = readFileSync(join(tampered, 'entries.jsonl'), 'utf8').split('\n');
    lines[6] = canonicalJson({ ...JSON.parse(lines[6]), actor: 'admin' });
    writeFileSync(join(tampered, 'entries.jsonl'), lines.join('\n'));
    const r = await run(['audit', 'verify', tampered]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^FAILED: modified at entry 7: entry 7 \(position 7\) was modified/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('fails cleanly on a folder that is not an export', async () => {
    const r = await run(['audit', 'verify', join(root, 'nowhere')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('FAILED: malformed: manifest.json: missing from the export\n');
  });
});

describe('fedmark audit export', () => {
  it('delegates to the coordinator exporter', async () => {
    const exportFromCoordinator = vi.fn(async () => {});
    const r = await run(['audit', 'export', '--out', join(root, 'x'), '--coordinator', 'https://coord.example', '--token', 't0k3n'], { exportFromCoordinator });
    expect(exportFromCoordinator).toHaveBeenCalledWith({ coordinator: 'https://coord.example', token: 't0k3n', out: join(root, 'x') });
    expect(r.exitCode).toBe(0);
  });

  it('delegates to the database exporter', async () => {
    const exportFromDatabase = vi.fn(async () => {});
    await run(['audit', 'export', '--out', 'o', '--data-dir', 'd'], { exportFromDatabase });
    expect(exportFromDatabase).toHaveBeenCalledWith({ databaseUrl: undefined, dataDir: 'd', out: 'o' });
  });

  it.each([
    [['--out', 'o', '--database-url', 'postgres://x'], /from a database is not available/],
    [['--out', 'o', '--coordinator', 'http://c', '--token', 't'], /from a coordinator is not available/],
    [['--out', 'o'], /choose a source/],
    [['--out', 'o', '--data-dir', 'd', '--database-url', 'postgres://x'], /choose one source/],
  ])('exits 2 on %j', async (args, message) => {
    const r = await run(['audit', 'export', ...args]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('--token is an auditor token, read from FEDMARK_TOKEN, with FEDMARK_ADMIN_TOKEN only as the last resort', async () => {
    const saved = { token: process.env.FEDMARK_TOKEN, admin: process.env.FEDMARK_ADMIN_TOKEN };
    const exportFn = vi.fn(async () => {});
    try {
      process.env.FEDMARK_TOKEN = 'auditor-token';
      process.env.FEDMARK_ADMIN_TOKEN = 'admin-token';
      await run(['audit', 'export', '--out', 'o', '--coordinator', 'http://c'], { exportFromCoordinator: exportFn });
      expect(exportFn).toHaveBeenLastCalledWith({ coordinator: 'http://c', token: 'auditor-token', out: 'o' });
      delete process.env.FEDMARK_TOKEN;
      await run(['audit', 'export', '--out', 'o', '--coordinator', 'http://c'], { exportFromCoordinator: exportFn });
      expect(exportFn).toHaveBeenLastCalledWith({ coordinator: 'http://c', token: 'admin-token', out: 'o' });
      delete process.env.FEDMARK_ADMIN_TOKEN;
      const r = await run(['audit', 'export', '--out', 'o', '--coordinator', 'http://c'], { exportFromCoordinator: exportFn });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/needs an auditor token: --token T \(or FEDMARK_TOKEN\)/);
    } finally {
      for (const [k, v] of [['FEDMARK_TOKEN', saved.token], ['FEDMARK_ADMIN_TOKEN', saved.admin]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const program = new Command('fedmark');
    registerAuditCommands(program, {});
    const exportCommand = program.commands.find((c) => c.name() === 'audit')!.commands.find((c) => c.name() === 'export')!;
    expect(exportCommand.helpInformation()).toMatch(/--token <token>\s+auditor API token for --coordinator \(env FEDMARK_TOKEN/);
  });

  it('exits 1 when the export fails', async () => {
    const r = await run(['audit', 'export', '--out', 'o', '--data-dir', 'd'], { exportFromDatabase: async () => { throw new Error('database locked'); } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('fedmark audit export: database locked\n');
  });
});

/** The real exporters, end to end: a coordinator over HTTP with an auditor token, and its database. */
describe('fedmark audit export, for real', () => {
  const work = mkdtempSync(join(tmpdir(), 'fedmark-audit-e2e-'));
  const realDeps: AuditCommandDeps = { exportFromCoordinator, exportFromDatabase };
  /** One command's output only (the captured streams otherwise add up over a test). */
  const runAlone = (args: string[], deps: AuditCommandDeps = {}) => {
    stdout = '';
    stderr = '';
    return run(args, deps);
  };
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('--coordinator with an auditor token exports a log that verifies; --data-dir reads it without migrating or writing', async () => {
    const dataDir = join(work, 'db');
    const config = loadCoordinatorConfig({}, { adminToken: 'e2e-admin-token-0123456789', dataDir, port: 0, keyDir: join(work, 'keys'), keyPassphrase: 'e2e-coordinator-passphrase' });
    const running = await startCoordinator(config, pino({ level: 'silent' }));
    let auditor: string;
    try {
      const admin = { authorization: 'Bearer e2e-admin-token-0123456789', 'content-type': 'application/json' };
      auditor = (await (await fetch(`${running.url}/v1/tokens`, { method: 'POST', headers: admin, body: JSON.stringify({ role: 'auditor', name: 'e2e auditor' }) })).json()).token;
      expect(auditor).toMatch(/^fmtok_/);
      const out = join(work, 'from-api');
      const r = await runAlone(['audit', 'export', '--out', out, '--coordinator', running.url, '--token', auditor], realDeps);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      const verified = await runAlone(['audit', 'verify', out]);
      expect(verified.exitCode, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/^OK: \d+ entries, 1 checkpoints/);
      // An analyst may not export.
      const analyst = (await (await fetch(`${running.url}/v1/tokens`, { method: 'POST', headers: admin, body: JSON.stringify({ role: 'analyst', name: 'x', region: 'eu' }) })).json()).token;
      const refused = await runAlone(['audit', 'export', '--out', join(work, 'refused'), '--coordinator', running.url, '--token', analyst], realDeps);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toMatch(/the coordinator refused the export \(403\)/);
    } finally {
      await running.close(); // PGlite is single-process: the coordinator lets go of the folder first
    }

    // Roll the bookkeeping back one migration: an export that migrated would put it back.
    const owner = await openDatabase({ dataDir });
    const last = (await sql<{ name: string }>`select name from kysely_migration order by name desc limit 1`.execute(owner.db)).rows[0];
    await sql`delete from kysely_migration where name = ${last.name}`.execute(owner.db);
    const entriesBefore = (await owner.db.selectFrom('audit_log').select('seq').execute()).length;
    await owner.db.destroy();

    const out = join(work, 'from-db');
    const r = await runAlone(['audit', 'export', '--out', out, '--data-dir', dataDir], realDeps);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // Straight from the database, without the coordinator key: the manifest is unsigned.
    const unsigned = await runAlone(['audit', 'verify', out]);
    expect(unsigned.exitCode, unsigned.stderr).toBe(1);
    expect(unsigned.stderr).toMatch(/^FAILED: bad-manifest: manifest.json is not signed by the coordinator/);
    const allowed = await runAlone(['audit', 'verify', out, '--allow-unsigned-manifest']);
    expect(allowed.exitCode, allowed.stderr).toBe(0);
    expect(allowed.stdout).toMatch(/manifest NOT signed \(accepted with --allow-unsigned-manifest\)/);
    // With the coordinator's key folder the operator signs it (after checking the head signed last).
    const passphraseBefore = process.env.FEDMARK_KEY_PASSPHRASE;
    process.env.FEDMARK_KEY_PASSPHRASE = 'e2e-coordinator-passphrase';
    try {
      const signedOut = join(work, 'from-db-signed');
      const s = await runAlone(['audit', 'export', '--out', signedOut, '--data-dir', dataDir, '--key-dir', join(work, 'keys')], realDeps);
      expect(s.exitCode, s.stderr).toBe(0);
      const v = await runAlone(['audit', 'verify', signedOut]);
      expect(v.exitCode, v.stderr).toBe(0);
      expect(v.stdout).toMatch(/^manifest signed by [0-9a-f]{40} at /m);
    } finally {
      if (passphraseBefore === undefined) delete process.env.FEDMARK_KEY_PASSPHRASE;
      else process.env.FEDMARK_KEY_PASSPHRASE = passphraseBefore;
    }
    const after = await openDatabase({ dataDir, mode: 'read-only' });
    try {
      expect((await sql`select name from kysely_migration where name = ${last.name}`.execute(after.db)).rows).toEqual([]);
      expect((await after.db.selectFrom('audit_log').select('seq').execute()).length).toBe(entriesBefore);
      // And the connection it uses cannot write.
      await expect(sql`insert into audit_head (id, seq) values (2, 0)`.execute(after.db)).rejects.toThrow(/read-only transaction/);
    } finally {
      await after.db.destroy();
    }
  }, 120_000); // three exports and five verifications, on a 2-core machine shared with other suites

  it('--data-dir on a folder that holds no coordinator database fails clearly, and creates nothing', async () => {
    const nowhere = join(work, 'not-a-db');
    let r = await runAlone(['audit', 'export', '--out', join(work, 'x1'), '--data-dir', nowhere], realDeps);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(`fedmark audit export: ${nowhere} holds no database (no PG_VERSION file): pass the coordinator's FEDMARK_DATA_DIR\n`);
    expect(existsSync(nowhere)).toBe(false);
    // A PostgreSQL database, but not the coordinator's.
    const other = join(work, 'other-db');
    const { PGlite } = await import('@electric-sql/pglite');
    const p = new PGlite(other);
    await p.exec('create table unrelated (x int)');
    await p.close();
    r = await runAlone(['audit', 'export', '--out', join(work, 'x2'), '--data-dir', other], realDeps);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/holds no fedmark coordinator database: tables audit_log, audit_checkpoints, coordinator_keys missing/);
    const check = new PGlite(other);
    expect((await check.query(`select to_regclass('kysely_migration') as t`)).rows).toEqual([{ t: null }]);
    await check.close();
  }, 60_000);

  it('--database-url on PostgreSQL: read-only as the app\'s role, never migrating; an empty database fails clearly', async (ctx) => {
    const backend = await backendOrSkip('postgres');
    if (!backend) return ctx.skip();
    const database = await backend.create({ appRole: true });
    const empty = await backend.create();
    try {
      const owner = await openDatabase({ databaseUrl: database.migrationDatabaseUrl });
      const keyring = await CoordinatorKeyring.open(owner.db, join(work, 'pg-keys'), 'e2e-coordinator-passphrase');
      for (let i = 0; i < 3; i++) await appendAudit(owner.db, { actor: 'test', kind: 'test.entry', data: { i } });
      await checkpointAudit(owner.db, keyring);
      await owner.db.destroy();
      const out = join(work, 'from-pg');
      const r = await runAlone(['audit', 'export', '--out', out, '--database-url', database.databaseUrl!], realDeps);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      const verified = await runAlone(['audit', 'verify', out, '--allow-unsigned-manifest']);
      expect(verified.stdout).toMatch(/^OK: 3 entries, 1 checkpoints/);
      const reader = await openDatabase({ databaseUrl: database.databaseUrl, mode: 'read-only' });
      try {
        await expect(sql`insert into audit_log (seq, at, actor, kind, data, prev_hash, hash) values (99, 'x', 'x', 'x', '{}', 'x', 'x')`.execute(reader.db)).rejects.toThrow(/read-only transaction/);
      } finally {
        await reader.db.destroy();
      }

      const failed = await runAlone(['audit', 'export', '--out', join(work, 'from-empty-pg'), '--database-url', empty.databaseUrl!], realDeps);
      expect(failed.exitCode).toBe(1);
      expect(failed.stderr).toMatch(/holds no fedmark coordinator database: tables audit_log, audit_checkpoints, coordinator_keys missing/);
      const check = await openDatabase({ databaseUrl: empty.databaseUrl, mode: 'read-only' }).catch((err: Error) => err);
      expect(check).toBeInstanceOf(Error); // still empty: nothing was migrated into it
    } finally {
      await database.drop();
      await empty.drop();
    }
  }, 60_000);
});
