/**
 * Aggregation throughput: decode FMW1 frames and fold them into a WeightedMeanAccumulator, the
 * coordinator's hot path when a round's updates arrive (issue 13: FedAvg of 100 x 1M float32).
 *
 * One float32 update of `parameters` values (split into a few tensors, like a small dense model)
 * is encoded once. Each simulated update rewrites a sparse set of values in that frame in place
 * (so every update differs without allocating O(updates) buffers), then decode + add are timed.
 * Throughput counts the float32 payload aggregated: updates * parameters * 4 bytes / seconds.
 *
 * Two paths, each run `runs` times (the figure is the median run):
 *   'view'  decodeWeightsView (zero-copy views over the frame) + the accumulator's 'auto' kernel
 *           (WebAssembly SIMD at this size): what the coordinator's intake does;
 *   'view-scalar'  the same zero-copy decode + the plain typed-array loop (kernel 'scalar'): the
 *           WebAssembly SIMD kernel against the best JavaScript loop, everything else equal;
 *   'copy'  decodeWeights (a fresh array per tensor) + the scalar JavaScript kernel: the loops
 *           the coordinator used before (the finiteness check inside decodeWeights is the SIMD
 *           one in both, so this understates the old cost; RECORDED_BEFORE has the old code's).
 * The floor: numpy's mean over a stacked updates x parameters float32 array (memory bandwidth),
 * timed in the same sitting (python3 + numpy; skipped with a reason when missing).
 *
 *   node bin/run-ts.js bench/aggregation-bench.ts [--runs 5] [--updates 100] [--parameters 1000000]
 *       [--no-copy] [--before DIR]
 *
 * --before DIR adds the 'before' path: another checkout's decodeWeights + accumulator, runs
 * interleaved with the others (git archive c4a4f22 protocols | tar -x -C DIR for the pre-SIMD code).
 *
 * prints one JSON line per figure ({"figure": ..., ...}) and then the whole result as one line.
 * bench/run.ts calls fedavgFigures() for the same figures as one object.
 */
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, decodeWeightsView, encodeWeights } from '../protocols/weights-codec.ts';
import { WeightedMeanAccumulator } from '../protocols/aggregation/fedavg.ts';

/** Flower 1.4's own aggregate() on 100 x 1M float32, measured on this machine (issue 13). */
export const FLOWER_AGGREGATE_SECONDS = 1.47;
/**
 * The code before the zero-copy decode and the SIMD fold (commit c4a4f22: decodeWeights + the
 * scalar accumulator), 100 x 1M, median of 5, measured side by side (interleaved runs of the same
 * loop) with the 'view' path and numpy on the shared 2-core machine (load average ~49), 2026-12-02:
 *   before 4.24 s wall / 1.08 s CPU; after 0.64 s / 0.161 s CPU; numpy floor 0.197 s / 0.043 s CPU.
 * The quieter sitting measured the before at 0.72 s (decode 0.44 s), the floor at 0.017-0.024 s.
 */
export const RECORDED_BEFORE = { commit: 'c4a4f22', seconds: 4.24, cpuSeconds: 1.08, afterSeconds: 0.64, afterCpuSeconds: 0.161, numpyFloorSeconds: 0.197, numpyFloorCpuSeconds: 0.043 };

/** 'before': the code of another checkout (--before DIR), for a side-by-side before/after. */
export type AggregationPath = 'view' | 'view-scalar' | 'copy' | 'before';

export interface AggregationRun {
  /** Wall time of decode + add over all updates (frame mutation and RSS sampling excluded). */
  seconds: number;
  /** The decode share of `seconds`. */
  decodeSeconds: number;
  /** Building the accumulator (once per round: its sums preallocated and touched), not in `seconds`. */
  setupSeconds: number;
  /**
   * CPU time (user + system) of this process over the same spans: on a shared machine the wall
   * time also counts the time other processes held the CPU; this does not.
   */
  cpuSeconds: number;
  /** Typed-array (ArrayBuffer) bytes allocated per decode + add, mean over the updates (0: no per-update allocation). */
  arrayBufferBytesPerUpdate: number;
}

export interface AggregationBenchResult {
  updates: number;
  parameters: number;
  path: AggregationPath;
  /** 'simd' or 'scalar': the accumulator's kernel. */
  kernel: string;
  /** The median run's seconds, decode seconds and CPU seconds (decode + add, all updates). */
  seconds: number;
  decodeSeconds: number;
  cpuSeconds: number;
  /** The median run's accumulator construction, outside `seconds`. */
  setupSeconds: number;
  runs: AggregationRun[];
  /** updates * parameters * 4 bytes / seconds, in GB (1e9 bytes) per second. */
  gbPerSecond: number;
  /** Highest process RSS sampled during the runs, in MiB, and RSS before the first run. */
  peakRssMb: number;
  startRssMb: number;
}
/** Splits `parameters` into four tensors: ~60% / 30% / 9% kernels and a bias holding the rest. */
function benchSpecs(parameters: number): TensorSpec[] {
  const a = Math.floor(parameters * 0.6);
  const b = Math.floor(parameters * 0.3);
  const c = Math.floor(parameters * 0.09);
  const d = parameters - a - b - c;
  return [
    { name: 'dense_1/kernel', shape: [a] },
    { name: 'dense_2/kernel', shape: [b] },
    { name: 'dense_3/kernel', shape: [c] },
    { name: 'dense_3/bias', shape: [d] },
  ].filter((s) => s.shape[0] > 0);
}

function makeFrame(specs: TensorSpec[], parameters: number): { frame: Uint8Array; body: Float32Array } {
  const base: WeightSet = specs.map((s, k) => {
    const values = new Float32Array(s.shape[0]);
    for (let i = 0; i < values.length; i++) values[i] = Math.sin(i * 0.001 + k) * 0.05;
    return { name: s.name, shape: s.shape, values };
  });
  const frame = encodeWeights(base, 'float32');
  // The body is the frame's last parameters * 4 bytes; encodeWeights returns a fresh, 8-aligned buffer.
  const body = new Float32Array(frame.buffer, frame.byteOffset + frame.byteLength - parameters * 4, parameters);
  return { frame, body };
}

/** The decode and the accumulator a path times. */
interface FoldCode {
  decode(bytes: Uint8Array, options: { expected: TensorSpec[]; dtype: 'float32' }): WeightSet;
  accumulator(specs: TensorSpec[]): { add(update: WeightSet, weight: number): void; mean(): WeightSet; count: number; kernel?: string };
}

function foldCode(path: 'view' | 'view-scalar' | 'copy'): FoldCode {
  if (path === 'view') return { decode: decodeWeightsView, accumulator: (specs) => new WeightedMeanAccumulator(specs, { kernel: 'auto' }) };
  if (path === 'view-scalar') return { decode: decodeWeightsView, accumulator: (specs) => new WeightedMeanAccumulator(specs, { kernel: 'scalar' }) };
  return { decode: decodeWeights, accumulator: (specs) => new WeightedMeanAccumulator(specs, { kernel: 'scalar' }) };
}

/** The same two modules of another checkout, e.g. `git archive c4a4f22 protocols | tar -x -C DIR`. */
async function beforeCode(dir: string): Promise<FoldCode> {
  const codec = await import(pathToFileURL(join(dir, 'protocols/weights-codec.ts')).href);
  const fedavg = await import(pathToFileURL(join(dir, 'protocols/aggregation/fedavg.ts')).href);
  return { decode: codec.decodeWeights, accumulator: (specs) => new fedavg.WeightedMeanAccumulator(specs) };
}

async function oneRun(code: FoldCode, specs: TensorSpec[], updates: number, parameters: number, rss: { peak: number }): Promise<AggregationRun & { kernel: string }> {
  const { frame, body } = makeFrame(specs, parameters);
  const STRIDE = 1009; // rewrite ~0.1% of the values per update
  const s0 = performance.now();
  const acc = code.accumulator(specs);
  const setupSeconds = (performance.now() - s0) / 1000;
  const decode = code.decode;
  let seconds = 0;
  let decodeSeconds = 0;
  let cpuMicros = 0;
  let allocated = 0;
  for (let u = 0; u < updates; u++) {
    // Vary this update: shift a sparse, update-dependent subset of values (not timed).
    const delta = (u + 1) * 1e-4;
    for (let i = u % STRIDE; i < parameters; i += STRIDE) body[i] = Math.sin(i * 0.001) * 0.05 + delta;

    const a0 = process.memoryUsage().arrayBuffers;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const update = decode(frame, { expected: specs, dtype: 'float32' });
    const t1 = performance.now();
    acc.add(update, 100 + (u % 50)); // example counts
    const t2 = performance.now();
    const c = process.cpuUsage(c0);
    allocated += Math.max(0, process.memoryUsage().arrayBuffers - a0);
    cpuMicros += c.user + c.system;
    decodeSeconds += (t1 - t0) / 1000;
    seconds += (t2 - t0) / 1000;

    rss.peak = Math.max(rss.peak, process.memoryUsage.rss());
    if (u % 16 === 15) await new Promise((resolve) => setImmediate(resolve)); // let the event loop breathe
  }
  // Sanity check so a broken accumulator cannot produce a fast but meaningless figure.
  const mean = acc.mean();
  if (acc.count !== updates || mean.some((t) => t.values.some((x) => !Number.isFinite(x)))) {
    throw new Error('aggregation bench produced an invalid mean');
  }
  return { seconds, decodeSeconds, setupSeconds, cpuSeconds: cpuMicros / 1e6, arrayBufferBytesPerUpdate: allocated / updates, kernel: acc.kernel ?? 'scalar' };
}

/** Runs `runs` x `updates` updates through each path, the paths' runs interleaved (side by side). */
export async function benchAggregationPaths(opts: { updates: number; parameters: number; runs?: number; paths: AggregationPath[]; beforeDir?: string }): Promise<AggregationBenchResult[]> {
  const { updates, parameters } = opts;
  const runs = opts.runs ?? 5;
  if (!Number.isSafeInteger(updates) || updates < 1) throw new RangeError(`updates must be a positive integer, got ${updates}`);
  if (!Number.isSafeInteger(parameters) || parameters < 1) throw new RangeError(`parameters must be a positive integer, got ${parameters}`);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new RangeError(`runs must be a positive integer, got ${runs}`);
  const codes: FoldCode[] = [];
  for (const path of opts.paths) {
    if (path !== 'before') codes.push(foldCode(path));
    else if (opts.beforeDir) codes.push(await beforeCode(opts.beforeDir));
    else throw new RangeError("path 'before' needs beforeDir");
  }

  const specs = benchSpecs(parameters);
  const startRss = process.memoryUsage.rss();
  const rss = opts.paths.map(() => ({ peak: startRss }));
  const all: AggregationRun[][] = opts.paths.map(() => []);
  const kernels: string[] = [];
  for (let r = 0; r < runs; r++) {
    for (let p = 0; p < codes.length; p++) {
      const run = await oneRun(codes[p], specs, updates, parameters, rss[p]);
      kernels[p] = run.kernel;
      all[p].push({ seconds: run.seconds, decodeSeconds: run.decodeSeconds, setupSeconds: run.setupSeconds, cpuSeconds: run.cpuSeconds, arrayBufferBytesPerUpdate: run.arrayBufferBytesPerUpdate });
    }
  }
  const medianOf = (xs: AggregationRun[], key: keyof AggregationRun) => [...xs].sort((a, b) => a[key] - b[key])[Math.floor(xs.length / 2)];
  return opts.paths.map((path, p) => {
    const mid = medianOf(all[p], 'seconds');
    return {
      updates,
      parameters,
      path,
      kernel: kernels[p],
      seconds: mid.seconds,
      decodeSeconds: mid.decodeSeconds,
      cpuSeconds: medianOf(all[p], 'cpuSeconds').cpuSeconds,
      setupSeconds: medianOf(all[p], 'setupSeconds').setupSeconds,
      runs: all[p],
      gbPerSecond: (updates * parameters * 4) / mid.seconds / 1e9,
      peakRssMb: rss[p].peak / (1024 * 1024),
      startRssMb: startRss / (1024 * 1024),
    };
  });
}

export async function benchAggregation(opts: { updates: number; parameters: number; runs?: number; path?: 'view' | 'view-scalar' | 'copy' }): Promise<AggregationBenchResult> {
  const [result] = await benchAggregationPaths({ ...opts, paths: [opts.path ?? 'view'] });
  return result;
}

export interface NumpyFloor {
  /** Median of `runs` timings of numpy's mean over a stacked updates x parameters float32 array. */
  seconds: number | null;
  /** The median of the same runs' process CPU time. */
  cpuSeconds?: number;
  /** Why there is no figure (python3 or numpy missing). */
  skipped?: string;
}

/** The memory-bandwidth floor: numpy's mean(axis=0) over a stacked updates x parameters float32 array. */
export function numpyFloor(updates: number, parameters: number, runs = 5): NumpyFloor {
  const script = [
    'import sys, time, numpy as np',
    `a = np.random.default_rng(0).random((${updates}, ${parameters}), dtype=np.float32)`,
    'ts, cs = [], []',
    `for _ in range(${runs}):`,
    '    t, c = time.perf_counter(), time.process_time(); m = a.mean(axis=0); ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)',
    'print(sorted(ts)[len(ts) // 2], sorted(cs)[len(cs) // 2])',
  ].join('\n');
  const run = spawnSync(process.env.PYTHON ?? 'python3', ['-c', script], { encoding: 'utf8', timeout: 300_000 });
  if (run.error) return { seconds: null, skipped: `python3 not runnable (${run.error.message})` };
  if (run.status !== 0) return { seconds: null, skipped: `python3 with numpy failed: ${run.stderr.trim().split('\n').pop()}` };
  const [seconds, cpuSeconds] = run.stdout.trim().split(/\s+/).map(Number);
  return { seconds, cpuSeconds };
}

export interface FedavgFigures {
  updates: number;
  parameters: number;
  /** The coordinator's fold (zero-copy decode + 'auto' kernel), median run: wall and CPU seconds. */
  seconds: number;
  cpuSeconds: number;
  decodeSeconds: number;
  kernel: string;
  /** Process peak RSS during the runs (MiB) and before them: O(model) means peak - start ~ the 8 MB sums + one frame. */
  peakRssMb: number;
  startRssMb: number;
  arrayBufferBytesPerUpdate: number;
  /** The plain typed-array loop on the same zero-copy decode (kernel 'scalar'), for the kernel choice. */
  scalarKernel: { seconds: number; cpuSeconds: number };
  numpyFloor: NumpyFloor;
  /** seconds / numpy floor seconds (and CPU / CPU): the "within 3-4x of the bandwidth floor". */
  ratioToFloor: number | null;
  cpuRatioToFloor: number | null;
  /** seconds / Flower 1.4's aggregate() (1.47 s recorded): below 1 is faster; the goal is 0.075 s (~0.05). */
  flowerSeconds: number;
  ratioToFlower: number;
  goalSeconds: number;
  /** os.loadavg() at the start and the end: wall times on a loaded machine are inflated, CPU times less so. */
  loadAverage: { start: number[]; end: number[] };
}

/**
 * Every FedAvg figure of issue 13's table in one call (bench/run.ts): the fold of `updates` x
 * `parameters` float32 updates, the scalar kernel beside it, numpy's floor, the ratios.
 */
export async function fedavgFigures(opts: { updates?: number; parameters?: number; runs?: number } = {}): Promise<FedavgFigures> {
  const updates = opts.updates ?? 100;
  const parameters = opts.parameters ?? 1_000_000;
  const runs = opts.runs ?? 5;
  const start = loadavg();
  const [view, scalar] = await benchAggregationPaths({ updates, parameters, runs, paths: ['view', 'view-scalar'] });
  const floor = numpyFloor(updates, parameters, runs);
  return {
    updates,
    parameters,
    seconds: view.seconds,
    cpuSeconds: view.cpuSeconds,
    decodeSeconds: view.decodeSeconds,
    kernel: view.kernel,
    peakRssMb: view.peakRssMb,
    startRssMb: view.startRssMb,
    arrayBufferBytesPerUpdate: [...view.runs].sort((a, b) => a.arrayBufferBytesPerUpdate - b.arrayBufferBytesPerUpdate)[Math.floor(view.runs.length / 2)].arrayBufferBytesPerUpdate,
    scalarKernel: { seconds: scalar.seconds, cpuSeconds: scalar.cpuSeconds },
    numpyFloor: floor,
    ratioToFloor: floor.seconds ? view.seconds / floor.seconds : null,
    cpuRatioToFloor: floor.cpuSeconds ? view.cpuSeconds / floor.cpuSeconds : null,
    flowerSeconds: FLOWER_AGGREGATE_SECONDS,
    ratioToFlower: view.seconds / FLOWER_AGGREGATE_SECONDS,
    goalSeconds: 0.075,
    loadAverage: { start, end: loadavg() },
  };
}

/** The figures as machine-readable lines: one JSON object per line, each naming its figure. */
export function aggregationFigureLines(view: AggregationBenchResult, others: AggregationBenchResult[], floor: NumpyFloor): string[] {
  const lines: object[] = [
    { figure: 'fedavg_decode_fold_seconds', path: 'view', kernel: view.kernel, updates: view.updates, parameters: view.parameters, seconds: view.seconds, decodeSeconds: view.decodeSeconds, cpuSeconds: view.cpuSeconds, setupSeconds: view.setupSeconds, runs: view.runs.length, goalSeconds: 0.075 },
    { figure: 'fedavg_peak_rss_mb', path: 'view', peakRssMb: view.peakRssMb, startRssMb: view.startRssMb },
    { figure: 'fedavg_numpy_floor_seconds', seconds: floor.seconds, cpuSeconds: floor.cpuSeconds ?? null, ...(floor.skipped ? { skipped: floor.skipped } : {}) },
    { figure: 'fedavg_ratio_to_floor', ratio: floor.seconds ? view.seconds / floor.seconds : null, cpuRatio: floor.cpuSeconds ? view.cpuSeconds / floor.cpuSeconds : null },
    { figure: 'fedavg_speedup_vs_flower_aggregate', flowerSeconds: FLOWER_AGGREGATE_SECONDS, speedup: FLOWER_AGGREGATE_SECONDS / view.seconds },
  ];
  for (const o of others) {
    lines.push({ figure: 'fedavg_decode_fold_seconds', path: o.path, kernel: o.kernel, seconds: o.seconds, decodeSeconds: o.decodeSeconds, cpuSeconds: o.cpuSeconds, peakRssMb: o.peakRssMb, speedupOfView: o.seconds / view.seconds, cpuSpeedupOfView: o.cpuSeconds / view.cpuSeconds });
  }
  lines.push({ figure: 'fedavg_recorded_side_by_side', ...RECORDED_BEFORE, speedup: RECORDED_BEFORE.seconds / RECORDED_BEFORE.afterSeconds, cpuSpeedup: RECORDED_BEFORE.cpuSeconds / RECORDED_BEFORE.afterCpuSeconds });
  return lines.map((l) => JSON.stringify(l));
}

if (process.argv[1]?.endsWith('aggregation-bench.ts')) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, updates: { type: 'string', default: '100' }, parameters: { type: 'string', default: '1000000' }, 'no-copy': { type: 'boolean' }, before: { type: 'string' } } });
  const opts = { updates: Number(values.updates), parameters: Number(values.parameters), runs: Number(values.runs) };
  const paths: AggregationPath[] = ['view', 'view-scalar', ...(values['no-copy'] ? [] : (['copy'] as const)), ...(values.before ? (['before'] as const) : [])];
  const [view, ...others] = await benchAggregationPaths({ ...opts, paths, beforeDir: values.before });
  const floor = numpyFloor(opts.updates, opts.parameters, opts.runs);
  for (const line of aggregationFigureLines(view, others, floor)) console.log(line);
  console.log(JSON.stringify({ results: [view, ...others], numpyFloor: floor, loadAverage: loadavg() }));
}
