import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerAuditCommands, type AuditCommandDeps } from '../../cli/audit-command.ts';
import { canonicalJson, type AuditEntry } from '../../protocols/audit/audit-chain.ts';
import { writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { buildLog, generateTestKey, type TestKey } from './fixture.ts';

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
  await writeAuditExport(dir, { ...log, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: '2025-03-02T00:00:00.000Z', source: 'test' });
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

  it('exits 1 when the export fails', async () => {
    const r = await run(['audit', 'export', '--out', 'o', '--data-dir', 'd'], { exportFromDatabase: async () => { throw new Error('database locked'); } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('fedmark audit export: database locked\n');
  });
});
