/**
 * Fast bytea conversion for PGlite.
 *
 * Parameters: a bytea parameter is bound in PostgreSQL's binary format (`bindBytea`), the bytes
 * themselves: PGlite's protocol writer (pg-protocol's bind) sends any ArrayBuffer view it is given
 * as a binary parameter, which bytea's binary input copies as is. Issue 13: persisting one
 * 1M-parameter update (4 MB) took ~0.18 s with the hex text below (8 MB of hex built in JS, then
 * parsed back to bytes inside the WASM PostgreSQL) and ~0.03 s bound as binary (measured on the
 * idle 2-core machine, 8 inserts each: 170-340 ms CPU hex, 23-55 ms binary).
 *
 * Results stay text (PGlite asks for every result column in text format), parsed by `parseBytea`.
 * PGlite's built-in bytea conversions build the hex form one byte at a time (`Array.from(bytes).map(b => b.toString(16).padStart(2, '0')).join('')`)
 * and its parser calls `parseInt` per byte: about 6.7 s to write and 2.5 s to read an 8 MB round
 * state (a 1M-parameter model's float64 running sum) on this project's 2-core machine. Node's
 * Buffer does the same hex conversion natively in milliseconds. The wire text is the same
 * (`\x` followed by lower-case hex), so this changes speed only, never what is stored.
 */
import { Buffer } from 'node:buffer';

/** PostgreSQL's type OID of bytea (pg_type.oid). */
export const BYTEA_OID = 17;

/**
 * A bytea parameter as itself: bound in binary format (see above). Refuses anything that is not
 * bytes, as the text form does, rather than binding some other view's memory.
 */
export function bindBytea(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`bytea parameter must be a Uint8Array, got ${typeof value}`);
  return value;
}

/** The hex text form of a bytea parameter (PostgreSQL's bytea_output = 'hex'). */
export function serializeBytea(value: unknown): string {
  if (!(value instanceof Uint8Array)) throw new TypeError(`bytea parameter must be a Uint8Array, got ${typeof value}`);
  return '\\x' + Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex');
}

export function parseBytea(text: string): Uint8Array {
  // bytea_output = 'hex' is PostgreSQL's default (and PGlite's); the legacy escape format never
  // reaches us because we never change that setting.
  if (!text.startsWith('\\x')) throw new TypeError('bytea value is not in hex output format');
  const hex = text.slice(2);
  // Buffer's hex decoding stops at the first pair that is not hex, so a short result is the
  // validity check: no separate scan of the text (a regular expression over the 8 MB of hex of a
  // 4 MB update cost ~85 ms, half as much as the decoding itself; issue 13).
  const buffer = Buffer.from(hex, 'hex');
  if (hex.length % 2 !== 0 || buffer.length * 2 !== hex.length) throw new TypeError('bytea value is not valid hex');
  // A plain Uint8Array over exactly these bytes, as PGlite's own parser returns.
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * PGlite constructor options that install the two conversions. PGlite types a serializer as
 * returning a string; its bind passes a returned view through as a binary parameter.
 */
export const pgliteByteaOptions = {
  serializers: { [BYTEA_OID]: bindBytea as unknown as (value: unknown) => string },
  parsers: { [BYTEA_OID]: parseBytea },
};
