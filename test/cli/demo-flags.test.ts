import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { checkTaskFlags, personalizes } from '../../cli/demo.ts';
import { BIN } from '../helpers/processes.ts';

const run = promisify(execFile);
const root = mkdtempSync(join(tmpdir(), 'fedmark-demo-flags-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/**
 * The demo's task-specific flags (issue 9): --date, --series, --horizon go with --task forecast,
 * --user and --item with --task recommend; given with another task each is refused naming itself,
 * before any output is written, instead of being silently ignored.
 */
describe('demo flags that belong to one task', () => {
  it('--horizon without --task forecast is an error naming the flag, and nothing is written', async () => {
    const out = join(root, 'horizon');
    // The timeout (SIGTERM, which the demo passes on to its children) ends a demo that would run.
    const err = await run(process.execPath, [BIN, 'demo', '--horizon', '8', '--out', out], { timeout: 100_000 }).catch((e) => e);
    expect(err.code).toBe(1);
    expect(String(err.stderr)).toMatch(/--horizon applies to --task forecast only, not --task binary/);
    expect(String(err.stderr)).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(out)).toBe(false);
  }, 120_000);

  it('each flag is checked against the task it is given with', () => {
    expect(() => checkTaskFlags({ task: 'regression', date: 'week' })).toThrow(/--date applies to --task forecast only, not --task regression/);
    expect(() => checkTaskFlags({ series: 'store' })).toThrow(/--series applies to --task forecast only, not --task binary/);
    expect(() => checkTaskFlags({ task: 'forecast', user: 'customer' })).toThrow(/--user applies to --task recommend only, not --task forecast/);
    expect(() => checkTaskFlags({ task: 'forecast', item: 'sku' })).toThrow(/--item applies to --task recommend only/);
    expect(() => checkTaskFlags({ task: 'recommend', horizon: 8 })).toThrow(/--horizon applies to --task forecast only, not --task recommend/);
    expect(() => checkTaskFlags({ task: 'recommend', positive: 'yes' })).toThrow(/--positive applies to --task binary only/);
    expect(() => checkTaskFlags({ task: 'forecast', dirichlet: 0.5 })).toThrow(/--dirichlet applies to --task binary only/);
    // The messages the binary/regression demo already gave, unchanged.
    expect(() => checkTaskFlags({ loss: 'mse' })).toThrow('--loss mse is a regression loss: add --task regression');
    expect(() => checkTaskFlags({ task: 'regression', dirichlet: 1 })).toThrow(/--dirichlet skews the split by class/);
  });

  it('accepts each flag with its own task, and --no-personalize with any', () => {
    expect(() => checkTaskFlags({ task: 'forecast', date: 'week_start', series: 'store_sku', horizon: 8, personalize: false })).not.toThrow();
    expect(() => checkTaskFlags({ task: 'recommend', user: 'customer', item: 'sku', personalize: false })).not.toThrow();
    expect(() => checkTaskFlags({ task: 'regression', loss: 'tweedie', personalize: true })).not.toThrow();
    expect(() => checkTaskFlags({ positive: 'yes', dirichlet: 0.3 })).not.toThrow();
  });

  it('nodes personalize by default; not with --no-personalize, an attack comparison, or DP (it would spend past the asked epsilon)', () => {
    expect(personalizes({})).toBe(true);
    expect(personalizes({ personalize: true })).toBe(true);
    expect(personalizes({ personalize: false })).toBe(false);
    expect(personalizes({ attackers: { attack: 'scale', count: 1 } })).toBe(false);
    expect(personalizes({ epsilon: 8 })).toBe(false);
    expect(personalizes({ dpSgd: true })).toBe(false);
  });

  it('--help lists the new tasks and their flags', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'demo', '--help']);
    expect(stdout).toMatch(/choices:\s+"binary",\s+"regression",\s+"forecast",\s+"recommend"/);
    for (const flag of ['--date <column>', '--series <column>', '--horizon <n>', '--user <column>', '--item <column>', '--no-personalize']) expect(stdout).toContain(flag);
  }, 60_000);
});
