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
 *   'copy'  decodeWeights (a fresh array per tensor) + the scalar JavaScript kernel: the loops
 *           the coordinator used before (the finiteness check inside decodeWeights is the SIMD
 *           one in both, so this understates the old cost; RECORDED_BEFORE has the old code's).
 * The floor: numpy's mean over a stacked updates x parameters float32 array (memory bandwidth),
 * timed in the same sitting (python3 + numpy; skipped with a reason when missing).
 *
 *   node bin/run-ts.js bench/aggregation-bench.ts [--runs 5] [--updates 100] [--parameters 1000000]
 *
 * prints one JSON line per figure ({"figure": ..., ...}) and then the whole result as one line.
 */
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, decodeWeightsView, encodeWeights } from '../protocols/weights-codec.ts';
import { WeightedMeanAccumulator } from '../protocols/aggregation/fedavg.ts';

/** Flower 1.4's own aggregate() on 100 x 1M float32, measured on this machine (issue 13). */
export const FLOWER_AGGREGATE_SECONDS = 1.47;
/**
 * The code before the zero-copy decode and the SIMD fold (commit c4a4f22), 100 x 1M, median of 5,
 * measured side by side with this file's 'view' path and numpy on the shared 2-core machine.
 */
export const RECORDED_BEFORE = { commit: 'c4a4f22', seconds: NaN, decodeSeconds: NaN, numpyFloorSeconds: NaN };

export type AggregationPath = 'view' | 'copy';

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

async function oneRun(path: AggregationPath, specs: TensorSpec[], updates: number, parameters: number, rss: { peak: number }): Promise<AggregationRun & { kernel: string }> {
  const { frame, body } = makeFrame(specs, parameters);
  const STRIDE = 1009; // rewrite ~0.1% of the values per update
  const s0 = performance.now();
  const acc = new WeightedMeanAccumulator(specs, { kernel: path === 'view' ? 'auto' : 'scalar' });
  const setupSeconds = (performance.now() - s0) / 1000;
  const decode = path === 'view' ? decodeWeightsView : decodeWeights;
  let seconds = 0;
  let decodeSeconds = 0;
  let cpuMicros = 0;
  for (let u = 0; u < updates; u++) {
    // Vary this update: shift a sparse, update-dependent subset of values (not timed).
    const delta = (u + 1) * 1e-4;
    for (let i = u % STRIDE; i < parameters; i += STRIDE) body[i] = Math.sin(i * 0.001) * 0.05 + delta;

    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const update = decode(frame, { expected: specs, dtype: 'float32' });
    const t1 = performance.now();
    acc.add(update, 100 + (u % 50)); // example counts
    const t2 = performance.now();
    const c = process.cpuUsage(c0);
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
  return { seconds, decodeSeconds, setupSeconds, cpuSeconds: cpuMicros / 1e6, kernel: acc.kernel };
}

export async function benchAggregation(opts: { updates: number; parameters: number; runs?: number; path?: AggregationPath }): Promise<AggregationBenchResult> {
  const { updates, parameters } = opts;
  const runs = opts.runs ?? 5;
  const path = opts.path ?? 'view';
  if (!Number.isSafeInteger(updates) || updates < 1) throw new RangeError(`updates must be a positive integer, got ${updates}`);
  if (!Number.isSafeInteger(parameters) || parameters < 1) throw new RangeError(`parameters must be a positive integer, got ${parameters}`);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new RangeError(`runs must be a positive integer, got ${runs}`);

  const specs = benchSpecs(parameters);
  const startRss = process.memoryUsage.rss();
  const rss = { peak: startRss };
  const all: AggregationRun[] = [];
  let kernel = '';
  for (let r = 0; r < runs; r++) {
    const run = await oneRun(path, specs, updates, parameters, rss);
    kernel = run.kernel;
    all.push({ seconds: run.seconds, decodeSeconds: run.decodeSeconds, setupSeconds: run.setupSeconds, cpuSeconds: run.cpuSeconds });
  }
  const mid = [...all].sort((a, b) => a.seconds - b.seconds)[Math.floor(all.length / 2)];
  return {
    updates,
    parameters,
    path,
    kernel,
    seconds: mid.seconds,
    decodeSeconds: mid.decodeSeconds,
    cpuSeconds: [...all].sort((a, b) => a.cpuSeconds - b.cpuSeconds)[Math.floor(all.length / 2)].cpuSeconds,
    setupSeconds: [...all].sort((a, b) => a.setupSeconds - b.setupSeconds)[Math.floor(all.length / 2)].setupSeconds,
    runs: all,
    gbPerSecond: (updates * parameters * 4) / mid.seconds / 1e9,
    peakRssMb: rss.peak / (1024 * 1024),
    startRssMb: startRss / (1024 * 1024),
  };
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

/** The figures as machine-readable lines: one JSON object per line, each naming its figure. */
export function aggregationFigureLines(view: AggregationBenchResult, copy: AggregationBenchResult | null, floor: NumpyFloor): string[] {
  const lines: object[] = [
    { figure: 'fedavg_decode_fold_seconds', path: 'view', kernel: view.kernel, updates: view.updates, parameters: view.parameters, seconds: view.seconds, decodeSeconds: view.decodeSeconds, cpuSeconds: view.cpuSeconds, setupSeconds: view.setupSeconds, runs: view.runs.length, goalSeconds: 0.075 },
    { figure: 'fedavg_peak_rss_mb', path: 'view', peakRssMb: view.peakRssMb, startRssMb: view.startRssMb },
    { figure: 'fedavg_numpy_floor_seconds', seconds: floor.seconds, cpuSeconds: floor.cpuSeconds ?? null, ...(floor.skipped ? { skipped: floor.skipped } : {}) },
    { figure: 'fedavg_ratio_to_floor', ratio: floor.seconds ? view.seconds / floor.seconds : null, cpuRatio: floor.cpuSeconds ? view.cpuSeconds / floor.cpuSeconds : null },
    { figure: 'fedavg_speedup_vs_flower_aggregate', flowerSeconds: FLOWER_AGGREGATE_SECONDS, speedup: FLOWER_AGGREGATE_SECONDS / view.seconds },
  ];
  if (copy) lines.push({ figure: 'fedavg_decode_fold_seconds', path: 'copy', kernel: copy.kernel, seconds: copy.seconds, decodeSeconds: copy.decodeSeconds, peakRssMb: copy.peakRssMb, speedupOfView: copy.seconds / view.seconds });
  if (Number.isFinite(RECORDED_BEFORE.seconds)) lines.push({ figure: 'fedavg_recorded_before', ...RECORDED_BEFORE, speedupOfView: RECORDED_BEFORE.seconds / view.seconds });
  return lines.map((l) => JSON.stringify(l));
}

if (process.argv[1]?.endsWith('aggregation-bench.ts')) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, updates: { type: 'string', default: '100' }, parameters: { type: 'string', default: '1000000' }, 'no-copy': { type: 'boolean' } } });
  const opts = { updates: Number(values.updates), parameters: Number(values.parameters), runs: Number(values.runs) };
  const view = await benchAggregation({ ...opts, path: 'view' });
  const copy = values['no-copy'] ? null : await benchAggregation({ ...opts, path: 'copy' });
  const floor = numpyFloor(opts.updates, opts.parameters, opts.runs);
  for (const line of aggregationFigureLines(view, copy, floor)) console.log(line);
  console.log(JSON.stringify({ view, copy, numpyFloor: floor }));
}
