/**
 * The loops FedAvg spends its time in, in two implementations that give bit-identical results:
 *
 * - scalar JavaScript (any size, any host), one monomorphic copy per array type: a function that
 *   sees both Float32Array and Float64Array turns polymorphic in V8 and its loop slows down;
 * - WebAssembly SIMD (simd-module.ts) for float32 inputs: on 1M values the fold ~2x and the
 *   finiteness/magnitude check ~5x the best (unrolled) scalar loop, CPU time. Kept because it is
 *   measured faster (bench/aggregation-bench.ts, paths 'view' vs 'view-scalar', same zero-copy
 *   decode, 100 x 1M, 2026-12-02 18:11 UTC at load ~45): SIMD 0.16 s CPU / 0.59 s wall, plain
 *   typed-array loop 0.34 s CPU / 1.73 s wall; numpy's floor 0.062 s CPU / 0.21 s wall. WebAssembly
 *   can only read its own linear memory, so the float32 values are copied into it in 64 KB chunks
 *   (a native memcpy, cache-resident) and the float64 sums live in it for the accumulator's life.
 *
 * Pure module: uses only the WebAssembly global.
 */
import { simdModuleBytes } from './simd-module.ts';

/** Values per copied chunk: 64 KB of float32, one WebAssembly page, small enough to stay in L2. */
const CHUNK = 16384;
const PAGE = 65536;
/** Below this many values the call and copy overhead outweighs the SIMD gain. */
const SIMD_MIN_VALUES = 512;

interface SimdExports {
  maxbits32(ptr: number, n: number): number;
  axpy32(acc: number, src: number, n: number, w: number): void;
}

let module: WebAssembly.Module | null | undefined;

function simdModule(): WebAssembly.Module | null {
  if (module === undefined) {
    try {
      module = new WebAssembly.Module(simdModuleBytes() as BufferSource);
    } catch {
      module = null; // no WebAssembly SIMD on this host: the scalar loops serve
    }
  }
  return module;
}

/** True when WebAssembly SIMD is available (every Node >= 16.4 on x64 and arm64). */
export function simdAvailable(): boolean {
  return simdModule() !== null;
}

function instantiate(memory: WebAssembly.Memory): SimdExports {
  const instance = new WebAssembly.Instance(simdModule()!, { env: { mem: memory } });
  return instance.exports as unknown as SimdExports;
}

// ---- scalar kernels ------------------------------------------------------------------------

/*
 * Largest |x| in v; NaN if v holds a NaN, Infinity if it holds an infinity. Math.max propagates
 * NaN, so one branch-free pass validates and measures; two accumulators let the CPU overlap them.
 */
export function maxAbsF32Scalar(v: Float32Array): number {
  let m0 = 0;
  let m1 = 0;
  const n = v.length;
  const even = n - (n % 2);
  let i = 0;
  for (; i < even; i += 2) {
    m0 = Math.max(m0, Math.abs(v[i]));
    m1 = Math.max(m1, Math.abs(v[i + 1]));
  }
  if (i < n) m0 = Math.max(m0, Math.abs(v[i]));
  return Math.max(m0, m1);
}

export function maxAbsF64(v: Float64Array): number {
  let m0 = 0;
  let m1 = 0;
  const n = v.length;
  const even = n - (n % 2);
  let i = 0;
  for (; i < even; i += 2) {
    m0 = Math.max(m0, Math.abs(v[i]));
    m1 = Math.max(m1, Math.abs(v[i + 1]));
  }
  if (i < n) m0 = Math.max(m0, Math.abs(v[i]));
  return Math.max(m0, m1);
}

/** s[i] += w * v[i] (float32 values, float64 sums). */
export function axpyF32Scalar(s: Float64Array, v: Float32Array, w: number): void {
  const n = s.length;
  for (let i = 0; i < n; i++) s[i] += w * v[i];
}

export function axpyF64(s: Float64Array, v: Float64Array, w: number): void {
  const n = s.length;
  for (let i = 0; i < n; i++) s[i] += w * v[i];
}

/** Index of the first NaN or +-Infinity in v, or -1 (x - x is 0 for finite x, NaN otherwise). */
export function firstNonFinite(v: Float32Array | Float64Array): number {
  for (let i = 0; i < v.length; i++) if (v[i] - v[i] !== 0) return i;
  return -1;
}

// ---- SIMD kernels ----------------------------------------------------------------------------

const bitsView = new Int32Array(1);
const floatView = new Float32Array(bitsView.buffer);

/** The float value of |x| bits as maxbits32 returns them (NaN and Infinity patterns map to themselves). */
function absBitsToNumber(bits: number): number {
  bitsView[0] = bits;
  return floatView[0];
}

/** One shared page for maxAbsF32: every caller copies a chunk in and reads one integer out. */
let checker: { exports: SimdExports; f32: Float32Array } | undefined;

function sharedChecker(): { exports: SimdExports; f32: Float32Array } {
  if (checker === undefined) {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1 });
    checker = { exports: instantiate(memory), f32: new Float32Array(memory.buffer) };
  }
  return checker;
}

/**
 * Largest |x| in v with the scalar loop's exact semantics (NaN if any NaN, else Infinity if any
 * infinity), through maxbits32 when SIMD is available and v is large enough to pay for it.
 */
export function maxAbsF32(v: Float32Array): number {
  if (v.length < SIMD_MIN_VALUES || !simdAvailable()) return maxAbsF32Scalar(v);
  const { exports, f32 } = sharedChecker();
  let bits = 0;
  for (let i = 0; i < v.length; i += CHUNK) {
    const k = Math.min(CHUNK, v.length - i);
    f32.set(v.subarray(i, i + k), 0);
    const padded = Math.ceil(k / 16) * 16; // zeros never raise a maximum of magnitudes
    if (padded > k) f32.fill(0, k, padded);
    const b = exports.maxbits32(0, padded);
    if (b > bits) bits = b;
  }
  return absBitsToNumber(bits);
}

/*
 * max |x| of the float32 views decodeWeightsView returned, as its finiteness check computed it:
 * WeightedMeanAccumulator.add needs the same figure (finiteness and the overflow bound) and would
 * otherwise make a second pass over every update (measured: 0.018-0.03 s of CPU per 100 x 1M,
 * a quarter of the whole fold, 2026-12-02 under load ~30). Valid because a decoded view is a
 * window on the received frame, which nothing writes after it is decoded (intake keeps the body
 * as received; clipping and every strategy build new arrays). Keyed by the view object: a new
 * decode of the same bytes is checked again. Weak: the entry goes with the view.
 */
const checkedMaxAbs = new WeakMap<Float32Array, number>();

/** maxAbsF32 of a view about to be handed out read-only, remembered for maxAbsF32Known. */
export function maxAbsF32Remembered(v: Float32Array): number {
  const m = maxAbsF32(v);
  checkedMaxAbs.set(v, m);
  return m;
}

/** maxAbsF32(v), without the pass when the codec already measured this view. */
export function maxAbsF32Known(v: Float32Array): number {
  return checkedMaxAbs.get(v) ?? maxAbsF32(v);
}

/*
 * Memories of accumulators that were garbage-collected, by page count, kept for the next
 * accumulator of the same model. A fresh memory costs a page fault per 4 KB on first touch
 * (measured ~35 ms of CPU for 8 MB on this 2-core VM, ~80x the fold of one 1M update), and the
 * coordinator builds an accumulator for every round (today: for every update, resuming from the
 * database). A reused one costs a memset. The registry holds each memory until its owner dies.
 */
const idleMemories = new Map<number, WebAssembly.Memory[]>();
let idleBytes = 0;
/** Idle memories are resident: few and small, so a coordinator's RSS stays O(model). */
const MAX_IDLE_BYTES = 64 * 1024 * 1024;
const MAX_IDLE_PER_SIZE = 2;
const reclaim = new FinalizationRegistry<WebAssembly.Memory>((memory) => {
  const bytes = memory.buffer.byteLength;
  const pages = bytes / PAGE;
  const list = idleMemories.get(pages) ?? [];
  if (idleBytes + bytes > MAX_IDLE_BYTES || list.length >= MAX_IDLE_PER_SIZE) return; // let it go
  list.push(memory);
  idleMemories.set(pages, list);
  idleBytes += bytes;
});

/**
 * A zeroed, non-growable memory of `pages` pages: an idle one when there is one. Either way every
 * page is written here, so a fresh memory takes its page faults when the accumulator is built
 * (preallocated), not inside the first fold.
 */
function acquireMemory(pages: number): WebAssembly.Memory {
  let memory = idleMemories.get(pages)?.pop();
  if (memory === undefined) memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  else idleBytes -= memory.buffer.byteLength;
  new Uint8Array(memory.buffer).fill(0);
  return memory;
}

/** Idle memories and their bytes (for tests and the bench). */
export function idleMemoryStats(): { memories: number; bytes: number } {
  let memories = 0;
  for (const list of idleMemories.values()) memories += list.length;
  return { memories, bytes: idleBytes };
}

/**
 * Float64 running sums, one per tensor, held in a WebAssembly memory of their own so that
 * axpy32 can add float32 values into them in place. `sums[k]` are ordinary Float64Array views.
 */
export class SimdSums {
  readonly sums: Float64Array[];
  private readonly exports: SimdExports;
  private readonly offsets: number[];
  private readonly scratchOffset: number;
  private readonly scratch: Float32Array;

  private constructor(sizes: number[], memory: WebAssembly.Memory, offsets: number[], scratchOffset: number) {
    this.exports = instantiate(memory);
    this.offsets = offsets;
    this.scratchOffset = scratchOffset;
    this.sums = sizes.map((n, k) => new Float64Array(memory.buffer, offsets[k], n));
    this.scratch = new Float32Array(memory.buffer, scratchOffset, CHUNK);
  }

  /** Zeroed sums for tensors of these sizes, or null when SIMD is missing or they exceed 4 GiB. */
  static create(sizes: number[]): SimdSums | null {
    if (!simdAvailable()) return null;
    const offsets: number[] = [];
    let end = 0;
    for (const n of sizes) {
      offsets.push(end);
      end += Math.ceil((n * 8) / 16) * 16; // each tensor's sums start 16-byte aligned
    }
    const pages = Math.ceil((end + CHUNK * 4) / PAGE);
    if (pages > 65536) return null;
    let memory: WebAssembly.Memory;
    try {
      memory = acquireMemory(pages);
    } catch {
      return null; // address space refused: the scalar sums serve
    }
    const sums = new SimdSums(sizes, memory, offsets, end);
    // Nothing outside this object views the memory (the accumulator hands out copies), so once
    // it is collected the memory can serve another.
    reclaim.register(sums, memory);
    return sums;
  }

  /** sums[k][i] += w * v[i] for every i: the scalar loop's operations, in SIMD. */
  axpy32(k: number, v: Float32Array, w: number): void {
    const base = this.offsets[k];
    for (let i = 0; i < v.length; i += CHUNK) {
      const k8 = Math.min(CHUNK, v.length - i) & ~7;
      if (k8 === 0) break;
      this.scratch.set(v.subarray(i, i + k8), 0);
      this.exports.axpy32(base + i * 8, this.scratchOffset, k8, w);
    }
    // The last (< 8) values of the tensor, if any.
    const s = this.sums[k];
    for (let i = v.length - (v.length % 8); i < v.length; i++) s[i] += w * v[i];
  }
}
