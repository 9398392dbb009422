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
    expect(parsed).toMatchObject({ sigma, accountant: 'rdp', q: 0.01, steps: 1000, delta: 1e-5, epsilon: 1 });
    expect(parsed.achievedEpsilon).toBeLessThanOrEqual(1);
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
