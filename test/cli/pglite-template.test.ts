import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { seedPgliteDir } from '../../cli/pglite-template.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { sql } from 'kysely';

const root = mkdtempSync(join(tmpdir(), 'fedmark-pglite-template-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The demo's embedded database starts from a cached initialized cluster (cli/pglite-template.ts), not a new initdb each run. */
describe('demo database template', () => {
  const cache = join(root, 'cache');

  it('initdb runs once per PGlite version; later demos get a copy, which the coordinator opens and migrates', async () => {
    expect(await seedPgliteDir(join(root, 'first'), cache)).toBe('created');
    const [template] = readdirSync(cache);
    expect(template).toMatch(/^pglite-\d/);
    const made = statSync(join(cache, template, 'PG_VERSION')).mtimeMs;
    expect(await seedPgliteDir(join(root, 'second'), cache)).toBe('copied');
    expect(statSync(join(cache, template, 'PG_VERSION')).mtimeMs).toBe(made);
    expect(readdirSync(cache)).toEqual([template]); // no leftover building folder
    expect(existsSync(join(root, 'second', 'PG_VERSION'))).toBe(true);
    // The copy is a working cluster with nothing of fedmark's until the coordinator migrates it.
    const opened = await openDatabase({ dataDir: join(root, 'second') });
    try {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from audit_log`.execute(opened.db);
      expect(rows[0].n).toBe(0);
    } finally {
      await opened.db.destroy();
    }
  }, 240_000);

  it('never touches a folder that already holds a database, and falls back when it cannot copy', async () => {
    const existing = join(root, 'second');
    expect(await seedPgliteDir(existing, cache)).toBe('skipped');
    // A cache path that cannot be a folder: the coordinator then runs initdb itself.
    const blocked = join(root, 'blocked');
    writeFileSync(blocked, 'a file, not a folder');
    const target = join(root, 'third');
    expect(await seedPgliteDir(target, blocked)).toBe('skipped');
    expect(readdirSync(target)).toEqual([]);
  });
});
