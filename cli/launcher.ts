import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/fedmark.js', import.meta.url));
const ENTRY = fileURLToPath(new URL('./entry.ts', import.meta.url));
// Inside the package, so the bundle resolves its dependencies from the package's node_modules.
const CACHE = fileURLToPath(new URL('../node_modules/.cache/fedmark/', import.meta.url));

/**
 * How the demo starts its child processes. `bin/fedmark.js` compiles our TypeScript on load
 * through tsx (an esbuild service per process): fine for one process, slow for eleven starting at
 * once on two cores. So the demo bundles the CLI once (~0.2 s, esbuild, dependencies left
 * external) and starts each child on the bundle with plain node: measured 12.4 s -> 7.4 s of
 * wall time for ten processes importing the node stack at once. Falls back to the bin when
 * bundling is not possible (read-only install, no esbuild).
 */
export async function childLauncher(): Promise<{ command: string; prefix: string[]; bundled: boolean }> {
  try {
    const esbuild = await import('esbuild');
    mkdirSync(CACHE, { recursive: true });
    const outfile = `${CACHE}fedmark-cli.mjs`;
    await esbuild.build({ entryPoints: [ENTRY], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile, logLevel: 'silent' });
    // esbuild keeps a service process for further builds; there are none.
    await esbuild.stop();
    return { command: process.execPath, prefix: [outfile], bundled: true };
  } catch {
    return { command: process.execPath, prefix: [BIN], bundled: false };
  }
}
