import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { NODE_INTERRUPT_BUDGET } from '../../cli/v8-tuning.ts';

const PROBE = fileURLToPath(new URL('../fixtures/baseline-probe.mjs', import.meta.url));
const INLINING_PROBE = fileURLToPath(new URL('../fixtures/inlining-probe.mjs', import.meta.url));
const TIERING_PROBE = fileURLToPath(new URL('../fixtures/tiering-probe.mjs', import.meta.url));

// Issue 13: `fedmark node` compiles its round code to baseline on first call (cli/v8-tuning.ts),
// since code that runs once a round stays interpreted for many rounds otherwise.
describe('compileRoundCodeEagerly', () => {
  it('makes a function baseline code at its first call, which V8 does not do by default', () => {
    // Without the caller's NODE_OPTIONS: --jitless or --no-sparkplug there would say nothing of the flag.
    const { NODE_OPTIONS: _, ...env } = process.env;
    const out = execFileSync(process.execPath, ['--allow-natives-syntax', PROBE], { encoding: 'utf8', timeout: 60_000, env });
    expect(JSON.parse(out)).toEqual({ sparkplugEnabled: true, before: false, after: true });
  });
});

// Issue 13: `fedmark coordinator` optimizes without inlining (cli/v8-tuning.ts): compile time on
// two cores cost more than inlining saved in its warm, polymorphic per-request code.
describe('optimizeCoordinatorCodeWithoutInlining', () => {
  it('stops TurboFan inlining from then on, which V8 does by default', () => {
    const { NODE_OPTIONS: _, ...env } = process.env;
    const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--trace-turbo-inlining', INLINING_PROBE], { encoding: 'utf8', timeout: 60_000, env });
    const [before, after] = out.split('--- after\n');
    expect(before).toMatch(/Inlining .* into /);
    expect(after).not.toMatch(/Inlining/);
  });
});


// Issue 13: `fedmark node` leaves to TurboFan only what is hot within a round (cli/v8-tuning.ts):
// V8 took ten node processes' warm per-round code one function at a time, every round.
describe('optimizeOnlyHotNodeCode', () => {
  it('makes a function run four times as many calls before TurboFan takes it', () => {
    const { NODE_OPTIONS: _, ...env } = process.env;
    // Synchronous optimization: a function marked for TurboFan is optimized at its next call.
    const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--no-concurrent-recompilation', TIERING_PROBE], { encoding: 'utf8', timeout: 60_000, env });
    const { before, after, flags } = JSON.parse(out) as { before: number | null; after: number | null; flags: string[] };
    expect(flags).toEqual([`--interrupt-budget=${NODE_INTERRUPT_BUDGET}`]);
    expect(before).toBeGreaterThan(10); // on Node 20: 165 calls at V8's budget ...
    expect(after).toBeGreaterThanOrEqual(3 * before!); // ... and 655 after (the budget x4)
    expect(after).toBeLessThanOrEqual(5 * before!); // still optimized: hot code keeps TurboFan
  });
});
