/**
 * FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
 * Decentralized Data"): the new global model is the mean of the client models weighted by each
 * client's example count, w = sum_k n_k w_k / sum_k n_k.
 *
 * The accumulator folds updates in as they arrive, so the coordinator holds one running weighted
 * sum (O(model size)) instead of every client's model (O(nodes x model size)). The sum is kept in
 * float64: adding hundreds of float32 updates in float32 would lose low-order bits on every add.
 * Rounding to float32 happens once, in mean().
 *
 * The state (sums, total weight, count) can be persisted between requests, e.g. in a database row,
 * with encodeAccumulatorState / decodeAccumulatorState.
 *
 * Pure module: depends only on ../tensors.ts and ../weights-codec.ts.
 */
import {
  describeSpecMismatch,
  specsOf,
  tensorSize,
  type TensorSpec,
  type WeightSet,
} from '../tensors.ts';
import { decodeWeightsView, encodeWeights } from '../weights-codec.ts';
import { axpyF32Scalar, axpyF64, firstNonFinite, maxAbsF32Known, maxAbsF64, SimdSums } from './kernels.ts';

export class AggregationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AggregationError';
  }
}

export interface AccumulatorState {
  specs: TensorSpec[];
  /** Weighted sums, one float64 tensor per spec, in spec order. */
  sums: WeightSet;
  totalWeight: number;
  count: number;
}

/**
 * Largest magnitude we let the running sums reach. Far beyond any real model, but well short of
 * float64 overflow, so a sum never silently turns into Infinity.
 */
const MAX_SUM_MAGNITUDE = 1e300;

function validateSpecs(specs: TensorSpec[]): TensorSpec[] {
  if (!Array.isArray(specs)) throw new AggregationError('specs must be an array');
  const seen = new Set<string>();
  return specs.map((s, i) => {
    if (typeof s?.name !== 'string' || s.name.length === 0) throw new AggregationError(`spec at index ${i}: name must be a non-empty string`);
    if (seen.has(s.name)) throw new AggregationError(`duplicate tensor name "${s.name}" in specs`);
    seen.add(s.name);
    if (!Array.isArray(s.shape)) throw new AggregationError(`tensor "${s.name}": shape must be an array`);
    try {
      tensorSize(s.shape);
    } catch (err) {
      throw new AggregationError(`tensor "${s.name}": ${(err as Error).message}`, { cause: err });
    }
    return { name: s.name, shape: [...s.shape] };
  });
}

/** Finds the tensors of `update` in spec order, or throws an AggregationError naming the tensor. */
function alignToSpecs(specs: TensorSpec[], update: WeightSet, what: string): (Float32Array | Float64Array)[] {
  if (!Array.isArray(update)) throw new AggregationError(`${what} must be an array of tensors`);
  for (let i = 0; i < update.length; i++) {
    const t = update[i];
    if (t === null || typeof t !== 'object' || typeof t.name !== 'string' || !Array.isArray(t.shape)) {
      throw new AggregationError(`${what}: tensor at index ${i} is not a {name, shape, values} object`);
    }
  }
  const mismatch = describeSpecMismatch(specs, update);
  if (mismatch !== null) throw new AggregationError(`${what} does not match the model: ${mismatch}`);
  const byName = new Map(update.map((t) => [t.name, t] as const));
  return specs.map((s) => {
    const t = byName.get(s.name)!;
    const v = t.values;
    if (!(v instanceof Float32Array || v instanceof Float64Array)) {
      throw new AggregationError(`${what}: tensor "${s.name}": values must be a Float32Array or Float64Array`);
    }
    const size = tensorSize(s.shape);
    if (v.length !== size) throw new AggregationError(`${what}: tensor "${s.name}": shape [${s.shape.join(',')}] needs ${size} values, got ${v.length}`);
    return v;
  });
}

function maxAbs(v: Float32Array | Float64Array): number {
  return v instanceof Float32Array ? maxAbsF32Known(v) : maxAbsF64(v);
}

/**
 * Which loops fold float32 updates in: 'simd' (WebAssembly SIMD, sums in a WebAssembly memory of
 * the accumulator's own), 'scalar' (JavaScript), or 'auto' (the default): SIMD for models of at
 * least SIMD_MIN_PARAMETERS values when the host has it. Both give bit-identical sums.
 *
 * fromState's 'auto' starts scalar and moves the sums into WebAssembly memory at the second
 * update folded into it: the coordinator resumes a round's accumulator to fold ONE update and
 * drops it, and a second memory's page faults (one per 4 KB on first touch) would cost more than
 * SIMD saves on one update. A new accumulator is the streaming case: its memory is touched once,
 * when it is built (preallocated), and every update folds with SIMD.
 */
export type FoldKernel = 'auto' | 'simd' | 'scalar';

export interface AccumulatorOptions {
  kernel?: FoldKernel;
}

/**
 * Below this, scalar loops are as fast, and a small model should not cost a WebAssembly memory
 * (each one reserves guard pages of address space for the accumulator's life).
 */
export const SIMD_MIN_PARAMETERS = 65536;

/** A validated state: specs checked, the sums in spec order (the caller's arrays, not copies). */
interface CheckedState {
  specs: TensorSpec[];
  values: (Float32Array | Float64Array)[];
  totalWeight: number;
  count: number;
  /** max |sum|, the accumulator's starting magnitude bound. */
  bound: number;
}

/** Every check of fromState, without building an accumulator (decode and encode validate with it). */
function checkState(state: AccumulatorState): CheckedState {
  if (state === null || typeof state !== 'object') throw new AggregationError('accumulator state must be an object');
  const { count, totalWeight } = state;
  if (!Number.isSafeInteger(count) || count < 0) throw new AggregationError(`accumulator state: count must be a non-negative integer, got ${String(count)}`);
  if (typeof totalWeight !== 'number' || !Number.isFinite(totalWeight) || totalWeight < 0) {
    throw new AggregationError(`accumulator state: totalWeight must be a finite number >= 0, got ${String(totalWeight)}`);
  }
  if ((count === 0) !== (totalWeight === 0)) {
    throw new AggregationError(`accumulator state: count ${count} and totalWeight ${totalWeight} are inconsistent (both must be zero or both positive)`);
  }
  const specs = validateSpecs(state.specs);
  const values = alignToSpecs(specs, state.sums, 'accumulator state sums');
  let bound = 0;
  values.forEach((v, k) => {
    const bad = firstNonFinite(v);
    if (bad >= 0) throw new AggregationError(`accumulator state: tensor "${specs[k].name}" sum is not finite at flat index ${bad}`);
    bound = Math.max(bound, maxAbs(v));
  });
  if (count === 0 && bound !== 0) throw new AggregationError('accumulator state: count is 0 but the sums are not all zero');
  return { specs, values, totalWeight, count, bound };
}

export class WeightedMeanAccumulator {
  private readonly specList: TensorSpec[];
  private sums: Float64Array[];
  /** Set when the sums live in WebAssembly memory and float32 updates fold in with SIMD. */
  private simd: SimdSums | null = null;
  /** 'auto' until the sums moved to SIMD (or could not): then what they are. */
  private kernelChoice: FoldKernel;
  private total = 0;
  private n = 0;
  /** Updates added to this object (a restored one starts at 0 whatever its count). */
  private foldedHere = 0;
  /** Upper bound on max |sums[k][i]|, used to refuse an add that could overflow float64. */
  private magnitudeBound = 0;

  /** `resumed` (@internal, fromState): with 'auto', start scalar and move at the second add. */
  constructor(specs: TensorSpec[], options: AccumulatorOptions = {}, resumed = false) {
    this.specList = validateSpecs(specs);
    const sizes = this.specList.map((s) => tensorSize(s.shape));
    const kernel = options.kernel ?? 'auto';
    if (kernel !== 'auto' && kernel !== 'simd' && kernel !== 'scalar') throw new AggregationError(`kernel must be 'auto', 'simd' or 'scalar', got ${String(kernel)}`);
    const total = sizes.reduce((a, b) => a + b, 0);
    this.kernelChoice = kernel === 'auto' && total < SIMD_MIN_PARAMETERS ? 'scalar' : kernel;
    if (this.kernelChoice === 'simd' || (this.kernelChoice === 'auto' && !resumed)) {
      this.simd = SimdSums.create(sizes);
      if (this.simd === null && kernel === 'simd') throw new AggregationError("kernel 'simd' asked for, but this host has no WebAssembly SIMD (or the model is over 4 GiB of sums)");
      this.kernelChoice = this.simd ? 'simd' : 'scalar';
    }
    this.sums = this.simd ? this.simd.sums : sizes.map((n) => new Float64Array(n));
  }

  /** Moves the sums into WebAssembly memory ('auto', second update on); stays scalar if it cannot. */
  private moveToSimd(): void {
    this.kernelChoice = 'scalar';
    const simd = SimdSums.create(this.sums.map((s) => s.length));
    if (simd === null) return;
    this.sums.forEach((s, k) => simd.sums[k].set(s));
    this.sums = simd.sums;
    this.simd = simd;
    this.kernelChoice = 'simd';
  }

  /** 'simd' when float32 updates fold in through WebAssembly SIMD, else 'scalar'. */
  get kernel(): 'simd' | 'scalar' {
    return this.simd ? 'simd' : 'scalar';
  }

  /** Rebuilds an accumulator from toState() output (validated; the arrays are copied). */
  static fromState(state: AccumulatorState, options: AccumulatorOptions = {}): WeightedMeanAccumulator {
    const checked = checkState(state);
    const acc = new WeightedMeanAccumulator(checked.specs, options, true);
    checked.values.forEach((v, k) => acc.sums[k].set(v));
    acc.total = checked.totalWeight;
    acc.n = checked.count;
    acc.magnitudeBound = checked.bound;
    return acc;
  }

  /** encodeAccumulatorState(this.toState()) without the copies: the FMA1 bytes straight from the sums. */
  encodeState(): Uint8Array {
    return encodeCheckedState({ specs: this.specList, values: this.sums, totalWeight: this.total, count: this.n, bound: this.magnitudeBound });
  }

  get specs(): TensorSpec[] {
    return this.specList.map((s) => ({ name: s.name, shape: [...s.shape] }));
  }

  /** Number of updates added. */
  get count(): number {
    return this.n;
  }

  /** Sum of the weights (example counts) of the updates added. */
  get totalWeight(): number {
    return this.total;
  }

  /**
   * Adds weight * update to the running sum. Tensors are matched by name (any order); each must
   * have the spec's shape and only finite values. The weight (typically the client's example
   * count) must be finite and > 0. On error nothing is changed.
   */
  add(update: WeightSet, weight: number): void {
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
      throw new AggregationError(`weight must be a finite number > 0, got ${String(weight)}`);
    }
    const values = alignToSpecs(this.specList, update, 'update');
    let updateMax = 0;
    for (let k = 0; k < values.length; k++) {
      const m = maxAbs(values[k]);
      if (!Number.isFinite(m)) {
        const bad = firstNonFinite(values[k]);
        throw new AggregationError(`update: tensor "${this.specList[k].name}" has a non-finite value (${values[k][bad]}) at flat index ${bad}`);
      }
      if (m > updateMax) updateMax = m;
    }
    const newBound = this.magnitudeBound + weight * updateMax;
    const newTotal = this.total + weight;
    if (!(newBound <= MAX_SUM_MAGNITUDE) || !Number.isFinite(newTotal)) {
      throw new AggregationError(`update with weight ${weight} and max |value| ${updateMax} could overflow the float64 running sum`);
    }
    // Only now, every value checked, does any sum change: one pass per tensor, no allocation
    // (but once per accumulator, the move of the sums into WebAssembly memory).
    if (this.kernelChoice === 'auto' && this.foldedHere >= 1 && values.some((v) => v instanceof Float32Array)) this.moveToSimd();
    for (let k = 0; k < values.length; k++) {
      const v = values[k];
      if (!(v instanceof Float32Array)) axpyF64(this.sums[k], v, weight);
      else if (this.simd) this.simd.axpy32(k, v, weight);
      else axpyF32Scalar(this.sums[k], v, weight);
    }
    this.magnitudeBound = newBound;
    this.total = newTotal;
    this.n += 1;
    this.foldedHere += 1;
  }

  /** The weighted mean sum / totalWeight, rounded once to float32. Throws when nothing was added. */
  mean(): WeightSet {
    if (this.n === 0) throw new AggregationError('cannot take the mean of zero updates');
    const total = this.total;
    return this.specList.map((spec, k) => {
      const s = this.sums[k];
      const out = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) out[i] = s[i] / total;
      const bad = firstNonFinite(out);
      if (bad >= 0) throw new AggregationError(`mean of tensor "${spec.name}" overflows float32 at flat index ${bad}`);
      return { name: spec.name, shape: [...spec.shape], values: out };
    });
  }

  /** The raw weighted sum (float64 copies), e.g. for DP wrappers that add noise to sums. */
  sum(): WeightSet {
    return this.specList.map((spec, k) => ({ name: spec.name, shape: [...spec.shape], values: this.sums[k].slice() }));
  }

  /** A copy of the state, for persistence (see encodeAccumulatorState) and fromState. */
  toState(): AccumulatorState {
    return { specs: this.specs, sums: this.sum(), totalWeight: this.total, count: this.n };
  }
}

/*
 * Persisted accumulator state, format "FMA1" (little-endian):
 *   offset 0   4 bytes  magic "FMA1"
 *   offset 4   uint32   count
 *   offset 8   float64  totalWeight
 *   offset 16  an FMW1 weights frame (see weights-codec.ts), dtype float64, holding the sums in
 *              spec order (the frame's header carries the specs)
 * The 16-byte prefix keeps the embedded frame 8-byte aligned.
 */
const STATE_MAGIC = [0x46, 0x4d, 0x41, 0x31] as const; // "FMA1"
const STATE_PREFIX_BYTES = 16;

export function encodeAccumulatorState(state: AccumulatorState): Uint8Array {
  return encodeCheckedState(checkState(state)); // validates and orders the sums by spec
}

function encodeCheckedState(state: CheckedState): Uint8Array {
  if (state.count > 0xffffffff) throw new AggregationError(`accumulator state: count ${state.count} does not fit in uint32`);
  // encodeWeights reads the sums (float64 stays float64): no copy of them on the way.
  const frame = encodeWeights(state.specs.map((s, k) => ({ name: s.name, shape: s.shape, values: state.values[k] })), 'float64');
  const out = new Uint8Array(STATE_PREFIX_BYTES + frame.length);
  out.set(STATE_MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(4, state.count, true);
  dv.setFloat64(8, state.totalWeight, true);
  out.set(frame, STATE_PREFIX_BYTES);
  return out;
}

/**
 * Inverse of encodeAccumulatorState. Throws AggregationError (with the codec error as cause) on
 * malformed input. The sums are views over `bytes` when aligned (do not change `bytes` while the
 * state is used; fromState copies them).
 */
export function decodeAccumulatorState(bytes: Uint8Array): AccumulatorState {
  if (!(bytes instanceof Uint8Array)) throw new AggregationError('accumulator state must be a Uint8Array');
  if (bytes.length < STATE_PREFIX_BYTES) {
    throw new AggregationError(`accumulator state is truncated: ${bytes.length} bytes, shorter than the ${STATE_PREFIX_BYTES}-byte prefix`);
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== STATE_MAGIC[i]) throw new AggregationError('accumulator state has a bad magic (expected "FMA1")');
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint32(4, true);
  const totalWeight = dv.getFloat64(8, true);
  let sums: WeightSet;
  try {
    // Views over `bytes` (one copy if misaligned): every caller restores with fromState, which copies.
    sums = decodeWeightsView(bytes.subarray(STATE_PREFIX_BYTES), { dtype: 'float64' });
  } catch (err) {
    throw new AggregationError(`accumulator state: ${(err as Error).message}`, { cause: err });
  }
  const state: AccumulatorState = { specs: specsOf(sums), sums, totalWeight, count };
  checkState(state); // same validation as restoring
  return state;
}
