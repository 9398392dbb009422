import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { BIN } from '../helpers/processes.ts';
import { backendOrSkip } from '../helpers/databases.ts';

const run = promisify(execFile);

/**
 * `fedmark demo --database-url` (issue 13's scale figures on PostgreSQL): the demo's coordinator
 * runs on the given PostgreSQL database instead of the embedded PGlite, end to end, and refuses a
 * database another coordinator already used (its audit log would not verify against this run's key).
 */
describe('fedmark demo --database-url', () => {
  it('refuses a value that is not a PostgreSQL connection string, naming the flag', async () => {
    const wrong = await run(process.execPath, [BIN, 'demo', '--database-url', 'mysql://x@y/z']).catch((e) => e);
    expect(wrong.code).not.toBe(0);
    expect(String(wrong.stderr)).toMatch(/--database-url must be a PostgreSQL connection string/);
  });

  it('runs the federation on PostgreSQL, and refuses the same database a second time', async (ctx) => {
    const backend = await backendOrSkip('postgres');
    if (!backend) return ctx.skip();
    const database = await backend.create();
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-pg-'));
    try {
      const args = [BIN, 'demo', '--json', '--rounds', '2', '--nodes', '3', '--model', 'logreg', '--no-local-baseline', '--no-personalize', '--database-url', database.databaseUrl!];
      const { stdout, stderr } = await run(process.execPath, [...args, '--out', join(out, 'first')], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim().split('\n').pop()!);
      expect(result.rounds.map((r: { phase: string }) => r.phase)).toEqual(['completed', 'completed']);
      expect(result.audit.ok).toBe(true);
      expect(stderr).toMatch(/coordinator http:\/\/\S+ \(PostgreSQL postgres:/);
      // What the demo did is in that database, not in a PGlite folder.
      const client = new pg.Client({ connectionString: database.databaseUrl });
      await client.connect();
      const { rows } = await client.query<{ studies: string; rounds: string }>('select (select count(*) from studies)::text as studies, (select count(*) from rounds)::text as rounds');
      await client.end();
      expect(rows[0]).toEqual({ studies: '1', rounds: '2' });
      const again = await run(process.execPath, [...args, '--out', join(out, 'second')]).catch((e) => e);
      expect(again.code).not.toBe(0);
      expect(String(again.stderr)).toMatch(/already holds a fedmark coordinator's tables: give the demo a new, empty database/);
    } finally {
      rmSync(out, { recursive: true, force: true });
      await database.drop();
    }
  }, 240_000);
});
