import { z } from 'zod';
import { describeSpecMismatch, specsOf, type WeightSet } from '../tensors.ts';
import { decodeWeights, encodeWeights } from '../weights-codec.ts';
import type { ServerState } from './strategy.ts';

/**
 * Persisted server state, format "FMS1" (little-endian):
 *   offset 0   4 bytes  magic "FMS1"
 *   offset 4   uint32   H = byte length of the JSON header
 *   offset 8   H bytes  UTF-8 JSON header:
 *                         { "v": 1, "scalars": [names...],
 *                           "tensors": [ { "name", "specs": [{name, shape}...], "bytes" }... ] }
 *              zero padding to an 8-byte boundary
 *   then       one float64 per scalar, in header order (binary, so -0 and every double survive)
 *   then       for each named weight set, an FMW1 frame (weights-codec.ts) of dtype float64 and
 *              `bytes` bytes, in header order. The state ends exactly there.
 *
 * Scalars and tensor values must be finite. decode(encode(s)) gives back every scalar and every
 * value bit for bit (tensor values come back as Float64Array).
 */
export class ServerStateError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ServerStateError';
  }
}

const MAGIC = [0x46, 0x4d, 0x53, 0x31] as const; // "FMS1"
const PREFIX_BYTES = 8;

const Header = z.strictObject({
  v: z.literal(1),
  scalars: z.array(z.string().min(1)),
  tensors: z.array(
    z.strictObject({
      name: z.string().min(1),
      specs: z.array(z.strictObject({ name: z.string().min(1), shape: z.array(z.number().int().nonnegative()) })),
      bytes: z.number().int().nonnegative(),
    }),
  ),
});

const align8 = (n: number) => (n + 7) & ~7;

export function emptyServerState(): ServerState {
  return { scalars: {}, tensors: {} };
}

/** A deep copy (tensor values copied as Float64Array). */
export function cloneServerState(state: ServerState): ServerState {
  const tensors: Record<string, WeightSet> = {};
  for (const [name, ws] of Object.entries(state.tensors)) tensors[name] = ws.map((t) => ({ name: t.name, shape: [...t.shape], values: Float64Array.from(t.values) }));
  return { scalars: { ...state.scalars }, tensors };
}

export function encodeServerState(state: ServerState): Uint8Array {
  if (state === null || typeof state !== 'object' || typeof state.scalars !== 'object' || typeof state.tensors !== 'object' || state.scalars === null || state.tensors === null) {
    throw new ServerStateError('server state must be { scalars, tensors }');
  }
  const scalarNames = Object.keys(state.scalars);
  for (const name of scalarNames) {
    const v = state.scalars[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ServerStateError(`server state: scalar "${name}" must be a finite number, got ${String(v)}`);
  }
  const frames: Uint8Array[] = [];
  const tensors: z.infer<typeof Header>['tensors'] = [];
  for (const [name, ws] of Object.entries(state.tensors)) {
    let frame: Uint8Array;
    try {
      frame = encodeWeights(ws, 'float64');
    } catch (err) {
      throw new ServerStateError(`server state: tensors "${name}": ${(err as Error).message}`, { cause: err });
    }
    frames.push(frame);
    tensors.push({ name, specs: specsOf(ws), bytes: frame.length });
  }
  const header = new TextEncoder().encode(JSON.stringify({ v: 1, scalars: scalarNames, tensors }));
  const scalarsOffset = align8(PREFIX_BYTES + header.length);
  let total = scalarsOffset + 8 * scalarNames.length;
  for (const f of frames) total += f.length;
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(4, header.length, true);
  out.set(header, PREFIX_BYTES);
  scalarNames.forEach((name, i) => dv.setFloat64(scalarsOffset + 8 * i, state.scalars[name], true));
  let offset = scalarsOffset + 8 * scalarNames.length;
  for (const f of frames) {
    out.set(f, offset);
    offset += f.length;
  }
  return out;
}

/** Inverse of encodeServerState; throws ServerStateError naming the problem on malformed bytes. */
export function decodeServerState(bytes: Uint8Array): ServerState {
  if (!(bytes instanceof Uint8Array)) throw new ServerStateError('server state must be a Uint8Array');
  if (bytes.length < PREFIX_BYTES) throw new ServerStateError(`server state is truncated: ${bytes.length} bytes`);
  for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) throw new ServerStateError('server state has a bad magic (expected "FMS1")');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = dv.getUint32(4, true);
  if (PREFIX_BYTES + headerLength > bytes.length) throw new ServerStateError(`server state is truncated: header of ${headerLength} bytes in ${bytes.length}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength)));
  } catch (err) {
    throw new ServerStateError(`server state header is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const result = Header.safeParse(parsed);
  if (!result.success) throw new ServerStateError(`server state header is malformed: ${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const header = result.data;
  if (new Set(header.scalars).size !== header.scalars.length) throw new ServerStateError('server state: duplicate scalar name');
  if (new Set(header.tensors.map((t) => t.name)).size !== header.tensors.length) throw new ServerStateError('server state: duplicate tensors name');
  const headerEnd = PREFIX_BYTES + headerLength;
  const scalarsOffset = align8(headerEnd);
  for (let i = headerEnd; i < Math.min(scalarsOffset, bytes.length); i++) if (bytes[i] !== 0) throw new ServerStateError(`server state: padding byte at ${i} is not 0`);
  let needed = scalarsOffset + 8 * header.scalars.length;
  for (const t of header.tensors) needed += t.bytes;
  if (needed !== bytes.length) throw new ServerStateError(`server state is ${bytes.length} bytes, its header describes ${needed}`);
  const scalars: Record<string, number> = {};
  header.scalars.forEach((name, i) => {
    const v = dv.getFloat64(scalarsOffset + 8 * i, true);
    if (!Number.isFinite(v)) throw new ServerStateError(`server state: scalar "${name}" is not finite`);
    scalars[name] = v;
  });
  const tensors: Record<string, WeightSet> = {};
  let offset = scalarsOffset + 8 * header.scalars.length;
  for (const t of header.tensors) {
    let ws: WeightSet;
    try {
      ws = decodeWeights(bytes.subarray(offset, offset + t.bytes), { dtype: 'float64', expected: t.specs });
    } catch (err) {
      throw new ServerStateError(`server state: tensors "${t.name}": ${(err as Error).message}`, { cause: err });
    }
    // The frame's order must be the header's order (decodeWeights matches by name only).
    if (ws.some((x, i) => x.name !== t.specs[i].name)) throw new ServerStateError(`server state: tensors "${t.name}" are out of the header's order`);
    tensors[t.name] = ws;
    offset += t.bytes;
  }
  return { scalars, tensors };
}

/** Null when `ws` has exactly the global model's tensors and shapes, else the problem. */
export function describeStateMismatch(global: WeightSet, ws: WeightSet): string | null {
  return describeSpecMismatch(specsOf(global), specsOf(ws));
}
