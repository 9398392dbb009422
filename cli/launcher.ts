import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/fedmark.js', import.meta.url));
const ENTRY = fileURLToPath(new URL('./entry.ts', import.meta.url));
// Inside the package, so the bundle resolves its dependencies from the package's node_modules.
const CACHE = fileURLToPath(new URL('../node_modules/.cache/fedmark/', import.meta.url));
const STALE_BUILD_MS = 24 * 3600 * 1000;

/**
 * How the demo starts its child processes. `bin/fedmark.js` compiles our TypeScript on load
 * through tsx (an esbuild service per process): fine for one process, slow for eleven starting at
 * once on two cores. So the demo bundles the CLI once (~0.2 s, esbuild, dependencies left
 * external) and starts each child on the bundle with plain node: measured 12.4 s -> 7.4 s of
 * wall time for ten processes importing the node stack at once; with code splitting each child
 * loads only its own subcommand's dependencies. Falls back to the bin when
 * bundling is not possible (read-only install, no esbuild).
 */
export async function childLauncher(): Promise<{ command: string; prefix: string[]; bundled: boolean }> {
  try {
    const esbuild = await import('esbuild');
    mkdirSync(CACHE, { recursive: true });
    // Code splitting keeps each subcommand's dependencies in its own chunk, loaded by its dynamic
    // import: in one flat ESM file every external import is hoisted to the top, so each node
    // would load express and Kysely and the coordinator TensorFlow.js, on two cores, at once.
    // Built into a folder of this process's own, then renamed to one named by the content: two
    // demos starting at once (parallel test files) never read each other's half-written chunks.
    const building = `${CACHE}building-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await esbuild.build({ entryPoints: { 'fedmark-cli': ENTRY }, bundle: true, splitting: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outdir: building, outExtension: { '.js': '.mjs' }, logLevel: 'silent' });
    } finally {
      // esbuild keeps a service process for further builds; there are none.
      await esbuild.stop();
    }
    const hash = createHash('sha256');
    for (const name of readdirSync(building).sort()) hash.update(name).update(readFileSync(join(building, name)));
    const outdir = `${CACHE}cli-${hash.digest('hex').slice(0, 16)}`;
    try {
      renameSync(building, outdir);
    } catch {
      rmSync(building, { recursive: true, force: true }); // the same build is already in place
    }
    // Builds of earlier sources are dropped once nobody can still be starting from them.
    for (const name of readdirSync(CACHE)) {
      const path = join(CACHE, name);
      if ((name.startsWith('cli-') || name.startsWith('building-') || name === 'fedmark-cli.mjs') && path !== outdir && Date.now() - statSync(path).mtimeMs > STALE_BUILD_MS) rmSync(path, { recursive: true, force: true });
    }
    return { command: process.execPath, prefix: [join(outdir, 'fedmark-cli.mjs')], bundled: true };
  } catch {
    return { command: process.execPath, prefix: [BIN], bundled: false };
  }
}
