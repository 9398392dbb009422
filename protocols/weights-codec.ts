/**
 * Binary codec for named tensors (model weights and updates), format version 1 ("FMW1").
 *
 * Why binary: a JSON array of numbers is ~4x larger than float32 bytes and slow to parse; a
 * 1M-parameter update is 4 MB here versus ~18 MB of JSON.
 *
 * Layout (all integers little-endian):
 *
 *   offset 0   4 bytes   magic "FMW1" (0x46 0x4D 0x57 0x31); the trailing "1" is the format version
 *   offset 4   uint32    H = byte length of the JSON header
 *   offset 8   H bytes   UTF-8 JSON header:
 *                          { "dtype": "float32" | "float64",
 *                            "tensors": [ { "name": string, "shape": [non-negative integers] }, ... ] }
 *                        tensor names are non-empty and unique; shape [] is a scalar (1 value);
 *                        no other keys are allowed (a decoder rejects unknown keys)
 *   8 + H      0-7 bytes zero padding, so the body starts at an 8-byte boundary
 *   body       each tensor's values, IEEE 754 little-endian in the header's dtype, row-major,
 *              concatenated in header order with no gaps. The frame ends exactly there.
 *
 * Every value must be finite: NaN and +-Infinity are refused both when encoding and decoding.
 * A future incompatible layout gets a new magic ("FMW2"); decoders reject magics they do not know.
 *
 * Pure module: imports only zod, node:crypto and the aggregation kernels (a WebAssembly SIMD
 * finiteness check).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import {
  describeSpecMismatch,
  formatShape,
  type DType,
  type NamedTensor,
  type TensorSpec,
  type WeightSet,
} from './tensors.ts';
import { firstNonFinite, maxAbsF32, maxAbsF32Remembered } from './aggregation/kernels.ts';

export const WEIGHTS_MAGIC = 'FMW1';
const MAGIC_BYTES = [0x46, 0x4d, 0x57, 0x31] as const;
const PREFIX_BYTES = 8; // magic + uint32 header length

export class WeightsCodecError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeightsCodecError';
  }
}

export interface DecodeOptions {
  /** When given, the decoded tensors must be exactly these (by name) with these shapes. */
  expected?: TensorSpec[];
  /** When given, the frame's dtype must be this one. */
  dtype?: DType;
  /** When given, frames longer than this many bytes are refused before any parsing. */
  maxBytes?: number;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function bytesPerElement(dtype: DType): 4 | 8 {
  return dtype === 'float32' ? 4 : 8;
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** Lone UTF-16 surrogates do not survive UTF-8; refuse them rather than silently renaming a tensor. */
const LONE_SURROGATE = /\p{Cs}/u;

const headerSchema = z.strictObject({
  dtype: z.enum(['float32', 'float64']),
  tensors: z.array(
    z.strictObject({
      name: z
        .string()
        .min(1, 'must be a non-empty string')
        .refine((s) => !LONE_SURROGATE.test(s), 'contains a lone UTF-16 surrogate'),
      shape: z.array(
        z
          .number()
          .refine((d) => Number.isSafeInteger(d), 'must be an integer')
          .refine((d) => d >= 0, 'must be non-negative'),
      ),
    }),
  ),
});

type Header = z.infer<typeof headerSchema>;

function describeValue(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return String(v);
  }
}

/** Turns a zod issue path into words, naming the tensor when the issue is inside one. */
function describeIssue(raw: unknown, issue: z.core.$ZodIssue): string {
  const path = issue.path;
  let where = 'header';
  if (path[0] === 'tensors' && typeof path[1] === 'number') {
    const entry = (raw as { tensors: unknown[] }).tensors[path[1]];
    const name = entry !== null && typeof entry === 'object' ? (entry as { name?: unknown }).name : undefined;
    where = typeof name === 'string' ? `tensor "${name}" (index ${path[1]})` : `tensor at index ${path[1]}`;
    const rest = path.slice(2);
    if (rest[0] === 'shape' && typeof rest[1] === 'number') {
      const shape = (entry as { shape: unknown[] }).shape;
      where += `: shape ${describeValue(shape)} dimension ${rest[1]} (${describeValue(shape[rest[1]])})`;
    } else if (rest.length > 0) {
      where += `: field "${rest.join('.')}"`;
    }
  } else if (path.length > 0) {
    where = `header field "${path.join('.')}"`;
  }
  return `${where}: ${issue.message}`;
}

function parseHeader(bytes: Uint8Array, start: number, length: number): Header {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(start, start + length));
  } catch (err) {
    throw new WeightsCodecError('header is not valid UTF-8', { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new WeightsCodecError(`header is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) {
    throw new WeightsCodecError(`invalid header: ${describeIssue(raw, parsed.error.issues[0])}`, { cause: parsed.error });
  }
  const seen = new Set<string>();
  for (const t of parsed.data.tensors) {
    if (seen.has(t.name)) throw new WeightsCodecError(`invalid header: duplicate tensor name "${t.name}"`);
    seen.add(t.name);
  }
  return parsed.data;
}

function nonFiniteMessage(action: string, name: string, index: number, value: number): string {
  return `${action}: tensor "${name}" has ${Number.isNaN(value) ? 'NaN' : value > 0 ? '+Infinity' : '-Infinity'} at flat index ${index}`;
}

/**
 * Encodes a weight set as an FMW1 frame. Values are converted to `dtype` (default float32; float64
 * input is rounded to nearest float32). Throws WeightsCodecError for inconsistent tensors, duplicate
 * names, or NaN/Infinity (including finite float64 values that overflow float32).
 */
export function encodeWeights(weights: WeightSet, dtype: DType = 'float32'): Uint8Array {
  if (dtype !== 'float32' && dtype !== 'float64') throw new WeightsCodecError(`unknown dtype ${describeValue(dtype)}`);
  if (!Array.isArray(weights)) throw new WeightsCodecError('encode: weights must be an array of tensors');
  const header: Header = { dtype, tensors: [] };
  const sizes: number[] = [];
  const seen = new Set<string>();
  let bodyElements = 0;
  for (let index = 0; index < weights.length; index++) {
    const t = weights[index];
    const label = typeof t?.name === 'string' ? `tensor "${t.name}"` : `tensor at index ${index}`;
    if (typeof t?.name !== 'string' || t.name.length === 0) throw new WeightsCodecError(`encode: ${label}: name must be a non-empty string`);
    if (LONE_SURROGATE.test(t.name)) throw new WeightsCodecError(`encode: ${label}: name contains a lone UTF-16 surrogate`);
    if (seen.has(t.name)) throw new WeightsCodecError(`encode: duplicate tensor name "${t.name}"`);
    seen.add(t.name);
    if (!Array.isArray(t.shape)) throw new WeightsCodecError(`encode: ${label}: shape must be an array`);
    let size = 1;
    for (let d = 0; d < t.shape.length; d++) {
      const dim = t.shape[d];
      if (!Number.isSafeInteger(dim) || dim < 0) {
        throw new WeightsCodecError(`encode: ${label}: shape ${formatShape(t.shape)} dimension ${d} is ${String(dim)}, must be a non-negative integer`);
      }
      size *= dim;
    }
    if (!(t.values instanceof Float32Array || t.values instanceof Float64Array)) {
      throw new WeightsCodecError(`encode: ${label}: values must be a Float32Array or Float64Array`);
    }
    if (t.values.length !== size) {
      throw new WeightsCodecError(`encode: ${label}: shape ${formatShape(t.shape)} needs ${size} values, got ${t.values.length}`);
    }
    header.tensors.push({ name: t.name, shape: [...t.shape] });
    sizes.push(size);
    bodyElements += size;
  }

  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const bodyOffset = align8(PREFIX_BYTES + headerBytes.length);
  const bpe = bytesPerElement(dtype);
  const out = new Uint8Array(bodyOffset + bodyElements * bpe);
  out.set(MAGIC_BYTES, 0);
  new DataView(out.buffer).setUint32(4, headerBytes.length, true);
  out.set(headerBytes, PREFIX_BYTES);

  let offset = bodyOffset;
  for (let index = 0; index < weights.length; index++) {
    const t = weights[index];
    const n = sizes[index];
    if (LITTLE_ENDIAN_HOST) {
      // `out` is fresh with byteOffset 0 and the body is 8-aligned, so typed views are aligned.
      const view = dtype === 'float32' ? new Float32Array(out.buffer, offset, n) : new Float64Array(out.buffer, offset, n);
      view.set(t.values); // converts (and rounds to float32) as needed
      const bad = firstNonFinite(view);
      if (bad >= 0) {
        const original = t.values[bad];
        const why = Number.isFinite(original) ? ` (${original} overflows ${dtype})` : '';
        throw new WeightsCodecError(nonFiniteMessage('encode', t.name, bad, view[bad]) + why);
      }
    } else {
      const dv = new DataView(out.buffer, offset, n * bpe);
      for (let i = 0; i < n; i++) {
        const x = dtype === 'float32' ? Math.fround(t.values[i]) : t.values[i];
        if (x - x !== 0) throw new WeightsCodecError(nonFiniteMessage('encode', t.name, i, x));
        if (dtype === 'float32') dv.setFloat32(i * 4, x, true);
        else dv.setFloat64(i * 8, x, true);
      }
    }
    offset += n * bpe;
  }
  return out;
}

/** A checked frame: header parsed, sizes checked against the bytes present, padding zero. */
interface CheckedFrame {
  header: Header;
  bodyOffset: number;
  sizes: number[];
}

/** Every structural check of decodeWeights, before any tensor is read or allocated. */
function checkFrame(bytes: Uint8Array, options: DecodeOptions): CheckedFrame {
  if (!(bytes instanceof Uint8Array)) throw new WeightsCodecError('decode: input must be a Uint8Array');
  const { expected, dtype: requiredDtype, maxBytes } = options;
  if (maxBytes !== undefined && bytes.length > maxBytes) {
    throw new WeightsCodecError(`frame is ${bytes.length} bytes, over the limit of ${maxBytes}`);
  }
  if (bytes.length < PREFIX_BYTES) {
    throw new WeightsCodecError(`truncated header: frame is ${bytes.length} bytes, shorter than the ${PREFIX_BYTES}-byte prefix`);
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== MAGIC_BYTES[i]) {
      const got = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
      throw new WeightsCodecError(`bad magic: expected "${WEIGHTS_MAGIC}" (46 4d 57 31), got ${got}`);
    }
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = dv.getUint32(4, true);
  if (PREFIX_BYTES + headerLength > bytes.length) {
    throw new WeightsCodecError(`truncated header: header declares ${headerLength} bytes but only ${bytes.length - PREFIX_BYTES} follow the prefix`);
  }
  const header = parseHeader(bytes, PREFIX_BYTES, headerLength);

  if (requiredDtype !== undefined && header.dtype !== requiredDtype) {
    throw new WeightsCodecError(`wrong dtype: expected ${requiredDtype}, got ${header.dtype}`);
  }
  if (expected !== undefined) {
    const mismatch = describeSpecMismatch(expected, header.tensors);
    if (mismatch !== null) throw new WeightsCodecError(`frame does not match the expected tensors: ${mismatch}`);
  }

  const headerEnd = PREFIX_BYTES + headerLength;
  const bodyOffset = align8(headerEnd);
  if (bodyOffset > bytes.length) {
    throw new WeightsCodecError(`truncated body: frame ends inside the header padding (${bytes.length} of ${bodyOffset} bytes)`);
  }
  for (let i = headerEnd; i < bodyOffset; i++) {
    if (bytes[i] !== 0) throw new WeightsCodecError(`header padding byte at offset ${i} is ${bytes[i]}, must be 0`);
  }

  // Sizes are checked against the bytes actually present before anything is allocated.
  const bpe = bytesPerElement(header.dtype);
  const available = bytes.length - bodyOffset;
  const sizes: number[] = [];
  let needed = 0;
  for (const t of header.tensors) {
    let size = 1;
    for (const d of t.shape) size *= d;
    const tensorBytes = size * bpe;
    if (needed + tensorBytes > available) {
      throw new WeightsCodecError(
        `truncated body: tensor "${t.name}" (shape ${formatShape(t.shape)}) needs ${tensorBytes} bytes at body offset ${needed}, but the body has ${available} bytes`,
      );
    }
    sizes.push(size);
    needed += tensorBytes;
  }
  if (needed !== available) {
    throw new WeightsCodecError(`trailing bytes: ${available - needed} bytes after the last tensor (body should be ${needed} bytes)`);
  }
  return { header, bodyOffset, sizes };
}

/**
 * Refuses a tensor holding NaN or +-Infinity. Large float32 tensors are measured with the SIMD
 * kernel (one pass, ~5x the scalar loop); only a refused tensor pays the scalar search for the index.
 */
function checkFinite(name: string, values: Float32Array | Float64Array, view = false): void {
  // A view (decodeWeightsView) is read-only by contract: its max |x| is remembered for the fold (kernels.ts).
  const ok = values instanceof Float32Array ? (view ? maxAbsF32Remembered(values) : maxAbsF32(values)) < Infinity : firstNonFinite(values) < 0;
  if (ok) return;
  const bad = firstNonFinite(values);
  throw new WeightsCodecError(nonFiniteMessage('decode', name, bad, values[bad]));
}

/** The frame's tensors as fresh arrays (byte copies; DataView reads on a big-endian host). */
function copyTensors(bytes: Uint8Array, frame: CheckedFrame): WeightSet {
  const { header, sizes } = frame;
  const bpe = bytesPerElement(header.dtype);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: NamedTensor[] = new Array(header.tensors.length);
  let offset = frame.bodyOffset;
  for (let index = 0; index < header.tensors.length; index++) {
    const t = header.tensors[index];
    const n = sizes[index];
    const values = header.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
    if (LITTLE_ENDIAN_HOST) {
      // A byte copy into the fresh (hence aligned) array; works whatever the input's alignment is.
      new Uint8Array(values.buffer).set(bytes.subarray(offset, offset + n * bpe));
    } else {
      for (let i = 0; i < n; i++) {
        values[i] = header.dtype === 'float32' ? dv.getFloat32(offset + i * 4, true) : dv.getFloat64(offset + i * 8, true);
      }
    }
    checkFinite(t.name, values);
    out[index] = { name: t.name, shape: t.shape, values };
    offset += n * bpe;
  }
  return out;
}

/**
 * Decodes an FMW1 frame. Every returned tensor owns a fresh Float32Array/Float64Array (matching the
 * frame's dtype), never a view into `bytes`. Throws WeightsCodecError naming the problem.
 */
export function decodeWeights(bytes: Uint8Array, options: DecodeOptions = {}): WeightSet {
  return copyTensors(bytes, checkFrame(bytes, options));
}

/**
 * Decodes an FMW1 frame without copying it: each returned tensor's values are a Float32Array or
 * Float64Array VIEW over `bytes`, so the caller must not change `bytes` while it uses them (and
 * the tensors keep `bytes` alive), nor write into the views: they are read-only, and the
 * accumulator trusts the max |x| their check measured (aggregation/kernels.ts maxAbsF32Known).
 * When the body does not start at a multiple of the element size in `bytes.buffer` (a typed array cannot view unaligned memory), the body is copied once, and on a
 * big-endian host the tensors are decoded as decodeWeights does. Every check of decodeWeights
 * runs: the same frames are refused with the same messages.
 *
 * For the coordinator's hot path: a round's 1M-parameter update is 4 MB that decodeWeights would
 * allocate and copy only for the aggregation to read once.
 */
export function decodeWeightsView(bytes: Uint8Array, options: DecodeOptions = {}): WeightSet {
  const frame = checkFrame(bytes, options);
  if (!LITTLE_ENDIAN_HOST) return copyTensors(bytes, frame);
  const { header, sizes } = frame;
  const bpe = bytesPerElement(header.dtype);
  let buffer: ArrayBufferLike = bytes.buffer;
  let offset = bytes.byteOffset + frame.bodyOffset;
  if (offset % bpe !== 0) {
    // Every tensor's size is a multiple of bpe, so aligning the body start aligns them all.
    buffer = bytes.slice(frame.bodyOffset).buffer;
    offset = 0;
  }
  const out: NamedTensor[] = new Array(header.tensors.length);
  for (let index = 0; index < header.tensors.length; index++) {
    const t = header.tensors[index];
    const n = sizes[index];
    const values = header.dtype === 'float32' ? new Float32Array(buffer, offset, n) : new Float64Array(buffer, offset, n);
    checkFinite(t.name, values, true);
    out[index] = { name: t.name, shape: t.shape, values };
    offset += n * bpe;
  }
  return out;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Collects an async byte stream (e.g. an HTTP request body) into one Uint8Array: chunks are kept
 * as they arrive and copied once at the end. With `maxBytes`, throws WeightsCodecError as soon as
 * the running total goes over the limit (the stream is then abandoned, which destroys Node streams).
 */
export async function readAllBytes(stream: AsyncIterable<Uint8Array>, maxBytes?: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of stream) {
    if (!(chunk instanceof Uint8Array)) {
      throw new WeightsCodecError(`stream yielded a ${typeof chunk} chunk; expected bytes (do not set an encoding on the stream)`);
    }
    total += chunk.length;
    if (maxBytes !== undefined && total > maxBytes) {
      throw new WeightsCodecError(`body is over the limit of ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}
