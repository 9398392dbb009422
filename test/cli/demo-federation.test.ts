import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { prepareDemoOut, runFederation } from '../../cli/demo-federation.ts';
import type { StudyConfigInput } from '../../protocols/messages.ts';

const root = mkdtempSync(join(tmpdir(), 'fedmark-demo-federation-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Pids of live (not zombie) processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle) && !readFileSync(`/proc/${name}/stat`, 'utf8').includes(') Z ')) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/**
 * cli/demo-federation.ts's runFederation, shared by every kind's demo: whatever ends it, its child
 * processes are stopped (and awaited) before it returns or throws, and its process-wide listeners
 * (signals, exit, stdout EPIPE) are removed, so a process running several demos leaks nothing.
 */
describe('runFederation', () => {
  it('a study the coordinator refuses: the error names the answer, and the coordinator it started is gone when it throws', async () => {
    const outDir = prepareDemoOut(join(root, 'refused'));
    const listeners = () => ({ sigint: process.listenerCount('SIGINT'), sigterm: process.listenerCount('SIGTERM'), exit: process.listenerCount('exit'), stdoutError: process.stdout.listenerCount('error') });
    const before = listeners();
    const said: string[] = [];
    // Zero rounds: refused by the study schema at POST /v1/studies, after the coordinator started.
    const studyConfig = { name: 'refused', rounds: 0 } as unknown as StudyConfigInput;
    const run = runFederation({ studyConfig, outDir, nodes: [], say: (line) => said.push(line), roundMetrics: () => ({ text: '' }) });
    // On a machine too loaded for the coordinator to start within its 180 s, runFederation throws
    // that instead: its children must be gone all the same.
    const error = await run.then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/coordinator answered 400|timed out waiting for coordinator to start/);
    if (/answered 400/.test(error!.message)) expect(said.join('\n')).toMatch(/coordinator http:\/\/127\.0\.0\.1:\d+/);
    expect(existsSync(join(outDir, 'logs', 'coordinator.log'))).toBe(true);
    // Stopped and awaited inside runFederation: nothing to wait for here.
    expect(processesMentioning(outDir)).toEqual([]);
    expect(listeners()).toEqual(before);
  }, 300_000);
});
