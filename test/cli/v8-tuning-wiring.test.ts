import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

const calls = vi.hoisted(() => [] as string[]);
vi.mock('../../cli/v8-tuning.ts', () => ({
  compileRoundCodeEagerly: () => (calls.push('compileRoundCodeEagerly'), ['--always-sparkplug']),
  optimizeOnlyHotNodeCode: () => (calls.push('optimizeOnlyHotNodeCode'), ['--interrupt-budget=270336']),
  optimizeCoordinatorCodeWithoutInlining: () => (calls.push('optimizeCoordinatorCodeWithoutInlining'), ['--no-turbo-inlining']),
}));
vi.mock('../../client-node/node-runner.ts', () => ({
  runNode: async () => calls.push('runNode'),
  withdrawNode: async () => calls.push('withdrawNode'),
  rotateNodeKey: async () => calls.push('rotateNodeKey'),
}));

const { buildProgram } = await import('../../cli/main.ts');
const stateDir = mkdtempSync(join(tmpdir(), 'fedmark-v8-wiring-'));
const passphraseFile = join(stateDir, 'passphrase');
writeFileSync(passphraseFile, 'not used: the node runner is a stand-in\n');
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

// Issue 13: `fedmark node` sets the flag before anything of the node's own runs (cli/v8-tuning.ts);
// test/cli/v8-tuning.test.ts checks what the flag does.
describe('fedmark node compiles its round code eagerly and optimizes only its hot code', () => {
  it('calls compileRoundCodeEagerly and optimizeOnlyHotNodeCode before the node runner, and other commands do not', async () => {
    await buildProgram().parseAsync(['node', 'fedmark', 'node', '--coordinator', 'http://127.0.0.1:9', '--withdraw', '--state-dir', stateDir, '--key-passphrase-file', passphraseFile]);
    expect(calls).toEqual(['compileRoundCodeEagerly', 'optimizeOnlyHotNodeCode', 'withdrawNode']);
    calls.length = 0;
    await buildProgram().exitOverride().configureOutput({ writeOut: () => {} }).parseAsync(['node', 'fedmark', 'token', '--help']).catch(() => undefined);
    expect(calls).toEqual([]);
  });
});
