/**
 * `npm run bench -- --compare-flower` (issue 13, "How"): fedmark's churn demo and the same
 * federation on Flower, run back to back on this machine, with the ratios fedmark / Flower.
 *
 * Flower's side is bench/flower/flower_federation.py (a Flower 1.4 server with FedAvg and one
 * Flower client process per node over gRPC on loopback) on the split bench/export-demo-split.ts
 * exports: the demo's rows per node, test rows, encoded features and round-0 model. fedmark's side
 * is `node bin/fedmark.js demo --json --no-local-baseline --out TMP`.
 *
 * Optional: it needs Python 3 with PyTorch, NumPy, grpcio and protobuf, and Flower's source tree
 * (src/py/flwr; the tree of the v1.4.0 tag was measured). Where any is missing it SKIPS with one
 * line naming what is missing. Where they are found:
 *   FLOWER_SRC       Flower's source tree (default: ../flower-src next to this repository);
 *                    FLOWER_SRC/deps, when present, is put on PYTHONPATH too (Flower 1.4 imports
 *                    the tiny `iterators` package: its own source, v0.0.2, goes there).
 *   FEDMARK_PYTHON   the Python to use (default: the first of python3, /usr/bin/python3 that
 *                    imports torch, numpy, grpc and google.protobuf).
 *
 *   node bin/run-ts.js bench/compare-flower.ts [--flower-only] [--keep]     (one JSON line on stdout)
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportDemoSplit } from './export-demo-split.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const FLOWER_SCRIPT = fileURLToPath(new URL('./flower/flower_federation.py', import.meta.url));
const FEDMARK_BIN = join(REPO, 'bin', 'fedmark.js');
/** Where the Flower source tree is looked for when FLOWER_SRC is not set. */
export const DEFAULT_FLOWER_SRC = resolve(REPO, '..', 'flower-src');
/** The Python modules Flower's script needs (besides Flower itself). */
const PYTHON_MODULES = ['torch', 'numpy', 'grpc', 'google.protobuf'];

export interface CompareFlowerOptions {
  /** Flower's source tree (default FLOWER_SRC or DEFAULT_FLOWER_SRC). */
  flowerSrc?: string;
  /** The Python interpreter (default FEDMARK_PYTHON, else found among python3 and /usr/bin/python3). */
  python?: string;
  /** Run Flower only (no fedmark demo). */
  flowerOnly?: boolean;
  /** Keep the temporary split and demo output (their paths are in the result). */
  keep?: boolean;
  /** Where progress lines go (default stderr). */
  progress?: NodeJS.WritableStream;
}

export interface FlowerFigures {
  framework: 'flower';
  flowerVersion: string;
  /** Exact (Mann-Whitney) test AUC of Flower's final model. */
  testAuc: number;
  /** The same, as fedmark computes it (1000-bin score histogram): the ratio uses this one. */
  testAucBinned?: number;
  medianRoundSeconds: number | null;
  roundOneSeconds: number | null;
  roundSeconds: number[];
  wallSeconds: number;
  serverPeakRssMb: number;
  clientPeakRssMbMax: number;
  cpuSeconds: { server: number; clients: number };
}

export interface FedmarkFigures {
  testAuc: number | null;
  medianRoundSeconds: number | null;
  roundOneSeconds: number | null;
  wallSeconds: number;
  coordinatorPeakRssMb: number | null;
  nodePeakRssMb: number | null;
  coordinatorCpuSeconds: number | null;
  nodeCpuSeconds: number | null;
  /** Where the median came from: the demo's own field, or its rounds[].seconds (older demos). */
  medianFrom: 'medianRoundSeconds' | 'rounds';
}

export type CompareFlowerResult =
  | { skipped: true; reason: string }
  | {
      skipped: false;
      flower: FlowerFigures;
      fedmark: FedmarkFigures | null;
      /** Why fedmark's demo gave no figures (it failed: Flower's figures are kept). */
      fedmarkError?: string;
      /** fedmark / Flower: below 1 is fedmark faster or smaller (for the AUC, above 1 is better). */
      ratios: Record<'testAuc' | 'medianRound' | 'roundOne' | 'wall' | 'serverPeakRss' | 'nodePeakRss' | 'cpu', number | null> | null;
      /** 1-minute load averages when each side started and ended (the machine may be shared). */
      loadAverage: { flowerStart: number; flowerEnd: number; fedmarkStart: number | null; fedmarkEnd: number | null };
      exportSeconds: number;
      dirs: { split: string; demo: string | null } | null;
    };

/** What is missing for the Flower side, or null when everything is there (no Python run when the tree is missing). */
export function flowerPrerequisites(options: Pick<CompareFlowerOptions, 'flowerSrc' | 'python'> = {}): { missing: string } | { python: string; flowerSrc: string; pythonPath: string; flowerVersion: string } {
  const flowerSrc = resolve(options.flowerSrc ?? process.env.FLOWER_SRC ?? DEFAULT_FLOWER_SRC);
  const srcPy = join(flowerSrc, 'src', 'py');
  if (!existsSync(join(srcPy, 'flwr', '__init__.py'))) {
    return { missing: `no Flower source tree at ${flowerSrc} (expected src/py/flwr; set FLOWER_SRC to a checkout of adap/flower, v1.4.0 measured)` };
  }
  const explicit = options.python ?? process.env.FEDMARK_PYTHON;
  const candidates = explicit ? [explicit] : ['python3', '/usr/bin/python3'];
  const pythonPath = [srcPy, join(flowerSrc, 'deps'), process.env.PYTHONPATH].filter((p): p is string => !!p && existsSync(p)).join(delimiter);
  const reports: string[] = [];
  for (const python of candidates) {
    const missing = missingModules(python, [...PYTHON_MODULES, 'flwr.server', 'flwr.client'], pythonPath);
    if (missing.length === 0) return { python, flowerSrc, pythonPath, flowerVersion: flowerVersionOf(flowerSrc) };
    reports.push(`${python}: ${missing.join(', ')}`);
  }
  return { missing: `no Python with PyTorch, NumPy, grpcio, protobuf and Flower found (missing: ${reports.join('; ')})` };
}

/** The modules `python` cannot import (its error's last line for each), or ['python (not runnable)']. */
function missingModules(python: string, modules: string[], pythonPath: string): string[] {
  const probe = `import importlib, json\nmissing = []\nfor m in ${JSON.stringify(modules)}:\n    try:\n        importlib.import_module(m)\n    except Exception as e:\n        missing.append(m + " (" + type(e).__name__ + ": " + str(e).splitlines()[0][:120] + ")")\nprint(json.dumps(missing))`;
  try {
    const out = execFileSync(python, ['-c', probe], { env: { ...process.env, PYTHONPATH: pythonPath, FLWR_TELEMETRY_ENABLED: '0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    return JSON.parse(out.trim().split('\n').pop()!) as string[];
  } catch (err) {
    return [`${python} is not runnable (${(err as Error).message.split('\n')[0]})`];
  }
}

function flowerVersionOf(flowerSrc: string): string {
  const pyproject = join(flowerSrc, 'pyproject.toml');
  const match = existsSync(pyproject) ? /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(pyproject, 'utf8')) : null;
  return match ? match[1] : 'unknown';
}

/** Runs Flower's federation, then fedmark's demo, on the same split; skips (with the reason) when Flower cannot run. */
export async function compareFlower(options: CompareFlowerOptions = {}): Promise<CompareFlowerResult> {
  const progress = options.progress ?? process.stderr;
  const ready = flowerPrerequisites(options);
  if ('missing' in ready) return { skipped: true, reason: `compare-flower skipped: ${ready.missing}` };
  const root = mkdtempSync(join(tmpdir(), 'fedmark-compare-flower-'));
  const splitDir = join(root, 'split');
  const demoDir = join(root, 'demo');
  try {
    let t = performance.now();
    exportDemoSplit(splitDir);
    const exportSeconds = (performance.now() - t) / 1000;
    progress.write(`compare-flower: Flower ${ready.flowerVersion} (${ready.flowerSrc}) with ${ready.python}, split in ${splitDir}\n`);
    const flowerStart = loadavg()[0];
    const flower = await runFlower(ready, splitDir);
    const flowerEnd = loadavg()[0];
    progress.write(`compare-flower: Flower done in ${flower.wallSeconds.toFixed(1)} s (test AUC ${flower.testAuc.toFixed(4)}); fedmark's demo next\n`);
    let fedmark: FedmarkFigures | null = null;
    let fedmarkStart: number | null = null;
    let fedmarkEnd: number | null = null;
    let fedmarkError: string | undefined;
    if (!options.flowerOnly) {
      fedmarkStart = loadavg()[0];
      fedmark = await runFedmarkDemo(demoDir).catch((err: Error) => {
        fedmarkError = err.message;
        return null;
      });
      fedmarkEnd = loadavg()[0];
    }
    return {
      skipped: false,
      flower,
      fedmark,
      ...(fedmarkError ? { fedmarkError } : {}),
      ratios: fedmark ? ratiosOf(fedmark, flower) : null,
      loadAverage: { flowerStart, flowerEnd, fedmarkStart, fedmarkEnd },
      exportSeconds,
      dirs: options.keep ? { split: splitDir, demo: options.flowerOnly ? null : demoDir } : null,
    };
  } finally {
    if (!options.keep) rmSync(root, { recursive: true, force: true });
  }
}

/** fedmark / Flower for each figure (null where either side has none). */
export function ratiosOf(fedmark: FedmarkFigures, flower: FlowerFigures): NonNullable<Extract<CompareFlowerResult, { skipped: false }>['ratios']> {
  const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
  return {
    testAuc: ratio(fedmark.testAuc, flower.testAucBinned ?? flower.testAuc),
    medianRound: ratio(fedmark.medianRoundSeconds, flower.medianRoundSeconds),
    roundOne: ratio(fedmark.roundOneSeconds, flower.roundOneSeconds),
    wall: ratio(fedmark.wallSeconds, flower.wallSeconds),
    serverPeakRss: ratio(fedmark.coordinatorPeakRssMb, flower.serverPeakRssMb),
    nodePeakRss: ratio(fedmark.nodePeakRssMb, flower.clientPeakRssMbMax),
    // CPU seconds of every process (coordinator + nodes against server + clients): what the load average distorts least.
    cpu: ratio(fedmark.coordinatorCpuSeconds !== null && fedmark.nodeCpuSeconds !== null ? fedmark.coordinatorCpuSeconds + fedmark.nodeCpuSeconds : null, flower.cpuSeconds.server + flower.cpuSeconds.clients),
  };
}

async function runFlower(ready: { python: string; pythonPath: string; flowerVersion: string }, splitDir: string): Promise<FlowerFigures> {
  const args = [FLOWER_SCRIPT, '--split', splitDir, '--flower-version', ready.flowerVersion];
  const stdout = await runToEnd(ready.python, args, { ...process.env, PYTHONPATH: ready.pythonPath, FLWR_TELEMETRY_ENABLED: '0' }, `Flower's federation (its log: ${join(splitDir, 'flower.log')})`);
  return lastJson(stdout, 'Flower') as FlowerFigures;
}

/** fedmark's demo as a user runs it; its figures from the demo's JSON (fallbacks for demos without the speed fields). */
async function runFedmarkDemo(outDir: string): Promise<FedmarkFigures> {
  const stdout = await runToEnd(process.execPath, [FEDMARK_BIN, 'demo', '--json', '--no-local-baseline', '--out', outDir], process.env, "fedmark's demo");
  return fedmarkFigures(lastJson(stdout, 'fedmark demo') as Record<string, unknown>);
}

/** The comparison's figures from a demo's JSON; the median of rounds 2.. from rounds[].seconds when the demo has no medianRoundSeconds. */
export function fedmarkFigures(demo: Record<string, unknown>): FedmarkFigures {
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const rounds = Array.isArray(demo.rounds) ? (demo.rounds as Array<{ round: number; phase?: string; seconds: number }>) : [];
  const own = num(demo.medianRoundSeconds);
  const later = rounds.filter((r) => r.round >= 2 && (r.phase === undefined || r.phase === 'completed')).map((r) => r.seconds);
  return {
    testAuc: num(demo.globalTestAuc),
    medianRoundSeconds: own ?? median(later),
    roundOneSeconds: num(demo.roundOneSeconds),
    wallSeconds: num(demo.wallSeconds) ?? Number.NaN,
    coordinatorPeakRssMb: num(demo.coordinatorPeakRssMb),
    nodePeakRssMb: num(demo.nodePeakRssMb),
    coordinatorCpuSeconds: num(demo.coordinatorCpuSeconds),
    nodeCpuSeconds: num(demo.nodeCpuSeconds),
    medianFrom: own !== null ? 'medianRoundSeconds' : 'rounds',
  };
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs a process to its end; its stderr is passed through only when it fails (the error names `what`). */
function runToEnd(command: string, args: string[], env: NodeJS.ProcessEnv, what: string): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { env, cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-8000)));
    child.on('error', (err) => reject(new Error(`${what} could not start: ${err.message}`)));
    child.on('close', (code) => (code === 0 ? resolveRun(stdout) : reject(new Error(`${what} failed (exit ${code}):\n${stderr}`))));
  });
}

function lastJson(stdout: string, who: string): unknown {
  const line = stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${who} printed no JSON result`);
  return JSON.parse(line);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await compareFlower({ flowerOnly: process.argv.includes('--flower-only'), keep: process.argv.includes('--keep') });
  if (result.skipped) process.stderr.write(result.reason + '\n');
  process.stdout.write(JSON.stringify(result) + '\n');
}
