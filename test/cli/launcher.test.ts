import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { childLauncher } from '../../cli/launcher.ts';

// Inside the package (the bundle resolves its external dependencies from node_modules).
const cache = mkdtempSync(fileURLToPath(new URL('../../node_modules/.cache/fedmark-launcher-test-', import.meta.url)));
afterAll(() => rmSync(cache, { recursive: true, force: true }));

/** The demo's children start on a bundle of the CLI (cli/launcher.ts): built once per set of sources, not on every demo. */
describe('demo child launcher', () => {
  it('reuses the bundle while no source changed, and rebuilds when one did', async () => {
    const first = await childLauncher(cache);
    expect(first.bundled).toBe(true);
    expect(first.reused).toBeUndefined();
    const second = await childLauncher(cache);
    expect(second).toEqual({ ...first, reused: true });

    // A source file the bundle was built from, as if edited since: its stamp no longer matches.
    const [build] = readdirSync(cache).filter((n) => n.startsWith('cli-'));
    const manifest = join(cache, build, 'inputs.json');
    const stamps = JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, { size: number; mtimeMs: number }>;
    const entry = Object.keys(stamps).find((p) => p.endsWith('cli/main.ts'))!;
    expect(entry).toBeDefined();
    writeFileSync(manifest, JSON.stringify({ ...stamps, [entry]: { ...stamps[entry], mtimeMs: stamps[entry].mtimeMs - 1000 } }));
    const rebuilt = await childLauncher(cache);
    expect(rebuilt.reused).toBeUndefined();
    // The same output (the source did not really change): the build in place gets fresh stamps and is reused again.
    expect(rebuilt.prefix).toEqual(first.prefix);
    expect((await childLauncher(cache)).reused).toBe(true);
  }, 120_000);

  it("does not reuse a build of another checkout sharing this node_modules (its entry is not this one's)", async () => {
    const ours = await childLauncher(cache);
    const [build] = readdirSync(cache).filter((n) => n.startsWith('cli-'));
    const manifest = join(cache, build, 'inputs.json');
    const stamps = JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, { size: number; mtimeMs: number }>;
    // The same build as if made from a copy of the sources in another checkout: its entry there exists, unchanged.
    const entry = Object.keys(stamps).find((p) => p.endsWith('cli/entry.ts'))!;
    const other = join(mkdtempSync(join(tmpdir(), 'fedmark-other-checkout-')), 'entry.ts');
    copyFileSync(entry, other);
    const { size, mtimeMs } = statSync(other);
    const { [entry]: _ours, ...rest } = stamps;
    const elsewhere = { ...rest, [other]: { size, mtimeMs } };
    writeFileSync(manifest, JSON.stringify(elsewhere));
    const next = await childLauncher(cache);
    expect(next.reused).toBeUndefined();
    expect(next.prefix).toEqual(ours.prefix);
  }, 120_000);
});
