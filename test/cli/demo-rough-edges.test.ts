import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../../cli/partition.ts';
import { BIN } from '../helpers/processes.ts';

const run = promisify(execFile);

/**
 * The demo's rough edges from issue 12, each through the CLI in its own process: inputs checked
 * before the previous output is touched, `--nodes N` alone, tiny partitions, progress while the
 * processes start, and children that die with the demo even when it is SIGKILLed.
 */
let root: string;
let csv: string;

/** 150 rows of a propensity table with no region column. */
function writeSmallCsv(path: string): void {
  const random = seededRandom(11);
  const lines = ['visits,cart_adds,channel,bought'];
  for (let i = 0; i < 150; i++) {
    const visits = Math.floor(random() * 20);
    const cart = Math.floor(random() * 5);
    const channel = ['email', 'search', 'social'][Math.floor(random() * 3)];
    const logit = -3 + 0.2 * visits + 0.6 * cart + (channel === 'email' ? 1 : 0);
    lines.push(`${visits},${cart},${channel},${random() < 1 / (1 + Math.exp(-logit)) ? 'yes' : 'no'}`);
  }
  writeFileSync(path, lines.join('\n') + '\n');
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedmark-demo-edges-'));
  csv = join(root, 'small.csv');
  writeSmallCsv(csv);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Pids of live processes whose command line mentions `needle` (the demo's output folder). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe('fedmark demo rough edges', () => {
  it('a typo in --target is refused before the previous run is deleted', async () => {
    const out = join(root, 'kept');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, '.fedmark-demo'), 'made by fedmark demo\n');
    writeFileSync(join(out, 'global-model.fmw'), 'the previous run');
    const err = await run(process.execPath, [BIN, 'demo', '--data', csv, '--target', 'boughtt', '--nodes', '3', '--out', out]).catch((e) => e);
    expect(err.code).not.toBe(0);
    expect(String(err.stderr)).toMatch(/boughtt/);
    expect(readFileSync(join(out, 'global-model.fmw'), 'utf8')).toBe('the previous run');
  });

  it('--nodes N alone splits at random, warns about tiny partitions, and reports the nodes as they get ready', async () => {
    const out = join(root, 'random');
    const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--data', csv, '--target', 'bought', '--nodes', '3', '--rounds', '1', '--model', 'logreg', '--no-local-baseline', '--out', out], { maxBuffer: 16 << 20 });
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(result.nodes).toBe(3);
    expect(result.partition).toMatch(/^at random into 3 nodes/);
    // 120 training rows dealt into 3: 40 each, under the 50-row threshold.
    const sizes = [1, 2, 3].map((k) => readFileSync(join(out, 'nodes', `node-0${k}`, 'data.csv'), 'utf8').trim().split('\n').length - 1);
    expect(sizes).toEqual([40, 40, 40]);
    expect(stderr).toMatch(/WARNING: node-01 holds only 40 training rows \(\d+ positive, \d+ negative\)/);
    expect(stderr).toMatch(/starting the coordinator/);
    expect(stderr).toMatch(/\d\/3 nodes enrolled, \d\/3 ready/);
  }, 600_000);

  it('its coordinator and nodes stop when the demo is killed outright (SIGKILL)', async () => {
    const out = join(root, 'killed');
    const demo = spawn(process.execPath, [BIN, 'demo', '--data', csv, '--target', 'bought', '--nodes', '2', '--rounds', '50', '--model', 'logreg', '--no-local-baseline', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    demo.stdout.on('data', (c) => (output += String(c)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the demo did not start its nodes: ${output}`)), 200_000);
      demo.stdout.on('data', () => {
        if (/node processes started/.test(output)) {
          clearTimeout(timer);
          resolve();
        }
      });
      demo.once('exit', (code) => reject(new Error(`the demo exited early (${code}): ${output}`)));
    });
    const children = processesMentioning(out);
    // The coordinator (its --data-dir) and both nodes (their --data) name the output folder.
    expect(children.length).toBeGreaterThanOrEqual(3);
    demo.kill('SIGKILL');
    const deadline = Date.now() + 60_000;
    let alive = children;
    while (alive.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      alive = alive.filter((pid) => existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '));
    }
    for (const pid of alive) process.kill(pid, 'SIGKILL');
    expect(alive).toEqual([]);
  }, 300_000);
});
