import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const PROBE = fileURLToPath(new URL('../fixtures/baseline-probe.mjs', import.meta.url));

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
