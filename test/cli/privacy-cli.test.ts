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

  it('--rdp-series dp_accounting-0.6.0 reproduces the reference library; the JSON names the series', async () => {
    const args = [BIN, 'privacy', 'epsilon', '--q', '0.5', '--sigma', '1', '--steps', '10', '--delta', '1e-5', '--json'];
    const compat = JSON.parse((await run(process.execPath, [...args, '--rdp-series', 'dp_accounting-0.6.0'])).stdout);
    const exact = JSON.parse((await run(process.execPath, args)).stdout);
    // dp_accounting 0.6.0 gives 11.544491510085827 here (test/privacy/dp-accounting-0.6.0-grid.json).
    expect(compat.rdpSeries).toBe('dp_accounting-0.6.0');
    expect(Math.abs(compat.epsilon - 11.544491510085827) / 11.544491510085827).toBeLessThan(1e-10);
    expect(exact.rdpSeries).toBe('exact');
    expect(compat.epsilon).toBe(computeEpsilon({ q: 0.5, sigma: 1, steps: 10, delta: 1e-5 }, 'rdp', { rdpSeries: 'dp_accounting-0.6.0' }));
    expect(exact.epsilon).toBeLessThan(compat.epsilon);
  });

  it('an unbounded epsilon prints null and unbounded: true, not the string "Infinity"', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '1', '--sigma', '1e-200', '--steps', '1', '--delta', '1e-5', '--json']);
    const out = JSON.parse(stdout.trim());
    expect(out.epsilon).toBeNull();
    expect(out.unbounded).toBe(true);
  });

  it('a bad value is named and exits with 2', async () => {
    const err = await run(process.execPath, [BIN, 'privacy', 'epsilon', '--q', '2', '--sigma', '1', '--steps', '10', '--delta', '1e-5']).catch((e) => e);
    expect(err.code).toBe(2);
    expect(String(err.stderr)).toMatch(/--q/);
  });
});
