import { mkdirSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import type { StudyConfigInput } from '../../protocols/messages.ts';
import { runFedmark, type RunningProcess } from './processes.ts';

/**
 * A federation of real processes for fault tests: a coordinator (restartable on the same port
 * and database) and node processes, each with its own CSV and state directory.
 */

export const CHURN = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));

/** A port nobody listens on now, so a coordinator comes back on the same one after a kill. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface CoordinatorProcess {
  url: string;
  port: number;
  admin: string;
  current: RunningProcess;
  /** Every process started (for cleanup). */
  all: RunningProcess[];
  /** Starts it and waits until it listens. */
  start(): Promise<RunningProcess>;
  /** SIGKILL, no goodbye. */
  kill(): Promise<void>;
  api(path: string, init?: RequestInit): Promise<Response>;
}

/** A coordinator process on `database` (a PGlite folder or a PostgreSQL URL), keys under `dir`. */
export async function coordinatorProcess(dir: string, database: { databaseUrl?: string; dataDir?: string }, env: Record<string, string> = {}): Promise<CoordinatorProcess> {
  const port = await freePort();
  const admin = 'fault-tests-admin-token-0123456789';
  const args = ['coordinator', '--port', String(port), '--data-dir', database.dataDir ?? join(dir, 'unused')];
  const fullEnv = { FEDMARK_ADMIN_TOKEN: admin, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'), DATABASE_URL: database.databaseUrl ?? '', ...env };
  const url = `http://127.0.0.1:${port}`;
  const c: CoordinatorProcess = {
    url,
    port,
    admin,
    current: undefined as unknown as RunningProcess,
    all: [],
    async start() {
      c.current = runFedmark(args, fullEnv);
      c.all.push(c.current);
      await c.current.waitForLog((l) => l.msg === 'coordinator listening', 180_000);
      return c.current;
    },
    async kill() {
      c.current.child.kill('SIGKILL');
      await c.current.exited;
    },
    async api(path, init = {}) {
      const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', ...init.headers } });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
      return res;
    },
  };
  return c;
}

/**
 * The churn data split by area code, one CSV per node, and a small logistic-regression study.
 * Its deadlines are long: rounds close when every node reported, and a node restarted on a busy
 * machine must not miss one (that would change the model a test compares).
 */
export function churnStudy(dir: string, overrides: Partial<StudyConfigInput> = {}): { config: StudyConfigInput; regions: Array<{ region: string; csv: string }> } {
  const table = readCsvTable({ path: CHURN });
  const spec = inferFeatureSpec(table, { target: 'churn', exclude: ['area_code', 'state'] });
  const column = table.header.indexOf('area_code');
  const regions = ['area_code_408', 'area_code_415', 'area_code_510'].map((region) => {
    const nodeDir = join(dir, region);
    mkdirSync(nodeDir, { recursive: true });
    const csv = join(nodeDir, 'data.csv');
    writeCsvTable(csv, table.header, table.rows.filter((r) => r[column] === region));
    return { region, csv };
  });
  // No validation split: a node's split is keyed by the study id (client-node/data.ts), so two
  // studies would train on different rows and a crash-free run could not be compared bit for bit.
  const config = { name: 'faults', features: spec, model: { kind: 'logreg' }, training: { localEpochs: 1, learningRate: 0.05, validationFraction: 0 }, rounds: 2, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 300, ...overrides } as StudyConfigInput;
  return { config, regions };
}

/** `fedmark node` against `url`, with its state (identity, credentials) under `dir/<region>/state`. */
export function nodeProcess(url: string, token: string, csv: string): RunningProcess {
  return runFedmark(['node', '--coordinator', url, '--token', token, '--data', csv, '--state-dir', join(csv, '..', 'state'), '--backend', 'wasm']);
}

/**
 * A TCP proxy between one node and the coordinator that passes everything through, except the
 * first request whose head matches `stallOn`: of that one it forwards the head and a few bytes
 * of the body, then holds the rest (an upload stalled mid-body). `stalled` resolves then. When
 * either side closes, the other is closed too (a killed node drops its upstream connection).
 */
export async function stallingProxy(target: { port: number }, stallOn: RegExp): Promise<{ url: string; stalled: Promise<void>; close(): Promise<void> }> {
  let markStalled!: () => void;
  const stalled = new Promise<void>((resolve) => (markStalled = resolve));
  let done = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let holding = false;
    client.on('data', (chunk: Buffer) => {
      if (holding) return;
      const text = chunk.toString('latin1');
      const match = done ? null : stallOn.exec(text);
      if (match) {
        const bodyStart = text.indexOf('\r\n\r\n', match.index);
        if (bodyStart >= 0) {
          done = true;
          holding = true;
          upstream.write(chunk.subarray(0, bodyStart + 4 + 16));
          markStalled();
          return;
        }
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', closeBoth).on('error', closeBoth);
    upstream.on('close', closeBoth).on('error', closeBoth);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    stalled,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
