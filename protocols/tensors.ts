/**
 * Named tensors: the unit the federated protocol moves around (model weights, model updates).
 *
 * A tensor is a name, a shape (row-major, `[]` is a scalar) and a flat typed array of
 * `tensorSize(shape)` values. A `WeightSet` is an ordered list of tensors with unique names.
 * Functions that combine two weight sets match tensors by name, not by position.
 *
 * Pure module: no I/O, no dependencies.
 */

export type DType = 'float32' | 'float64';

export interface TensorSpec {
  name: string;
  shape: number[];
}

export interface NamedTensor {
  name: string;
  shape: number[];
  values: Float32Array | Float64Array;
}

export type WeightSet = NamedTensor[];

/** Thrown for malformed tensors or weight sets whose specs do not match. */
export class TensorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TensorError';
  }
}

/** `[2, 3]` -> `"[2,3]"`, for error messages. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Number of values in a tensor of this shape (1 for a scalar `[]`). Dims must be non-negative integers. */
export function tensorSize(shape: number[]): number {
  let size = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new TensorError(`shape ${formatShape(shape)}: dimension ${i} is ${String(d)}, must be a non-negative integer`);
    }
    size *= d;
  }
  return size;
}

export function specsOf(weights: WeightSet): TensorSpec[] {
  return weights.map((t) => ({ name: t.name, shape: [...t.shape] }));
}

export function totalParameters(specs: TensorSpec[]): number {
  let total = 0;
  for (const s of specs) total += tensorSize(s.shape);
  return total;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compares two spec lists by tensor name (order does not matter). Returns null when they describe
 * the same tensors, otherwise a message naming the first problem: a missing tensor, an unexpected
 * one, a duplicate name, or a shape that differs ("expected [..], got [..]").
 */
export function describeSpecMismatch(expected: readonly TensorSpec[], got: readonly TensorSpec[]): string | null {
  const gotByName = new Map<string, TensorSpec>();
  for (const g of got) {
    if (gotByName.has(g.name)) return `duplicate tensor "${g.name}"`;
    gotByName.set(g.name, g);
  }
  const expectedNames = new Set<string>();
  for (const e of expected) {
    expectedNames.add(e.name);
    const g = gotByName.get(e.name);
    if (g === undefined) return `missing tensor "${e.name}" (expected shape ${formatShape(e.shape)})`;
    if (!sameShape(e.shape, g.shape)) {
      return `tensor "${e.name}": expected shape ${formatShape(e.shape)}, got ${formatShape(g.shape)}`;
    }
  }
  for (const g of got) {
    if (!expectedNames.has(g.name)) return `unexpected tensor "${g.name}" (shape ${formatShape(g.shape)})`;
  }
  return null;
}

/** Checks that a tensor's value count matches its shape; returns a message or null. */
export function describeTensorInconsistency(t: NamedTensor): string | null {
  let size: number;
  try {
    size = tensorSize(t.shape);
  } catch (err) {
    return `tensor "${t.name}": ${(err as Error).message}`;
  }
  if (!(t.values instanceof Float32Array || t.values instanceof Float64Array)) {
    return `tensor "${t.name}": values must be a Float32Array or Float64Array`;
  }
  if (t.values.length !== size) {
    return `tensor "${t.name}": shape ${formatShape(t.shape)} needs ${size} values, got ${t.values.length}`;
  }
  return null;
}

function assertConsistent(weights: WeightSet, what: string): void {
  for (const t of weights) {
    const problem = describeTensorInconsistency(t);
    if (problem !== null) throw new TensorError(`${what}: ${problem}`);
  }
}

/** Sum of squares with a rescaled second pass when the naive sum overflows or underflows. */
function sumOfSquaresNorm(weights: WeightSet): number {
  let s = 0;
  for (const t of weights) {
    const v = t.values;
    for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  }
  if (Number.isNaN(s)) return Number.NaN;
  if (Number.isFinite(s) && s >= 2 ** -900) return Math.sqrt(s);
  // Overflow (huge float64 values), underflow (tiny float64 values) or all zeros: scale by the
  // largest magnitude.
  let maxAbs = 0;
  for (const t of weights) {
    const v = t.values;
    for (let i = 0; i < v.length; i++) {
      const a = Math.abs(v[i]);
      if (a > maxAbs) maxAbs = a;
    }
  }
  if (maxAbs === 0) return 0;
  if (!Number.isFinite(maxAbs)) return Number.POSITIVE_INFINITY;
  let scaled = 0;
  for (const t of weights) {
    const v = t.values;
    for (let i = 0; i < v.length; i++) {
      const x = v[i] / maxAbs;
      scaled += x * x;
    }
  }
  return maxAbs * Math.sqrt(scaled);
}

/** L2 norm over all values of all tensors, accumulated in float64. NaN if any value is NaN. */
export function l2Norm(weights: WeightSet): number {
  return sumOfSquaresNorm(weights);
}

/**
 * L2 norm of update - global without allocating a delta (tensors matched by name; validated by
 * the caller): on the coordinator's path for every update, where a delta array would cost a
 * model-sized allocation.
 */
export function distanceNorm(update: WeightSet, global: WeightSet): number {
  const byName = new Map(update.map((t) => [t.name, t.values] as const));
  let s = 0;
  for (const g of global) {
    const u = byName.get(g.name)!;
    const gv = g.values;
    for (let i = 0; i < gv.length; i++) {
      const d = u[i] - gv[i];
      s += d * d;
    }
  }
  // Overflow or underflow of the plain sum of squares: take the rescaled path (rare, allocates).
  if (!Number.isFinite(s) || (s < 2 ** -900 && s !== 0)) return l2Norm(subtract(update, global));
  return Math.sqrt(s);
}

/** a - b, tensor by tensor (matched by name, output in a's order), as float64. Throws TensorError when specs differ. */
export function subtract(a: WeightSet, b: WeightSet): WeightSet {
  assertConsistent(a, 'subtract (left operand)');
  assertConsistent(b, 'subtract (right operand)');
  const mismatch = describeSpecMismatch(specsOf(a), specsOf(b));
  if (mismatch !== null) throw new TensorError(`subtract: ${mismatch}`);
  const byName = new Map(b.map((t) => [t.name, t] as const));
  return a.map((ta) => {
    const tb = byName.get(ta.name)!;
    const x = ta.values;
    const y = tb.values;
    const out = new Float64Array(x.length);
    for (let i = 0; i < out.length; i++) out[i] = x[i] - y[i];
    return { name: ta.name, shape: [...ta.shape], values: out };
  });
}

function scaleWeights(weights: WeightSet, factor: number): WeightSet {
  return weights.map((t) => {
    const src = t.values;
    const out = src instanceof Float32Array ? new Float32Array(src.length) : new Float64Array(src.length);
    if (factor === 1) out.set(src);
    else for (let i = 0; i < src.length; i++) out[i] = src[i] * factor;
    return { name: t.name, shape: [...t.shape], values: out };
  });
}

/**
 * Scales the whole weight set by min(1, maxNorm / norm), the per-update clipping of DP-FedAvg.
 *
 * Returns copies that keep each tensor's array type (Float32Array stays Float32Array), the
 * original norm, and the factor applied. The bound is enforced on the stored values: if rounding
 * (e.g. to float32) leaves l2Norm(clipped) a hair above maxNorm, the factor is nudged down until
 * l2Norm(clipped) <= maxNorm holds exactly, because DP sensitivity arguments rely on it. Updates
 * whose norm is already <= maxNorm come back unchanged (factor 1).
 */
export function clipToNorm(weights: WeightSet, maxNorm: number): { clipped: WeightSet; norm: number; factor: number } {
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm) || maxNorm < 0) {
    throw new TensorError(`clipToNorm: maxNorm must be a non-negative number, got ${String(maxNorm)}`);
  }
  assertConsistent(weights, 'clipToNorm');
  const norm = l2Norm(weights);
  if (!Number.isFinite(norm)) throw new TensorError('clipToNorm: weights contain NaN or infinite values');
  if (norm <= maxNorm) return { clipped: scaleWeights(weights, 1), norm, factor: 1 };

  const anyFloat32 = weights.some((t) => t.values instanceof Float32Array);
  let step = anyFloat32 ? 2 ** -24 : 2 ** -53;
  let factor = maxNorm / norm;
  for (let attempt = 0; ; attempt++) {
    const clipped = scaleWeights(weights, factor);
    if (l2Norm(clipped) <= maxNorm || factor === 0) return { clipped, norm, factor };
    // Rounding pushed the norm just over the bound: shrink a little more (doubling the nudge each time).
    step *= 2;
    factor = attempt < 60 ? factor * (1 - step) : 0;
  }
}
