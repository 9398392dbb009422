import { readFileSync, writeSync } from 'node:fs';

/**
 * What a `fedmark coordinator` or `fedmark node` process cost, reported by the process itself so
 * the demo can put real measurements in its JSON (issue 13's table: coordinator and node peak RSS).
 * Only with FEDMARK_REPORT_RESOURCES=1 (the demo sets it for its children): then every log line
 * carries `cpuMs` (the process's user + system CPU so far, for a start-up breakdown from the logs)
 * and the process's last stdout line, written as it exits, is
 * `{"msg":"process resources","peakRssMb":...,"cpuSeconds":...}`.
 */

export const RESOURCES_MESSAGE = 'process resources';
export const REPORT_RESOURCES_ENV = 'FEDMARK_REPORT_RESOURCES';

export interface ProcessResources {
  /** Peak resident set size in MB (VmHWM of /proc/self/status; getrusage's maxrss elsewhere). */
  peakRssMb: number;
  /** User + system CPU seconds over the process's life. */
  cpuSeconds: number;
}

export function reportingResources(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[REPORT_RESOURCES_ENV] === '1';
}

/** Peak RSS in MB: the kernel's high-water mark, not a sample (a spike between samples counts). */
export function peakRssMb(): number {
  try {
    const kb = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (kb) return Number(kb[1]) / 1024;
  } catch {
    // not Linux: fall through
  }
  return process.resourceUsage().maxRSS / 1024;
}

export function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** pino's `mixin` option: `cpuMs` on every line when reporting, nothing otherwise. */
export function resourceLogFields(): (() => Record<string, number>) | undefined {
  if (!reportingResources()) return undefined;
  return () => ({ cpuMs: Math.round(cpuSeconds() * 1000) });
}

/**
 * When reporting, writes the resources line as the process exits, however it exits (end of the
 * study, process.exit after SIGTERM). Synchronous: nothing asynchronous runs in an 'exit' handler.
 */
export function reportResourcesAtExit(): void {
  if (!reportingResources()) return;
  process.once('exit', () => {
    const line = { level: 30, time: Date.now(), pid: process.pid, msg: RESOURCES_MESSAGE, peakRssMb: round(peakRssMb()), cpuSeconds: round(cpuSeconds()) };
    try {
      writeSync(1, JSON.stringify(line) + '\n');
    } catch {
      // stdout already closed: the parent is gone and nobody reads it
    }
  });
}

/** The resources line of a child's log, or undefined for any other line. */
export function parseResourcesLine(line: Record<string, unknown>): ProcessResources | undefined {
  if (line.msg !== RESOURCES_MESSAGE || typeof line.peakRssMb !== 'number' || typeof line.cpuSeconds !== 'number') return undefined;
  return { peakRssMb: line.peakRssMb, cpuSeconds: line.cpuSeconds };
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/**
 * The environment a coordinator child starts with in the demo and the scale bench (issue 13,
 * coordinator peak RSS), each setting left to the caller's own environment when it has one.
 * - glibc's allocator kept freed 4-8 MB buffers (request bodies, query results) in per-thread
 *   arenas: two arenas and mmap for blocks over 256 KB hand them back (demo peak 293-306 ->
 *   253-263 MB, no CPU cost seen; 100 x 1M post-round RSS 418-491 -> 297-317 MB).
 * - V8's young generation grew to its default 16 MB semi-spaces (~34 MB resident) and stayed
 *   there; 8 MB semi-spaces hold it at ~17 MB. Demo at load 15-20 with the start-up collection of
 *   coordinator/main.ts: peak 236 MB with the default, 215/214/221 MB with 4/8/2 MB semi-spaces
 *   (one run each), coordinator CPU within the runs' noise (16.6-18.3 s).
 * All are read only at process start, hence set by whoever spawns the process; the README says
 * the same for a deployment.
 */
export function coordinatorMemoryEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const nodeOptions = env.NODE_OPTIONS ?? '';
  return {
    MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? '2',
    MALLOC_MMAP_THRESHOLD_: env.MALLOC_MMAP_THRESHOLD_ ?? '262144',
    NODE_OPTIONS: nodeOptions.includes('--max-semi-space-size') ? nodeOptions : `--max-semi-space-size=${COORDINATOR_SEMI_SPACE_MB} ${nodeOptions}`.trim(),
  };
}

export const COORDINATOR_SEMI_SPACE_MB = 8;
