import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { BIN } from '../helpers/processes.ts';

const run = promisify(execFile);

/**
 * `--help` is the first thing a partner types: each command must answer with exit code 0 and name
 * the options its README section promises (users' scripts rely on those names).
 */
const COMMANDS: Array<{ args: string[]; mustName: RegExp[] }> = [
  { args: [], mustName: [/demo/, /coordinator/, /node/, /privacy/, /audit/] },
  { args: ['demo'], mustName: [/--data/, /--target/, /--partition-by/, /--nodes/, /--dirichlet/, /--rounds/, /--model/, /--json/, /--epsilon/, /--delta/, /--dp-sgd/] },
  { args: ['coordinator'], mustName: [/--host/, /--port/, /--data-dir/, /--database-url/] },
  { args: ['node'], mustName: [/--coordinator/, /--token/, /--data/, /--spec/, /--state-dir/, /--max-epsilon/, /--jurisdiction/, /--withdraw/, /--rotate-key/] },
  { args: ['privacy', 'epsilon'], mustName: [/--q/, /--sigma/, /--steps/, /--delta/, /--accountant/, /--json/] },
  { args: ['privacy', 'sigma'], mustName: [/--q/, /--steps/, /--delta/, /--epsilon/, /--json/] },
  { args: ['audit', 'export'], mustName: [/--out/, /--coordinator/, /--token/] },
  { args: ['audit', 'verify'], mustName: [/<dir>/, /--fingerprint/] },
  { args: ['audit', 'report'], mustName: [/<export>/, /--study/, /--version/, /--format/, /--out/, /--fingerprint/, /--json/] },
  // Issue 12: every operator step is a command, each with the coordinator and token from flags or env.
  { args: ['study', 'init'], mustName: [/--data/, /--target/, /--model/, /--jurisdiction/, /--json/] },
  { args: ['study', 'create'], mustName: [/--config/, /--dry-run/, /--coordinator/, /FEDMARK_COORDINATOR/, /--token/, /FEDMARK_TOKEN/, /--json/] },
  { args: ['study', 'ls'], mustName: [/--coordinator/, /--token/, /--json/] },
  { args: ['study', 'status'], mustName: [/--study/, /--json/] },
  { args: ['study', 'watch'], mustName: [/--study/, /--json/] },
  { args: ['study', 'stop'], mustName: [/--study/, /--reason/, /--json/] },
  { args: ['token', 'issue'], mustName: [/--study/, /--node-name/, /--region/, /--jurisdiction/, /--json/] },
  { args: ['node', 'ls'], mustName: [/--study/, /--json/] },
  { args: ['spec', 'infer'], mustName: [/--target/, /--jurisdiction/, /--out/, /--json/] },
  { args: ['model', 'export'], mustName: [/--study/, /--version/, /--format/, /--out/] },
  { args: ['model', 'verify'], mustName: [/--model/, /--study/, /--fingerprint/] },
  { args: ['predict'], mustName: [/--model/, /--data/, /--out/] },
];

describe('fedmark --help', () => {
  for (const { args, mustName } of COMMANDS) {
    it(`fedmark ${args.join(' ')} --help names its options and exits 0`, async () => {
      const { stdout } = await run(process.execPath, [BIN, ...args, '--help']);
      expect(stdout).toMatch(new RegExp(`^Usage: fedmark${args.length ? ' ' + args.join(' ') : ''} `));
      for (const pattern of mustName) expect(stdout).toMatch(pattern);
    });
  }

  it('an unknown command is refused with a non-zero exit code and says so', async () => {
    const err = (await run(process.execPath, [BIN, 'frobnicate']).then(
      () => ({ code: 0, stderr: '' }),
      (e: unknown) => e as { code: number; stderr: string },
    ));
    expect(err.code).not.toBe(0);
    expect(String(err.stderr)).toMatch(/unknown command 'frobnicate'/);
  });
});
