import { Command, CommanderError } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { registerPrivacyCommands } from '../../cli/privacy-command.ts';
import { calibrateSigma, computeEpsilon } from '../../protocols/privacy/index.ts';

let stdout: MockInstance<typeof process.stdout.write>;
let written: string[];
let errors: string[];

beforeEach(() => {
  written = [];
  errors = [];
  stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
});

afterEach(() => {
  stdout.mockRestore();
});

/** Runs `fedmark <args>` in-process; resolves with the CommanderError if the command failed. */
async function run(args: string[]): Promise<CommanderError | undefined> {
  const program = new Command('fedmark');
  // Settings inherited by the subcommands registered below: throw instead of process.exit, and
  // capture commander's error output.
  program.exitOverride();
  program.configureOutput({ writeErr: (text) => errors.push(text), writeOut: (text) => written.push(text) });
  registerPrivacyCommands(program);
  try {
    await program.parseAsync(args, { from: 'user' });
    return undefined;
  } catch (error) {
    if (error instanceof CommanderError) return error;
    throw error;
  }
}

/** The same --json query with the dp_accounting-0.6.0 series and with the default (exact) one. */
async function runBothSeries(args: string[]) {
  await run([...args, '--rdp-series', 'dp_accounting-0.6.0']);
  const compat = JSON.parse(written.join(''));
  written.length = 0;
  await run(args);
  const exact = JSON.parse(written.join(''));
  return { compat, exact };
}

describe('fedmark privacy epsilon', () => {
  it('--json prints exactly one JSON line with epsilon, the inputs and the accountant', async () => {
    expect(await run(['privacy', 'epsilon', '--q', '0.01', '--sigma', '1.1', '--steps', '1000', '--delta', '1e-5', '--json'])).toBeUndefined();
    const out = written.join('');
    expect(out.endsWith('\n')).toBe(true);
    expect(out.trim().split('\n')).toHaveLength(1);
    const parsed = JSON.parse(out);
    expect(parsed).toEqual({
      epsilon: computeEpsilon({ q: 0.01, sigma: 1.1, steps: 1000, delta: 1e-5 }),
      accountant: 'rdp',
      requestedAccountant: 'rdp',
      rdpSeries: 'exact',
      q: 0.01,
      sigma: 1.1,
      steps: 1000,
      delta: 1e-5,
    });
  });

  it('--accountant pld uses the PLD accountant', async () => {
    await run(['privacy', 'epsilon', '--q', '0.01', '--sigma', '1', '--steps', '100', '--delta', '1e-5', '--accountant', 'pld', '--json']);
    const parsed = JSON.parse(written.join(''));
    expect(parsed.accountant).toBe('pld');
    expect(parsed.epsilon).toBe(computeEpsilon({ q: 0.01, sigma: 1, steps: 100, delta: 1e-5 }, 'pld'));
  });

  it('--rdp-series dp_accounting-0.6.0 reproduces the reference library where the exact series differs', async () => {
    // dp_accounting 0.6.0 gives 7.903850223578231 here (its absolute-value series); the exact series 7.8993.
    const { compat, exact } = await runBothSeries(['privacy', 'epsilon', '--q', '0.1', '--sigma', '1', '--steps', '100', '--delta', '1e-5', '--json']);
    expect(compat.rdpSeries).toBe('dp_accounting-0.6.0');
    expect(Math.abs(compat.epsilon - 7.903850223578231) / 7.903850223578231).toBeLessThan(1e-10);
    expect(exact.rdpSeries).toBe('exact');
    expect(exact.epsilon).toBeCloseTo(7.89926, 4);
    expect(exact.epsilon).toBeLessThan(compat.epsilon);
  });

  it('an unbounded epsilon is JSON null with unbounded: true (JSON has no Infinity), and says so in text', async () => {
    // 1 / (2 sigma^2) overflows: no finite epsilon.
    await run(['privacy', 'epsilon', '--q', '0.5', '--sigma', '1e-200', '--steps', '10', '--delta', '1e-5', '--json']);
    const parsed = JSON.parse(written.join(''));
    expect(parsed.epsilon).toBeNull();
    expect(parsed.unbounded).toBe(true);
    expect(written.join('')).not.toContain('Infinity');
    written.length = 0;
    await run(['privacy', 'epsilon', '--q', '1', '--sigma', '1e-200', '--steps', '10', '--delta', '1e-5']);
    expect(written.join('')).toMatch(/^epsilon = unbounded/);
    written.length = 0;
    // A finite epsilon carries no flag.
    await run(['privacy', 'epsilon', '--q', '1', '--sigma', '1', '--steps', '1', '--delta', '1e-5', '--json']);
    expect(JSON.parse(written.join('')).unbounded).toBeUndefined();
  });

  it('--accountant pld names the accountant that answered: RDP, with a note, where its bound is smaller', async () => {
    // At delta = 1e-5 the PLD bound is the smaller: it answers, no note.
    await run(['privacy', 'epsilon', '--q', '0.01', '--sigma', '1', '--steps', '100', '--delta', '1e-5', '--accountant', 'pld', '--json']);
    const pld = JSON.parse(written.join(''));
    expect(pld).toMatchObject({ accountant: 'pld', requestedAccountant: 'pld' });
    expect(pld.note).toBeUndefined();
    written.length = 0;
    // One step of sigma = 1e-100: the PLD grid cannot cover the loss range and it certifies nothing
    // finite, RDP still gives a (huge) bound.
    await run(['privacy', 'epsilon', '--q', '0.5', '--sigma', '1e-100', '--steps', '10', '--delta', '1e-5', '--accountant', 'pld', '--json']);
    const fallback = JSON.parse(written.join(''));
    expect(fallback).toMatchObject({ accountant: 'rdp', requestedAccountant: 'pld' });
    expect(fallback.epsilon).toBe(computeEpsilon({ q: 0.5, sigma: 1e-100, steps: 10, delta: 1e-5 }, 'rdp'));
    expect(fallback.note).toMatch(/RDP/);
  });

  it('prints a readable line without --json', async () => {
    await run(['privacy', 'epsilon', '--q', '1', '--sigma', '1', '--steps', '1', '--delta', '1e-5']);
    expect(written.join('')).toMatch(/^epsilon = 4\.72851 \(rdp accountant, q=1, sigma=1, steps=1, delta=0\.00001\)\n$/);
  });

  it.each([
    [['--q', '1.5', '--sigma', '1', '--steps', '10', '--delta', '1e-5'], '--q'],
    [['--q', 'abc', '--sigma', '1', '--steps', '10', '--delta', '1e-5'], '--q'],
    [['--q', '0.1', '--sigma', '0', '--steps', '10', '--delta', '1e-5'], '--sigma'],
    [['--q', '0.1', '--sigma', '1', '--steps', '2.5', '--delta', '1e-5'], '--steps'],
    [['--q', '0.1', '--sigma', '1', '--steps', '10', '--delta', ''], '--delta'],
    [['--q', '0.1', '--sigma', '1', '--steps', '10'], '--delta'],
    [['--q', '0.1', '--sigma', '1', '--steps', '10', '--delta', '1e-5', '--accountant', 'moments'], '--accountant'],
    [['--q', '0.1', '--sigma', '1', '--steps', '10', '--delta', '1e-5', '--rdp-series', 'dp_accounting'], '--rdp-series'],
  ])('bad input %j: message naming %s on stderr, exit code 2, nothing on stdout', async (args, option) => {
    const error = await run(['privacy', 'epsilon', ...args]);
    expect(error).toBeInstanceOf(CommanderError);
    expect(error?.exitCode).toBe(2);
    const message = errors.join('');
    expect(message).toContain(option);
    expect(message).not.toMatch(/\n\s+at /); // no stack trace
    expect(written.join('')).toBe('');
  });
});

describe('fedmark privacy sigma', () => {
  it('--json prints the calibrated noise multiplier', async () => {
    expect(await run(['privacy', 'sigma', '--q', '0.01', '--steps', '1000', '--delta', '1e-5', '--epsilon', '1', '--json'])).toBeUndefined();
    const lines = written.join('').trim().split('\n');
    expect(lines).toHaveLength(1);
    const parsed = JSON.parse(lines[0]);
    const sigma = calibrateSigma({ q: 0.01, steps: 1000, delta: 1e-5, epsilon: 1 });
    expect(parsed).toMatchObject({ sigma, accountant: 'rdp', requestedAccountant: 'rdp', rdpSeries: 'exact', q: 0.01, steps: 1000, delta: 1e-5, epsilon: 1 });
    expect(parsed.achievedEpsilon).toBeLessThanOrEqual(1);
  });

  it('--rdp-series dp_accounting-0.6.0 calibrates with the library\'s (looser) series: a larger sigma', async () => {
    const { compat, exact } = await runBothSeries(['privacy', 'sigma', '--q', '0.1', '--steps', '100', '--delta', '1e-5', '--epsilon', '7.9', '--json']);
    expect(compat.rdpSeries).toBe('dp_accounting-0.6.0');
    expect(compat.sigma).toBe(calibrateSigma({ q: 0.1, steps: 100, delta: 1e-5, epsilon: 7.9, rdpSeries: 'dp_accounting-0.6.0' }));
    // sigma = 1 gives 7.8993 (exact) <= 7.9 < 7.9039 (dp_accounting): only the compat series needs more noise.
    expect(exact.sigma).toBeLessThan(1);
    expect(compat.sigma).toBeGreaterThan(1);
    expect(computeEpsilon({ q: 0.1, sigma: compat.sigma, steps: 100, delta: 1e-5 }, 'rdp', { rdpSeries: 'dp_accounting-0.6.0' })).toBeLessThanOrEqual(7.9);
  });

  it('prints a readable line without --json', async () => {
    await run(['privacy', 'sigma', '--q', '1', '--steps', '1', '--delta', '1e-5', '--epsilon', '4.728507067217623']);
    expect(written.join('')).toMatch(/^sigma = 1 \(noise multiplier for epsilon <= 4\.728507067217623 at delta=0\.00001; rdp accountant/);
  });

  it('rejects a non-positive target epsilon naming --epsilon', async () => {
    const error = await run(['privacy', 'sigma', '--q', '0.01', '--steps', '1000', '--delta', '1e-5', '--epsilon', '-1']);
    expect(error?.exitCode).toBe(2);
    expect(errors.join('')).toContain('--epsilon');
  });

  it('reports an unreachable target as a bad --epsilon', async () => {
    const error = await run(['privacy', 'sigma', '--q', '1', '--steps', '1000000', '--delta', '1e-5', '--epsilon', '0.001']);
    expect(error?.exitCode).toBe(2);
    expect(errors.join('')).toMatch(/--epsilon.*unreachable/);
  });
});
