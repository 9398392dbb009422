import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/fedmark.js', import.meta.url));
const ENTRY = fileURLToPath(new URL('./entry.ts', import.meta.url));
// Inside the package, so the bundle resolves its dependencies from the package's node_modules.
const CACHE = fileURLToPath(new URL('../node_modules/.cache/fedmark/', import.meta.url));
const STALE_BUILD_MS = 24 * 3600 * 1000;
/** Beside each build: its source files (esbuild's metafile inputs) with their size and mtime when it was built. */
const INPUTS = 'inputs.json';

type InputStamps = Record<string, { size: number; mtimeMs: number }>;

/** Source paths as esbuild reports them (relative to the working directory) with their size and mtime. */
function inputStamps(paths: string[]): InputStamps {
  const stamps: InputStamps = {};
  for (const p of paths) {
    const { size, mtimeMs } = statSync(resolve(p));
    stamps[resolve(p)] = { size, mtimeMs };
  }
  return stamps;
}

/**
 * The newest build whose every source file is unchanged (same size and mtime; dependencies are
 * external, so node_modules does not enter): ~300 stat calls instead of an esbuild run (~0.5 s of
 * CPU, seconds of wall time on a loaded machine). A new import means an edited file, so a changed
 * source set is caught too.
 */
function reusableBuild(cache: string): string | undefined {
  if (!existsSync(cache)) return undefined;
  const builds = readdirSync(cache)
    .filter((n) => n.startsWith('cli-') && existsSync(join(cache, n, INPUTS)))
    .map((n) => join(cache, n))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  for (const dir of builds) {
    try {
      const stamps = JSON.parse(readFileSync(join(dir, INPUTS), 'utf8')) as InputStamps;
      const same = Object.entries(stamps).every(([path, s]) => {
        const now = statSync(path, { throwIfNoEntry: false });
        return now !== undefined && now.size === s.size && now.mtimeMs === s.mtimeMs;
      });
      // Built from this checkout's entry: a node_modules shared by two checkouts (a symlink) holds builds of both.
      const ours = resolve(ENTRY) in stamps;
      if (same && ours && existsSync(join(dir, 'fedmark-cli.mjs'))) return dir;
    } catch {
      // a damaged manifest: not reused
    }
  }
  return undefined;
}

/**
 * How the demo starts its child processes. `bin/fedmark.js` compiles our TypeScript on load
 * through tsx (an esbuild service per process): fine for one process, slow for eleven starting at
 * once on two cores. So the demo bundles the CLI once (~0.2 s, esbuild, dependencies left
 * external) and starts each child on the bundle with plain node: measured 12.4 s -> 7.4 s of
 * wall time for ten processes importing the node stack at once; with code splitting each child
 * loads only its own subcommand's dependencies. Falls back to the bin when
 * bundling is not possible (read-only install, no esbuild).
 */
export async function childLauncher(cache = CACHE): Promise<{ command: string; prefix: string[]; bundled: boolean; reused?: boolean }> {
  try {
    // A bundle built from exactly the sources on disk now is started as it is: no esbuild run.
    const reusable = reusableBuild(cache);
    if (reusable) return { command: process.execPath, prefix: [join(reusable, 'fedmark-cli.mjs')], bundled: true, reused: true };
    const esbuild = await import('esbuild');
    mkdirSync(cache, { recursive: true });
    // Code splitting keeps each subcommand's dependencies in its own chunk, loaded by its dynamic
    // import: in one flat ESM file every external import is hoisted to the top, so each node
    // would load express and Kysely and the coordinator TensorFlow.js, on two cores, at once.
    // Built into a folder of this process's own, then renamed to one named by the content: two
    // demos starting at once (parallel test files) never read each other's half-written chunks.
    const building = join(cache, `building-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const built = await esbuild.build({ entryPoints: { 'fedmark-cli': ENTRY }, bundle: true, splitting: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outdir: building, outExtension: { '.js': '.mjs' }, logLevel: 'silent', metafile: true });
      writeFileSync(join(building, INPUTS), JSON.stringify(inputStamps(Object.keys(built.metafile.inputs))));
    } finally {
      // esbuild keeps a service process for further builds; there are none.
      await esbuild.stop();
    }
    const hash = createHash('sha256');
    for (const name of readdirSync(building).sort()) if (name !== INPUTS) hash.update(name).update(readFileSync(join(building, name)));
    const outdir = join(cache, `cli-${hash.digest('hex').slice(0, 16)}`);
    try {
      renameSync(building, outdir);
    } catch {
      // The same build is already in place (sources touched, not changed): its stamps are refreshed, atomically.
      renameSync(join(building, INPUTS), join(outdir, INPUTS));
      rmSync(building, { recursive: true, force: true });
    }
    // Builds of earlier sources are dropped once nobody can still be starting from them.
    for (const name of readdirSync(cache)) {
      const path = join(cache, name);
      if ((name.startsWith('cli-') || name.startsWith('building-') || name === 'fedmark-cli.mjs') && path !== outdir && Date.now() - statSync(path).mtimeMs > STALE_BUILD_MS) rmSync(path, { recursive: true, force: true });
    }
    return { command: process.execPath, prefix: [join(outdir, 'fedmark-cli.mjs')], bundled: true };
  } catch {
    return { command: process.execPath, prefix: [BIN], bundled: false };
  }
}
