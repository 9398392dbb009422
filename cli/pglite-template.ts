import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * The demo's embedded database starts from a cached, freshly initialized PGlite cluster instead of
 * running initdb on every run. initdb (PostgreSQL bootstrapping its catalogs in WebAssembly) is
 * the largest single cost before round 1: ~6-12 s of CPU and ~830 MB resident (measured: open of a
 * new folder 11.7 s CPU, of an existing one 2.4 s, under load 30 on 2 cores). The cluster is made
 * once per PGlite version, with nothing of fedmark's in it (no schema, no rows, no keys: the
 * coordinator still runs all its migrations on its copy), and copied into each demo's folder, as
 * PostgreSQL's own `createdb` copies template1. Copies share the cluster's system identifier,
 * which only physical replication looks at. Any failure falls back to the coordinator's own initdb.
 */

const CACHE = fileURLToPath(new URL('../node_modules/.cache/fedmark/', import.meta.url));
/** Written last into a finished template: a half-built one is never copied. */
const COMPLETE = '.fedmark-template-complete';

export type SeedOutcome = 'copied' | 'created' | 'skipped';

/** The installed PGlite's version: a template is only ever used by the PGlite that made it. */
function pgliteVersion(): string {
  // Its package.json is not in its exports map: found upwards from the entry point.
  let dir = dirname(fileURLToPath(pgliteEntry()));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@electric-sql/pglite' && pkg.version) return pkg.version;
    }
    if (dirname(dir) === dir) throw new Error('no @electric-sql/pglite package.json');
    dir = dirname(dir);
  }
}

function pgliteEntry(): string {
  return import.meta.resolve('@electric-sql/pglite');
}

/**
 * Fills the empty folder `dataDir` with a copy of the cached initialized cluster, making the
 * cache first if needed. Never throws: 'skipped' leaves `dataDir` as it was (the coordinator then
 * runs initdb itself).
 */
export async function seedPgliteDir(dataDir: string, cacheDir = CACHE): Promise<SeedOutcome> {
  try {
    if (existsSync(join(dataDir, 'PG_VERSION'))) return 'skipped';
    const template = join(cacheDir, `pglite-${pgliteVersion()}`);
    let outcome: SeedOutcome = 'copied';
    if (!existsSync(join(template, COMPLETE))) {
      await buildTemplate(template);
      outcome = 'created';
    }
    mkdirSync(dataDir, { recursive: true });
    cpSync(template, dataDir, { recursive: true, filter: (src) => !src.endsWith(COMPLETE) });
    return outcome;
  } catch {
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    return 'skipped';
  }
}

/** initdb in a child process (its ~830 MB stay out of the demo), built aside and renamed into place: concurrent demos never see half a template. */
async function buildTemplate(template: string): Promise<void> {
  const building = `${template}-building-${process.pid}-${randomBytes(4).toString('hex')}`;
  mkdirSync(dirname(template), { recursive: true });
  try {
    // The same creation as the coordinator's own (coordinator/db/database.ts initPgliteInChild): a default PGlite opened and closed.
    const script = 'const { PGlite } = await import(process.argv[1]); const pg = new PGlite(process.argv[2]); await pg.waitReady; await pg.close();';
    await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, pgliteEntry(), building]);
    if (!existsSync(join(building, 'PG_VERSION'))) throw new Error('initdb left no PG_VERSION');
    writeFileSync(join(building, COMPLETE), `initialized by fedmark demo for PGlite ${pgliteVersion()}\n`);
    try {
      renameSync(building, template);
    } catch {
      // another demo finished the same template first: use theirs
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  if (!existsSync(join(template, COMPLETE))) throw new Error('no template');
}
