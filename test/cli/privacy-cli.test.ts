import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { BIN } from '../helpers/processes.ts';

const run = promisify(execFile);

/** The compliance officer's commands, as they type them. */
describe('fedmark privacy (CLI)', () => {
  it('epsilon --json prints one JSON object with an epsilon field', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '0.01', '--sigma', '1.1', '--steps', '1000', '--delta', '1e-5', '--json']);
    const out = JSON.parse(stdout.trim());
    expect(out.epsilon).toBeCloseTo(computeEpsilon({ q: 0.01, sigma: 1.1, steps: 1000, delta: 1e-5 }), 12);
    expect(out.accountant).toBe('rdp');
  });

  it('the PLD accountant gives the tighter epsilon', async () => {
    const rdp = JSON.parse((await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '0.01', '--sigma', '1.1', '--steps', '1000', '--delta', '1e-5', '--json'])).stdout);
    const pld = JSON.parse((await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '0.01', '--sigma', '1.1', '--steps', '1000', '--delta', '1e-5', '--accountant', 'pld', '--json'])).stdout);
    expect(pld.epsilon).toBeLessThan(rdp.epsilon);
  });

  it('sigma --json prints the noise multiplier that meets the target', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'privacy', 'sigma', '--q', '1', '--steps', '20', '--delta', '1e-5', '--epsilon', '3', '--json']);
    const out = JSON.parse(stdout.trim());
    expect(computeEpsilon({ q: 1, sigma: out.sigma, steps: 20, delta: 1e-5 })).toBeLessThanOrEqual(3);
  });

  it('a bad value is named and exits with 2', async () => {
    const err = await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '2', '--sigma', '1', '--steps', '10', '--delta', '1e-5']).catch((e) => e);
    expect(err.code).toBe(2);
    expect(String(err.stderr)).toMatch(/--q/);
  });
});
