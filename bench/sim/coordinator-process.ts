import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { coordinatorMemoryEnv } from '../../cli/process-resources.ts';

/**
 * A real `fedmark coordinator` child process for the scale benchmark (bench/scale-bench.ts), on
 * PGlite (a folder) or on a fresh PostgreSQL database, and a sampler of its memory and CPU read
 * from /proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/stat (utime + stime).
 */

const BIN = fileURLToPath(new URL('../../bin/fedmark.js', import.meta.url));
export const SIM_ADMIN_TOKEN = 'scale-bench-admin-token-0123456789';
const POSTGRES_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface CoordinatorChild {
  url: string;
  pid: number;
  child: ChildProcess;
  database: 'pglite' | 'postgres';
  /** Admin API call (JSON in, JSON out); throws with the coordinator's answer on a non-2xx. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  stop(): Promise<void>;
}

/** A fresh PostgreSQL database on the local server (dropped by the returned function). */
export async function freshPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `fedmark_scale_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/** Starts `fedmark coordinator --port 0` under `dir` (keys, PGlite folder, log) and waits until it listens. */
export async function startCoordinator(dir: string, options: { postgres?: boolean; env?: Record<string, string> } = {}): Promise<CoordinatorChild> {
  const database = options.postgres ? await freshPostgresDatabase() : undefined;
  const env = {
    ...process.env,
    FEDMARK_ADMIN_TOKEN: SIM_ADMIN_TOKEN,
    FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'),
    FEDMARK_KEY_PASSPHRASE: 'scale-bench-coordinator-passphrase',
    FEDMARK_LOG_LEVEL: 'info',
    DATABASE_URL: database?.url ?? '',
    // As the demo starts its coordinator (malloc arenas, V8 semi-spaces): without it the bench
    // measured an allocator's hoarding, not the coordinator (issue 13: RSS rose 408 -> 447 MB over 5 rounds).
    ...coordinatorMemoryEnv(),
    ...options.env,
  };
  const child = spawn(process.execPath, [BIN, 'coordinator', '--port', '0', '--data-dir', join(dir, 'coordinator-db')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // A bench process that dies or is killed (a test runner's timeout) takes its coordinator with it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  // The log is drained to a file: a full pipe would stall the coordinator.
  const log = createWriteStream(join(dir, 'coordinator.log'));
  child.stderr!.pipe(log);
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coordinator did not listen within 600 s (log: ${join(dir, 'coordinator.log')})`)), 600_000);
    child.once('exit', (code) => reject(new Error(`coordinator exited (${code}) before listening (log: ${join(dir, 'coordinator.log')})`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      log.write(line + '\n');
      if (!line.includes('coordinator listening')) return;
      clearTimeout(timer);
      resolve(String((JSON.parse(line) as { url: string }).url));
    });
  });
  let url: string;
  try {
    url = await listening;
  } catch (err) {
    // Never leave a coordinator behind: one that did not start in time is stopped here.
    child.kill('SIGKILL');
    log.end();
    await database?.drop().catch(() => {});
    throw err;
  }
  const exited = new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
  return {
    url,
    pid: child.pid!,
    child,
    database: database ? 'postgres' : 'pglite',
    async api<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await fetch(new URL(path, url), { method, headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return (text ? JSON.parse(text) : undefined) as T;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      log.end();
      await database?.drop();
    },
  };
}

export interface ProcSample {
  /** ms since the epoch. */
  t: number;
  rssMb: number;
  hwmMb: number;
  /** utime + stime of the process, seconds. */
  cpuSeconds: number;
}

const CLOCK_TICKS = 100; // sysconf(_SC_CLK_TCK) on Linux

/** One reading of /proc/<pid>: undefined once the process is gone. */
export function readProc(pid: number): ProcSample | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat(5))
    // A process that has exited but not been reaped (a zombie) has no memory fields.
    if (!Number.isFinite(kb('VmRSS'))) return undefined;
    return { t: Date.now(), rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024, cpuSeconds: ticks / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** Samples a process every `everyMs` until stopped. */
export function sampleProcess(pid: number, everyMs = 100): { samples: ProcSample[]; stop(): ProcSample[] } {
  const samples: ProcSample[] = [];
  const take = () => {
    const s = readProc(pid);
    if (s) samples.push(s);
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    samples,
    stop() {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}
