/**
 * The wire messages of one prepared-statement execution on PGlite, written and read by hand
 * (issue 13: the coordinator's CPU per round).
 *
 * PGlite speaks PostgreSQL's wire protocol to its WebAssembly backend and reads the answer with
 * pg-protocol's general parser: every field of every row is a fresh ArrayBuffer slice, every
 * private field a WeakMap lookup, and each message an object, before `parseResults` turns the
 * messages into rows. In the 10-node demo that JavaScript was ~25 ms of the coordinator's ~160 ms
 * of CPU per round (profiled: pg-protocol's parser and serializer, PGlite's `parseResults`), more
 * than half as much as PostgreSQL's own work in WebAssembly. The coordinator only ever executes
 * named prepared statements with text results (pglite-prepared.ts), whose answer is a handful of
 * message kinds; here that answer is read in one pass over one Buffer, rows built straight from
 * the row description, and the request written into one buffer.
 *
 * What it produces is what PGlite's path produces: the same `Results` (rows parsed by the same
 * type parsers, `fields`, `command`, `affectedRows`, `rowCount`) and, on failure, PGlite's own
 * `DatabaseError` with PostgreSQL's fields, the first error of the answer as PGlite keeps it.
 * test/coordinator/pglite-protocol.test.ts checks both against PGlite's own path statement by
 * statement. Protocol reference: https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import { Buffer } from 'node:buffer';
import type { Results } from '@electric-sql/pglite';

/** A bound parameter as PGlite's serializers leave it: text, bytes (sent as binary), or null. */
export type WireValue = string | Uint8Array | null;

type Parser = (value: string, typeId: number) => unknown;

/** The constructor of PGlite's DatabaseError (exported by it as `messages.DatabaseError`). */
export type DatabaseErrorClass = new (message: string, length: number, name: 'error') => Error;

const TEXT = 0;
const BINARY = 1;

/** Describe (portal, unnamed) + Execute (unnamed portal, all rows) + Sync: the same bytes every time. */
const TAIL = Buffer.from([0x44, 0, 0, 0, 6, 0x50, 0, 0x45, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0x53, 0, 0, 0, 4]);

/**
 * Bind (unnamed portal, statement `statement`, `values`; results in text) + Describe + Execute +
 * Sync, as one buffer: PGlite's backend reads it in one call. Bytes are bound in binary format,
 * text as UTF-8, null as length -1, exactly as pg-protocol's `bind` does.
 */
export function executeMessage(statement: string, values: readonly WireValue[]): Uint8Array {
  const n = values.length;
  const nameBytes = Buffer.byteLength(statement);
  const sizes = new Array<number>(n);
  let body = 1 + nameBytes + 1 + 2 + 2 * n + 2 + 2; // portal, name, format codes, value count, result formats
  for (let i = 0; i < n; i++) {
    const v = values[i];
    sizes[i] = v === null ? -1 : typeof v === 'string' ? Buffer.byteLength(v) : v.byteLength;
    body += 4 + Math.max(sizes[i], 0);
  }
  const out = Buffer.allocUnsafe(1 + 4 + body + TAIL.length);
  let p = 0;
  out[p++] = 0x42; // 'B'
  p = out.writeInt32BE(4 + body, p);
  out[p++] = 0; // unnamed portal
  p += out.write(statement, p, 'utf8');
  out[p++] = 0;
  // Counts are unsigned 16-bit, as pg-protocol writes them (PostgreSQL takes up to 65535 parameters).
  p = out.writeUInt16BE(n, p);
  for (let i = 0; i < n; i++) p = out.writeInt16BE(values[i] !== null && typeof values[i] !== 'string' ? BINARY : TEXT, p);
  p = out.writeUInt16BE(n, p);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    p = out.writeInt32BE(sizes[i], p);
    if (v === null) continue;
    if (typeof v === 'string') p += out.write(v, p, 'utf8');
    else {
      out.set(v, p);
      p += v.byteLength;
    }
  }
  p = out.writeInt16BE(0, p); // no result format codes: every column in text
  TAIL.copy(out, p);
  return out;
}

/** The fields of an ErrorResponse, by their one-letter codes, as pg-protocol names them. */
const ERROR_FIELDS: Record<string, string> = { S: 'severity', C: 'code', D: 'detail', H: 'hint', P: 'position', p: 'internalPosition', q: 'internalQuery', W: 'where', s: 'schema', t: 'table', c: 'column', d: 'dataType', n: 'constraint', F: 'file', L: 'line', R: 'routine' };

/**
 * Reads the backend's answer to `executeMessage`: the result, or PostgreSQL's first error
 * (thrown as PGlite's DatabaseError). `parsers` are PGlite's type parsers by type OID; a column
 * of a type without one stays text, as in PGlite.
 */
export function readExecution<T>(answer: Uint8Array, parsers: Record<number | string, Parser>, DatabaseError: DatabaseErrorClass): Results<T> {
  const buf = Buffer.from(answer.buffer, answer.byteOffset, answer.byteLength);
  let names: string[] = [];
  let columnParsers: Array<Parser | undefined> = [];
  let types: number[] = [];
  let fields: Array<{ name: string; dataTypeID: number }> = [];
  let rows: Record<string, unknown>[] = [];
  let result: Results<T> | undefined;
  let protoColumn = false;
  let error: Error | undefined;
  for (let at = 0; at < buf.length; ) {
    if (at + 5 > buf.length) throw new Error(`PGlite answer: a message header at ${at} runs past the ${buf.length} bytes received`);
    const code = buf[at];
    const length = buf.readInt32BE(at + 1);
    const end = at + 1 + length;
    // The backend is PGlite's own, in this process; a message it cut short is still refused, not read past.
    if (length < 4 || end > buf.length) throw new Error(`PGlite answer: message '${String.fromCharCode(code)}' of length ${length} at ${at} runs past the ${buf.length} bytes received`);
    let p = at + 5;
    switch (code) {
      case 0x54: {
        // RowDescription: name, table OID, column number, type OID, type size, type modifier, format
        const count = buf.readInt16BE(p);
        p += 2;
        names = new Array(count);
        types = new Array(count);
        columnParsers = new Array(count);
        fields = new Array(count);
        for (let i = 0; i < count; i++) {
          const nul = nulBefore(buf, p, end);
          names[i] = buf.toString('utf8', p, nul);
          types[i] = buf.readInt32BE(nul + 7);
          columnParsers[i] = parsers[types[i]];
          fields[i] = { name: names[i], dataTypeID: types[i] };
          p = nul + 19;
        }
        protoColumn = names.includes('__proto__');
        break;
      }
      case 0x44: {
        // DataRow: each value's length (-1: null) and text
        const count = buf.readInt16BE(p);
        p += 2;
        const row: Record<string, unknown> = {};
        for (let i = 0; i < count; i++) {
          const length = buf.readInt32BE(p);
          p += 4;
          if (length < 0) {
            row[names[i]] = null;
            continue;
          }
          // A leading byte order mark is dropped, as PGlite's TextDecoder drops it.
          const text = buf.toString('utf8', length >= 3 && buf[p] === 0xef && buf[p + 1] === 0xbb && buf[p + 2] === 0xbf ? p + 3 : p, p + length);
          p += length;
          const parse = columnParsers[i];
          row[names[i]] = parse ? parse(text, types[i]) : text;
        }
        // A column named __proto__ set the prototype above; PGlite's Object.fromEntries makes it a field.
        rows.push(protoColumn ? Object.fromEntries(names.map((name, i) => [name, name === '__proto__' ? protoValue(buf, at + 7, types[i], columnParsers[i], i) : row[name]])) : row);
        break;
      }
      case 0x43: {
        // CommandComplete: "SELECT 2", "INSERT 0 5", "UPDATE 3", ...; PGlite's parseResults reads it so
        const text = buf.toString('utf8', p, nulBefore(buf, p, end));
        const parts = text.split(' ');
        const command = parts[0];
        const rowCount = parseInt(parts[parts.length - 1], 10);
        const affected = command === 'INSERT' || command === 'UPDATE' || command === 'DELETE' || command === 'COPY' || command === 'MERGE' ? rowCount : 0;
        result ??= { rows: rows as T[], fields, command, affectedRows: affected, ...(Number.isNaN(rowCount) ? {} : { rowCount }) } as Results<T>;
        rows = [];
        fields = [];
        break;
      }
      case 0x45: {
        // ErrorResponse: PGlite keeps the first
        if (!error) error = readError(buf, p, end, DatabaseError);
        break;
      }
      // BindComplete, NoData, ReadyForQuery, NoticeResponse, ...: nothing to take
    }
    at = end;
  }
  if (error) throw error;
  return result ?? ({ rows: [], fields: [], affectedRows: 0 } as Results<T>);
}

/** Column `index`'s value in the DataRow whose fields start at `from` (the rare __proto__ column, read again). */
function protoValue(buf: Buffer, from: number, type: number, parse: Parser | undefined, index: number): unknown {
  let p = from;
  for (let i = 0; i < index; i++) p += 4 + Math.max(buf.readInt32BE(p), 0);
  const length = buf.readInt32BE(p);
  if (length < 0) return null;
  const text = buf.toString('utf8', p + 4, p + 4 + length);
  return parse ? parse(text, type) : text;
}

/** The NUL ending the C string at `from`, within its message; throws when the message has none. */
function nulBefore(buf: Buffer, from: number, end: number): number {
  const nul = buf.indexOf(0, from);
  if (nul < 0 || nul >= end) throw new Error(`PGlite answer: a string at ${from} is not terminated within its message`);
  return nul;
}

function readError(buf: Buffer, from: number, end: number, DatabaseError: DatabaseErrorClass): Error {
  const values: Record<string, string> = {};
  let p = from;
  while (p < end && buf[p] !== 0) {
    const type = String.fromCharCode(buf[p]);
    const nul = nulBefore(buf, p + 1, end);
    values[type] = buf.toString('utf8', p + 1, nul);
    p = nul + 1;
  }
  const err = new DatabaseError(values.M, end - from + 4, 'error');
  for (const [letter, name] of Object.entries(ERROR_FIELDS)) (err as unknown as Record<string, unknown>)[name] = values[letter];
  return err;
}
