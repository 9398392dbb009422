import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freshPostgresDatabase, sampleProcess, type ProcSample } from './coordinator-process.ts';

/**
 * The scale goal's first half (issue 13): the real demo with one node per state,
 *   fedmark demo --partition-by state --nodes 51 --rounds 20 --json --no-local-baseline
 * (real node and coordinator processes), its wall time and round times as the demo reports
 * them, and its coordinator's memory, sampled from /proc while it runs (the demo's coordinator
 * is the child of the demo process whose command line says `coordinator`).
 */

const BIN = fileURLToPath(new URL('../../bin/fedmark.js', import.meta.url));

export interface DemoScaleResult {
  bench: 'scale-demo';
  /** The coordinator's database: the embedded PGlite (the demo's default) or a new PostgreSQL database (--postgres). */
  database: 'pglite' | 'postgres';
  nodes: number;
  rounds: number;
  /** Wall time of the whole command, start to exit (coordinator start, enrollment, rounds, model download, audit). */
  wallSeconds: number;
  /** The demo's own figures (its --json line): wall time, AUC, round times when it reports them. */
  demo: Record<string, unknown> | null;
  coordinator: { peakRssMb: number; maxSampledRssMb: number; lastRssMb: number; cpuSeconds: number } | null;
  loadAverage: { start: number[]; end: number[] };
  exitCode: number | null;
}

function childrenOf(pid: number): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push({ pid: Number(entry), cmdline: readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ') });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Waits for the demo's coordinator child to appear, then samples it until it exits. */
async function sampleCoordinatorOf(demoPid: number, done: Promise<unknown>): Promise<ProcSample[]> {
  let running = true;
  void done.then(() => (running = false));
  while (running) {
    const c = childrenOf(demoPid).find((p) => / coordinator( |$)/.test(p.cmdline));
    if (c) {
      const sampler = sampleProcess(c.pid, 100);
      await done;
      return sampler.stop();
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return [];
}

export async function benchDemo(options: { nodes: number; rounds: number; extraArgs?: string[]; postgres?: boolean }): Promise<DemoScaleResult> {
  const out = mkdtempSync(join(tmpdir(), 'fedmark-scale-demo-'));
  // --postgres: a new database on the local server (TEST_DATABASE_URL's), dropped afterwards.
  const database = options.postgres ? await freshPostgresDatabase() : undefined;
  const loadStart = loadavg();
  const started = performance.now();
  const args = [BIN, 'demo', '--partition-by', 'state', '--nodes', String(options.nodes), '--rounds', String(options.rounds), '--json', '--no-local-baseline', '--out', join(out, 'demo'), ...(database ? ['--database-url', database.url] : []), ...(options.extraArgs ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const samples = await sampleCoordinatorOf(child.pid!, exited);
    const exitCode = await exited;
    const wallSeconds = (performance.now() - started) / 1000;
    const lastLine = stdout.trim().split('\n').pop() ?? '';
    let demo: Record<string, unknown> | null = null;
    try {
      demo = JSON.parse(lastLine) as Record<string, unknown>;
    } catch {
      demo = null;
    }
    const coordinator = samples.length
      ? { peakRssMb: Math.max(...samples.map((s) => s.hwmMb)), maxSampledRssMb: Math.max(...samples.map((s) => s.rssMb)), lastRssMb: samples[samples.length - 1].rssMb, cpuSeconds: samples[samples.length - 1].cpuSeconds - samples[0].cpuSeconds }
      : null;
    return { bench: 'scale-demo', database: database ? 'postgres' : 'pglite', nodes: options.nodes, rounds: options.rounds, wallSeconds, demo, coordinator, loadAverage: { start: loadStart, end: loadavg() }, exitCode };
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
    await database?.drop();
    // A failed demo's logs are kept (logs/ of the demo folder): they say which process failed and why.
    if (child.exitCode === 0) rmSync(out, { recursive: true, force: true });
    else process.stderr.write(`scale demo: the demo failed; its output and logs are kept in ${out}\n`);
  }
}
