/**
 * A fused trainer for the dense stacks fedmark trains (models/model-factory.ts): forward pass,
 * backward pass and the loss's gradient over one contiguous block of memory, no allocation per
 * step: the WASM SIMD kernels of models/fused-mlp-kernels.wat (a WebAssembly memory) for layers
 * whose width is a multiple of 4, else the JavaScript kernels below (a plain ArrayBuffer).
 *
 * Why by hand: at these sizes (an MLP 40-64-32-1 is 4,737 parameters) TensorFlow.js spends its
 * time dispatching kernels (a step is ~40 of them, each with bookkeeping), not multiplying; a
 * loop over the few hundred kilobytes a step touches runs at memory/L1 speed instead (issue 13,
 * "Local training"). TensorFlow.js stays the model format and every other model (and DP-SGD);
 * the node's evaluation uses this forward pass too (models/fused-mlp-predict.ts).
 *
 * Layout: `params` holds the weights in protocol order (protocols/model-spec.ts modelTensorSpecs:
 * dense_0/kernel [in, out] row-major, dense_0/bias [out], dense_1/kernel, ...); `grads` the
 * gradient of the batch's mean loss in the same layout, so an optimizer is one loop over both.
 *
 * JavaScript kernels: loops ordered i-k-j (row, input unit, output unit), the inner loop over one
 * kernel row and one activation row, both contiguous; a layer's backward pass is a single pass
 * that accumulates the kernel gradient and, in the same inner loop, the gradient flowing to the
 * layer below (dA = dZ W^T: a dot product over the same kernel row); zero inputs (ReLU's dead
 * units, one-hot zeros) are skipped. The WASM kernels differ where measurement said so (no zero
 * skipping, register blocking, the backward pass in two sweeps): see the .wat. Either way a
 * batch goes through in chunks of CHUNK_ROWS rows whose activations stay in cache.
 */
import type { OutputLoss } from './losses.ts';
import { instantiateKernels, type WasmKernels } from './fused-mlp-wasm.ts';

/** A hidden layer's activation: ReLU, tanh (models/activations.ts), or none. */
export type FusedActivation = 'relu' | 'tanh' | 'linear';

export interface FusedLayout {
  /** Layer widths, input first, output (1) last: [40, 64, 32, 1]. */
  widths: number[];
  /** One activation per hidden layer (widths.length - 2 of them). */
  hidden: FusedActivation[];
}

export interface FusedMlpOptions {
  /**
   * Use the WASM SIMD kernels (models/fused-mlp-kernels.wat) for layers whose width is a multiple
   * of 4 (default true; the JavaScript kernels where WASM is unavailable and for other layers).
   */
  simd?: boolean;
}

const ACT_CODE = { linear: 1, relu: 2, tanh: 3 } as const;

/**
 * Rows per chunk: a 64-row chunk's activations and deltas of a 64-32 MLP are ~50 KB, in L1/L2,
 * where a 1024-row batch's (~800 KB) are not (measured: ~1.4x faster per row at batch 1024).
 */
const CHUNK_ROWS = 64;

/** Byte offsets of the buffers in the WASM memory. */
export interface Pointers {
  params: number;
  grads: number;
  moment1: number;
  moment2: number;
  global: number;
  input: number;
  outs: number[];
  deltas: number[];
}

export class FusedMlp {
  readonly widths: readonly number[];
  readonly hidden: readonly FusedActivation[];
  /** Weights, protocol order. */
  readonly params: Float32Array;
  /** d (mean batch loss) / d params after lossAndGradient, same layout. */
  readonly grads: Float32Array;
  /** Offsets of each layer's kernel and bias in params / grads. */
  readonly kernelOffsets: readonly number[];
  readonly biasOffsets: readonly number[];
  readonly maxRows: number;
  /** params.length rounded up to a multiple of 4 (the padding stays 0 in every buffer). */
  readonly paddedSize: number;
  /** Optimizer state next to the weights (fused-mlp-optim.ts): Adam's moments, FedProx's global model. */
  readonly moment1: Float32Array;
  readonly moment2: Float32Array;
  readonly globalParams: Float32Array;
  /** A batch's inputs, maxRows x widths[0]: gather rows here and no copy is made. */
  readonly input: Float32Array;
  /** The SIMD kernels, null for plain JavaScript. */
  readonly kernels: WasmKernels | null;
  readonly ptr: Pointers;
  /** Rows per forward-and-backward chunk (min(maxRows, CHUNK_ROWS)). */
  readonly chunkRows: number;
  /** forward's result: z for every row. */
  private readonly scores: Float32Array;
  /** outs[l]: layer l's output for each row of a chunk (activated for hidden layers, z for the last). */
  private readonly outs: Float32Array[];
  /** deltas[l]: d loss / d z of layer l, row by row (a chunk's). */
  private readonly deltas: Float32Array[];

  constructor(layout: FusedLayout, maxRows: number, options: FusedMlpOptions = {}) {
    const { widths, hidden } = layout;
    if (widths.length < 2 || widths.some((w) => !Number.isInteger(w) || w <= 0)) throw new RangeError(`FusedMlp: widths must be >= 2 positive integers, got [${widths.join(', ')}]`);
    if (widths[widths.length - 1] !== 1) throw new RangeError(`FusedMlp: the output layer must have 1 unit, got ${widths[widths.length - 1]}`);
    if (hidden.length !== widths.length - 2) throw new RangeError(`FusedMlp: ${widths.length - 2} hidden layers but ${hidden.length} activations`);
    if (!Number.isInteger(maxRows) || maxRows <= 0) throw new RangeError(`FusedMlp: maxRows must be a positive integer, got ${maxRows}`);
    this.widths = [...widths];
    this.hidden = [...hidden];
    this.maxRows = maxRows;
    const kernelOffsets: number[] = [];
    const biasOffsets: number[] = [];
    let size = 0;
    for (let l = 0; l < widths.length - 1; l++) {
      kernelOffsets.push(size);
      size += widths[l] * widths[l + 1];
      biasOffsets.push(size);
      size += widths[l + 1];
    }
    this.kernelOffsets = kernelOffsets;
    this.biasOffsets = biasOffsets;
    // One block of memory (the WASM instance's when SIMD is on), each buffer 16-byte aligned.
    let at = 0;
    const place = (floats: number) => {
      const start = at;
      at = (at + floats + 3) & ~3;
      return start;
    };
    const paramsAt = place(size);
    const gradsAt = place(size);
    const moment1At = place(size);
    const moment2At = place(size);
    const globalAt = place(size);
    this.paddedSize = (size + 3) & ~3;
    const inputAt = place(maxRows * widths[0]);
    this.chunkRows = Math.min(maxRows, CHUNK_ROWS);
    const outsAt = widths.slice(1).map((w) => place(this.chunkRows * w));
    const deltasAt = widths.slice(1).map((w) => place(this.chunkRows * w));
    const wantSimd = options.simd !== false && widths.slice(1).some((n) => simdWidth(n));
    this.kernels = wantSimd ? instantiateKernels(at * 4) : null;
    const buffer = this.kernels?.memory.buffer ?? new ArrayBuffer(at * 4);
    const view = (from: number, count: number) => new Float32Array(buffer, from * 4, count);
    this.params = view(paramsAt, size);
    this.grads = view(gradsAt, size);
    this.moment1 = view(moment1At, size);
    this.moment2 = view(moment2At, size);
    this.globalParams = view(globalAt, size);
    this.input = view(inputAt, maxRows * widths[0]);
    this.outs = widths.slice(1).map((w, l) => view(outsAt[l], this.chunkRows * w));
    this.deltas = widths.slice(1).map((w, l) => view(deltasAt[l], this.chunkRows * w));
    this.scores = new Float32Array(maxRows);
    this.ptr = { params: paramsAt * 4, grads: gradsAt * 4, moment1: moment1At * 4, moment2: moment2At * 4, global: globalAt * 4, input: inputAt * 4, outs: outsAt.map((f) => f * 4), deltas: deltasAt.map((f) => f * 4) };
  }

  /**
   * Every buffer back to zeros, as a new network's: its WebAssembly memory (or ArrayBuffer) and
   * the scores. A network kept between trainings (dense-ops.ts) waits in this state, so it holds
   * no rows or gradients and computes the same numbers a new one would, without a new memory and
   * instance (~0.4 ms each, most of it the memory's address-space reservation and first-touch page
   * faults).
   */
  reset(): void {
    new Uint8Array(this.params.buffer).fill(0);
    this.scores.fill(0);
  }

  get layers(): number {
    return this.widths.length - 1;
  }

  /**
   * The output unit's pre-activation z for `rows` rows of `x` (row-major, widths[0] wide), into
   * a buffer owned by this object (valid until the next call).
   */
  forward(x: Float32Array, rows: number): Float32Array {
    this.loadInput(x, rows);
    const last = this.outs[this.layers - 1];
    for (let start = 0; start < rows; start += this.chunkRows) {
      const size = Math.min(this.chunkRows, rows - start);
      this.forwardChunk(start, size);
      for (let i = 0; i < size; i++) this.scores[start + i] = last[i];
    }
    return this.scores.subarray(0, rows);
  }

  /**
   * Forward and backward pass on one batch: fills `grads` with the gradient of the mean loss over
   * the rows (as autodiff of tf.mean(loss) would), returns the SUM of the rows' losses (float64).
   * Chunks of `chunkRows` rows go forward and backward in turn, so a large batch's activations
   * stay in cache; gradients add up row by row either way, so chunking changes no number.
   */
  lossAndGradient(x: Float32Array, targets: Float32Array, rows: number, loss: OutputLoss): number {
    this.loadInput(x, rows);
    this.grads.fill(0);
    const last = this.layers - 1;
    const z = this.outs[last];
    const dz = this.deltas[last];
    let sum = 0;
    for (let start = 0; start < rows; start += this.chunkRows) {
      const size = Math.min(this.chunkRows, rows - start);
      this.forwardChunk(start, size);
      for (let i = 0; i < size; i++) {
        const t = targets[start + i];
        sum += loss.value(z[i], t);
        dz[i] = loss.derivative(z[i], t) / rows;
      }
      for (let l = last; l >= 0; l--) this.backwardLayer(l, start, size);
    }
    return sum;
  }

  private loadInput(x: Float32Array, rows: number): void {
    this.checkRows(x, rows);
    if (x === this.input) return;
    const count = rows * this.widths[0];
    for (let i = 0; i < count; i++) this.input[i] = x[i];
  }

  /** Rows start..start+rows-1 of the input through every layer, into outs (chunk-local). */
  private forwardChunk(start: number, rows: number): void {
    const { ptr, kernels, params: p } = this;
    const a0 = start * this.widths[0];
    for (let l = 0; l < this.layers; l++) {
      const k = this.widths[l];
      const n = this.widths[l + 1];
      const out = this.outs[l];
      const act = l < this.layers - 1 ? this.hidden[l] : 'linear';
      const from = l === 0 ? ptr.input + 4 * a0 : ptr.outs[l - 1];
      const w = ptr.params + 4 * this.kernelOffsets[l];
      const b = ptr.params + 4 * this.biasOffsets[l];
      if (kernels !== null && simdWidth(n)) {
        const forward = n % 16 === 0 ? kernels.fwd16 : kernels.fwd;
        forward(from, w, b, ptr.outs[l], rows, k, n, act === 'relu' ? 1 : 0);
        if (act === 'tanh') activateInPlace(act, out, rows * n);
        continue;
      }
      if (kernels !== null && n === 1) kernels.fwd1(from, w, b, ptr.outs[l], rows, k);
      else {
        const input = l === 0 ? this.input : this.outs[l - 1];
        const offset = l === 0 ? a0 : 0;
        if (n === 1) denseForward1(input, offset, p, this.kernelOffsets[l], this.biasOffsets[l], out, rows, k);
        else denseForward(input, offset, p, this.kernelOffsets[l], this.biasOffsets[l], out, rows, k, n);
      }
      activateInPlace(act, out, rows * n);
    }
  }

  /** One layer's kernel and bias gradients, and (above layer 0) the delta of the layer below. */
  private backwardLayer(l: number, start: number, rows: number): void {
    const k = this.widths[l];
    const n = this.widths[l + 1];
    const below = l > 0 ? this.deltas[l - 1] : null;
    const act = l > 0 ? this.hidden[l - 1] : 'linear';
    const dz = this.deltas[l];
    const { ptr, kernels } = this;
    const a0 = l === 0 ? start * k : 0;
    const from = l === 0 ? ptr.input + 4 * a0 : ptr.outs[l - 1];
    const code = l === 0 ? 0 : ACT_CODE[act];
    const w = ptr.params + 4 * this.kernelOffsets[l];
    const gw = ptr.grads + 4 * this.kernelOffsets[l];
    const gb = ptr.grads + 4 * this.biasOffsets[l];
    const under = l > 0 ? ptr.deltas[l - 1] : 0;
    if (kernels !== null && simdWidth(n)) {
      if (n % 16 === 0) {
        kernels.bwdw(from, ptr.deltas[l], gw, gb, rows, 0, n); // k = 0: the bias only
        kernels.bwdw16(from, ptr.deltas[l], gw, rows, k, n);
      } else kernels.bwdw(from, ptr.deltas[l], gw, gb, rows, k, n);
      if (l > 0) (k % 4 === 0 ? kernels.bwda4 : kernels.bwda)(from, ptr.deltas[l], w, under, rows, k, n, code);
      return;
    }
    if (kernels !== null && n === 1) return kernels.bwd1(from, ptr.deltas[l], w, gw, gb, under, rows, k, code);
    const input = l === 0 ? this.input : this.outs[l - 1];
    if (n === 1) denseBackward1(input, a0, dz, this.params, this.grads, this.kernelOffsets[l], this.biasOffsets[l], below, act, rows, k);
    else denseBackward(input, a0, dz, this.params, this.grads, this.kernelOffsets[l], this.biasOffsets[l], below, act, rows, k, n);
  }

  private checkRows(x: Float32Array, rows: number): void {
    if (!Number.isInteger(rows) || rows <= 0 || rows > this.maxRows) throw new RangeError(`FusedMlp: rows must be in 1..${this.maxRows}, got ${rows}`);
    if (x.length < rows * this.widths[0]) throw new RangeError(`FusedMlp: x holds ${x.length} values, expected ${rows} x ${this.widths[0]}`);
  }
}

/** Layers the SIMD kernels take: f32x4 lanes over the units, so a multiple of 4. */
function simdWidth(n: number): boolean {
  return n > 1 && n % 4 === 0;
}

/** Z = A W + b for a layer of n > 1 units, i-k-j. */
function denseForward(a: Float32Array, a0: number, p: Float32Array, ko: number, bo: number, z: Float32Array, rows: number, k: number, n: number): void {
  for (let i = 0; i < rows; i++) {
    const ao = a0 + i * k;
    const zo = i * n;
    for (let j = 0; j < n; j++) z[zo + j] = p[bo + j];
    for (let c = 0; c < k; c++) {
      const v = a[ao + c];
      if (v === 0) continue;
      const wo = ko + c * n;
      for (let j = 0; j < n; j++) z[zo + j] += v * p[wo + j];
    }
  }
}

/** z = A w + b for a 1-unit layer: one dot product per row. */
function denseForward1(a: Float32Array, a0: number, p: Float32Array, ko: number, bo: number, z: Float32Array, rows: number, k: number): void {
  const b = p[bo];
  for (let i = 0; i < rows; i++) {
    const ao = a0 + i * k;
    let s = 0;
    for (let c = 0; c < k; c++) s += a[ao + c] * p[ko + c];
    z[i] = s + b;
  }
}

function activateInPlace(act: FusedActivation, h: Float32Array, count: number): void {
  if (act === 'relu') {
    for (let i = 0; i < count; i++) if (!(h[i] > 0)) h[i] = 0;
  } else if (act === 'tanh') {
    for (let i = 0; i < count; i++) h[i] = Math.tanh(h[i]);
  }
}

/**
 * f'(z) times the incoming gradient s, from the layer's output h = f(z): ReLU's step (h > 0 iff
 * z > 0; 0 at z = 0, as tfjs's relu gradient), tanh's 1 - h^2, 1 for no activation.
 */
function throughActivation(act: FusedActivation, h: number, s: number): number {
  return act === 'relu' ? (h > 0 ? s : 0) : act === 'tanh' ? s * (1 - h * h) : s;
}

/**
 * Backward of a layer of n > 1 units: dW += A^T dZ, db += column sums of dZ, and (when `below`)
 * below = f'(.) * (dZ W^T), all in one pass over the rows.
 */
function denseBackward(
  a: Float32Array, a0: number, dz: Float32Array, p: Float32Array, g: Float32Array, ko: number, bo: number,
  below: Float32Array | null, act: FusedActivation, rows: number, k: number, n: number,
): void {
  for (let i = 0; i < rows; i++) {
    const ao = a0 + i * k;
    const uo = i * k; // the row in `below` (chunk-local)
    const zo = i * n;
    for (let j = 0; j < n; j++) g[bo + j] += dz[zo + j];
    for (let c = 0; c < k; c++) {
      const v = a[ao + c];
      const wo = ko + c * n;
      if (v === 0) {
        // No kernel gradient from a zero input; below it, ReLU's gradient is 0 too.
        if (below !== null) {
          let s = 0;
          if (act !== 'relu') for (let j = 0; j < n; j++) s += dz[zo + j] * p[wo + j];
          below[uo + c] = act === 'relu' ? 0 : s;
        }
        continue;
      }
      if (below === null) {
        for (let j = 0; j < n; j++) g[wo + j] += v * dz[zo + j];
        continue;
      }
      let s = 0;
      for (let j = 0; j < n; j++) {
        const d = dz[zo + j];
        s += d * p[wo + j];
        g[wo + j] += v * d;
      }
      below[uo + c] = throughActivation(act, v, s);
    }
  }
}

/** denseBackward for a 1-unit layer (the output): dZ is one number per row. */
function denseBackward1(
  a: Float32Array, a0: number, dz: Float32Array, p: Float32Array, g: Float32Array, ko: number, bo: number,
  below: Float32Array | null, act: FusedActivation, rows: number, k: number,
): void {
  let bias = 0;
  for (let i = 0; i < rows; i++) {
    const d = dz[i];
    const ao = a0 + i * k;
    const uo = i * k;
    bias += d;
    for (let c = 0; c < k; c++) g[ko + c] += a[ao + c] * d;
    if (below !== null) for (let c = 0; c < k; c++) below[uo + c] = throughActivation(act, a[ao + c], d * p[ko + c]);
  }
  g[bo] += bias;
}
