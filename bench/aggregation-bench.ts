/**
 * Aggregation throughput: decode FMW1 frames and fold them into a WeightedMeanAccumulator, the
 * coordinator's hot path when a round's updates arrive.
 *
 * One float32 update of `parameters` values (split into a few tensors, like a small dense model)
 * is encoded once. Each simulated update rewrites a sparse set of values in that frame in place
 * (so every update differs without allocating O(updates) buffers), then decode + add are timed.
 * Throughput counts the float32 payload aggregated: updates * parameters * 4 bytes / seconds.
 *
 *   npx tsx bench/aggregation-bench.ts     # 100 updates x 1,000,000 parameters, prints JSON
 */
import { performance } from 'node:perf_hooks';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, encodeWeights } from '../protocols/weights-codec.ts';
import { WeightedMeanAccumulator } from '../protocols/aggregation/fedavg.ts';

export interface AggregationBenchResult {
  updates: number;
  parameters: number;
  /** Wall time of decode + add over all updates (frame mutation and RSS sampling excluded). */
  seconds: number;
  /** updates * parameters * 4 bytes / seconds, in GB (1e9 bytes) per second. */
  gbPerSecond: number;
  /** Highest process RSS sampled during the run, in MiB. */
  peakRssMb: number;
  /** The decode share of `seconds`. */
  decodeSeconds: number;
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

export async function benchAggregation(opts: { updates: number; parameters: number }): Promise<AggregationBenchResult> {
  const { updates, parameters } = opts;
  if (!Number.isSafeInteger(updates) || updates < 1) throw new RangeError(`updates must be a positive integer, got ${updates}`);
  if (!Number.isSafeInteger(parameters) || parameters < 1) throw new RangeError(`parameters must be a positive integer, got ${parameters}`);

  const specs = benchSpecs(parameters);
  const base: WeightSet = specs.map((s, k) => {
    const values = new Float32Array(s.shape[0]);
    for (let i = 0; i < values.length; i++) values[i] = Math.sin(i * 0.001 + k) * 0.05;
    return { name: s.name, shape: s.shape, values };
  });
  const frame = encodeWeights(base, 'float32');
  // The body is the frame's last parameters * 4 bytes; encodeWeights returns a fresh, 8-aligned buffer.
  const body = new Float32Array(frame.buffer, frame.byteOffset + frame.byteLength - parameters * 4, parameters);
  const STRIDE = 1009; // rewrite ~0.1% of the values per update

  const acc = new WeightedMeanAccumulator(specs);
  let peakRss = process.memoryUsage.rss();
  let seconds = 0;
  let decodeSeconds = 0;

  for (let u = 0; u < updates; u++) {
    // Vary this update: shift a sparse, update-dependent subset of values (not timed).
    const delta = (u + 1) * 1e-4;
    for (let i = u % STRIDE; i < parameters; i += STRIDE) body[i] = Math.sin(i * 0.001) * 0.05 + delta;

    const t0 = performance.now();
    const update = decodeWeights(frame, { expected: specs, dtype: 'float32' });
    const t1 = performance.now();
    acc.add(update, 100 + (u % 50)); // example counts
    const t2 = performance.now();
    decodeSeconds += (t1 - t0) / 1000;
    seconds += (t2 - t0) / 1000;

    const rss = process.memoryUsage.rss();
    if (rss > peakRss) peakRss = rss;
    if (u % 16 === 15) await new Promise((resolve) => setImmediate(resolve)); // let the event loop breathe
  }

  // Sanity check so a broken accumulator cannot produce a fast but meaningless figure.
  const mean = acc.mean();
  if (acc.count !== updates || mean.some((t) => t.values.some((x) => !Number.isFinite(x)))) {
    throw new Error('aggregation bench produced an invalid mean');
  }
  peakRss = Math.max(peakRss, process.memoryUsage.rss());

  return {
    updates,
    parameters,
    seconds,
    gbPerSecond: (updates * parameters * 4) / seconds / 1e9,
    peakRssMb: peakRss / (1024 * 1024),
    decodeSeconds,
  };
}

if (process.argv[1]?.endsWith('aggregation-bench.ts')) {
  const result = await benchAggregation({ updates: 100, parameters: 1_000_000 });
  console.log(JSON.stringify(result, null, 2));
}
