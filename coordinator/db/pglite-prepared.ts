/**
 * Named prepared statements for PGlite (issue 13: the coordinator's CPU per round).
 *
 * PGlite's `query()` runs every statement as a fresh unnamed one, in six calls into the
 * WebAssembly PostgreSQL: Parse, Describe (statement), Bind, Describe (portal), Execute, Sync. So
 * each execution is parsed, analysed and planned again, and pays five extra entries into the
 * backend's main loop. The coordinator runs the same few dozen statement texts thousands of
 * times (kysely compiles a query to the same text with `$n` parameters whatever the values), and
 * PGlite was about half its CPU in the demo. Here a statement text is prepared once under a name
 * (Parse + Describe, its parameter types remembered), and every later execution is ONE call with
 * Bind + Describe + Execute + Sync, PostgreSQL reusing the statement (and, after its first five
 * executions, a generic plan when that costs no more: `plan_cache_mode` auto). Measured on the
 * demo's update-intake read: 0.43-0.77 ms per execution before, 0.06-0.12 ms after; an insert
 * 0.17 -> 0.10 ms (.scratch benchmark, summarised in the closing note of stop 15).
 *
 * An execution's wire messages are written and its answer read by hand (pglite-protocol.ts: the
 * same bytes as pg-protocol's, the same results as PGlite's parser and parseResults, with less
 * than half the JavaScript).
 *
 * What does not change: the SQL, its parameters and their serialisation (PGlite's own
 * serializers by the described parameter type, bytea bound as binary: pglite-bytea.ts), the
 * result values (PGlite's type parsers), the locking (PGlite's transaction and
 * query mutexes, taken as its own `query` takes them), errors (PostgreSQL's, with the query and
 * parameters attached as PGlite attaches them), and syncing to the file system after a statement
 * outside a transaction. Only data statements (select, insert, update, delete, with) are
 * prepared; anything else (transaction control, savepoints, DDL, vacuum) and any call with
 * per-query options goes through PGlite's `query` unchanged.
 *
 * A prepared statement's result shape is fixed: PostgreSQL refuses to run one whose table gained
 * a column since ("cached plan must not change result type", 0A000). Migrations run before this
 * is turned on (database.ts), and a statement refused that way is forgotten and run unprepared.
 * Protocol-level prepared statements live as long as the session, not a transaction, so a
 * rollback does not lose them; at most MAX_STATEMENTS are kept, the least recently used closed.
 */
import { messages, protocol, type PGlite, type QueryOptions, type Results, type Transaction } from '@electric-sql/pglite';
import { executeMessage, readExecution, type DatabaseErrorClass, type WireValue } from './pglite-protocol.ts';

const { serialize } = protocol;

/** Statements that may be prepared: plain data statements. */
const PREPARABLE = /^\s*(select|insert|update|delete|with)\b/i;

/** Prepared statements kept per session (the coordinator uses well under 200 texts). */
export const MAX_STATEMENTS = 500;

/** "cached plan must not change result type": a table of a prepared `select *` changed. */
const PLAN_RESULT_CHANGED = '0A000';

/** What of PGlite's internals this uses (public in its class, not in its interface type). */
interface PGliteInternals {
  serializers: Record<number | string, (value: unknown) => unknown>;
  parsers: Record<number | string, (value: string, typeId?: number) => unknown>;
  execProtocolStream(message: Uint8Array, options: { syncToFs?: boolean }): Promise<messages.BackendMessage[]>;
  execProtocolRawStream(message: Uint8Array, options: { syncToFs?: boolean; onRawData: (bytes: Uint8Array) => void }): Promise<void>;
  syncToFs(): Promise<void>;
  _checkReady(): Promise<void>;
  _runExclusiveQuery<T>(fn: () => Promise<T>): Promise<T>;
  _runExclusiveTransaction<T>(fn: () => Promise<T>): Promise<T>;
}

interface Prepared {
  name: string;
  /** Parameter type OIDs, as PostgreSQL inferred them when the statement was prepared. */
  types: number[];
}

type Query = <T>(text: string, params?: unknown[], options?: QueryOptions) => Promise<Results<T>>;

/** Counts of what ran prepared, for tests and the query-stats debug file. */
export interface PreparedStats {
  prepared: number;
  executed: number;
  unprepared: number;
}

/**
 * Makes `pglite.query`, and the `query` of every transaction `pglite.transaction` hands out, run
 * data statements as named prepared statements. Returns counters.
 *
 * @example
 *   const stats = usePreparedStatements(pglite); // after migrations
 *   await pglite.query('select * from studies where id = $1', [id]); // prepared once, then reused
 */
export function usePreparedStatements(pglite: PGlite): PreparedStats {
  const pg = pglite as unknown as PGliteInternals;
  const statements = new Map<string, Prepared>();
  const stats: PreparedStats = { prepared: 0, executed: 0, unprepared: 0 };
  let counter = 0;

  /** Parses and describes `text` under a new name; closes the least recently used one past the limit. Under the query mutex. */
  async function prepare(text: string): Promise<Prepared> {
    const name = `fedmark_${++counter}`;
    const evicted = statements.size >= MAX_STATEMENTS ? statements.keys().next().value : undefined;
    const parts = [serialize.parse({ name, text, types: [] }), serialize.describe({ type: 'S', name })];
    if (evicted !== undefined) parts.push(serialize.close({ type: 'S', name: statements.get(evicted)!.name }));
    const answer = await pg.execProtocolStream(concat([...parts, serialize.sync()]), { syncToFs: false });
    if (evicted !== undefined) statements.delete(evicted);
    const description = answer.find((m): m is messages.ParameterDescriptionMessage => m.name === 'parameterDescription');
    const prepared = { name, types: description?.dataTypeIDs ?? [] };
    statements.set(text, prepared);
    stats.prepared++;
    return prepared;
  }

  /** One execution: Bind + Describe + Execute + Sync in a single call. Under the query mutex. */
  async function execute<T>(text: string, params: unknown[]): Promise<Results<T>> {
    let statement = statements.get(text);
    if (statement) {
      // Most recently used last: the map's first key is the one to close.
      statements.delete(text);
      statements.set(text, statement);
    } else {
      statement = await prepare(text);
    }
    const values = params.map((value, i): WireValue => {
      if (value === null || value === undefined) return null;
      const serializer = pg.serializers[statement!.types[i]];
      const serialized = serializer ? serializer(value) : String(value);
      if (typeof serialized === 'string' || serialized instanceof Uint8Array) return serialized;
      // Bytes in any other form are bound as binary too, as pg-protocol binds them.
      if (ArrayBuffer.isView(serialized)) return new Uint8Array(serialized.buffer, serialized.byteOffset, serialized.byteLength);
      if (serialized instanceof ArrayBuffer) return new Uint8Array(serialized);
      return String(serialized);
    });
    // Written and read by hand (pglite-protocol.ts): the raw answer, not PGlite's message objects.
    const chunks: Uint8Array[] = [];
    await pg.execProtocolRawStream(executeMessage(statement.name, values), { syncToFs: false, onRawData: (bytes) => void chunks.push(bytes.slice()) });
    stats.executed++;
    return readExecution<T>(chunks.length === 1 ? chunks[0] : concat(chunks), pg.parsers, messages.DatabaseError as unknown as DatabaseErrorClass);
  }

  /**
   * Runs `text` prepared. A statement whose plan's result shape changed is closed and forgotten:
   * outside a transaction the answer is then undefined (the caller runs it unprepared), inside one
   * the error stands (the transaction is aborted by it either way; retried, it prepares afresh).
   */
  async function run<T>(text: string, params: unknown[], inTransaction: boolean): Promise<Results<T> | undefined> {
    try {
      return await pg._runExclusiveQuery(async () => {
        const result = await execute<T>(text, params);
        if (!inTransaction) await pg.syncToFs();
        return result;
      });
    } catch (err) {
      if (err instanceof messages.DatabaseError) {
        const stale = err.code === PLAN_RESULT_CHANGED ? statements.get(text) : undefined;
        if (stale) {
          statements.delete(text);
          // Closed at once (a Close is allowed in an aborted transaction), not left in the session.
          await pg._runExclusiveQuery(() => pg.execProtocolStream(concat([serialize.close({ type: 'S', name: stale.name }), serialize.sync()]), { syncToFs: false }));
          if (!inTransaction) {
            stats.unprepared++;
            return undefined;
          }
        }
        Object.assign(err, { query: text, params, queryOptions: undefined });
      }
      throw err;
    }
  }

  const preparable = (text: string, options?: QueryOptions) => PREPARABLE.test(text) && (options === undefined || onlyRowModeObject(options));

  const query: Query = pglite.query.bind(pglite);
  pglite.query = (async <T>(text: string, params: unknown[] = [], options?: QueryOptions): Promise<Results<T>> => {
    if (!preparable(text, options)) {
      stats.unprepared++;
      return query<T>(text, params, options);
    }
    await pg._checkReady();
    // As PGlite's own query: outside any transaction (a statement waits for one to finish).
    const result = await pg._runExclusiveTransaction(() => run<T>(text, params, false));
    return result ?? query<T>(text, params, options);
  }) as typeof pglite.query;

  const transaction = pglite.transaction.bind(pglite);
  pglite.transaction = (<T>(fn: (tx: Transaction) => Promise<T>) =>
    transaction((tx) => {
      const txQuery: Query = tx.query.bind(tx);
      tx.query = (async <R>(text: string, params: unknown[] = [], options?: QueryOptions): Promise<Results<R>> => {
        if (tx.closed) throw new Error('Transaction is closed');
        if (!preparable(text, options)) {
          stats.unprepared++;
          return txQuery<R>(text, params, options);
        }
        return (await run<R>(text, params, true))!; // in a transaction a stale statement throws
      }) as Transaction['query'];
      return fn(tx);
    })) as typeof pglite.transaction;

  return stats;
}

/** Options this path honours: none, or the object rows kysely asks for. */
function onlyRowModeObject(options: QueryOptions): boolean {
  const keys = Object.keys(options);
  return keys.every((k) => k === 'rowMode') && (options.rowMode === undefined || options.rowMode === 'object');
}

/** The messages as one buffer: PostgreSQL's main loop reads them in one call. */
const concat = (parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);
