/**
 * Issue 13: one prepared execution on PGlite, PGlite's own message path (pg-protocol's serializer,
 * its parser, parseResults) against coordinator/db/pglite-protocol.ts (one buffer written, the
 * raw answer read in one pass), on the same statements and the same database, alternating blocks.
 * The statements are shaped as the coordinator's per-request ones: a one-row read of a dozen
 * columns (text, jsonb, timestamptz, bytea, arrays), a 20-row read, and an insert.
 *
 *   npm run bench -- --only pglite
 */
import { PGlite, messages, parse, protocol } from '@electric-sql/pglite';
import { pgliteByteaOptions } from '../coordinator/db/pglite-bytea.ts';
import { executeMessage, readExecution, type DatabaseErrorClass, type WireValue } from '../coordinator/db/pglite-protocol.ts';

export interface PgliteProtocolRow {
  statement: string;
  /** Median milliseconds per execution (Bind..Sync written, executed, answer read) over the blocks. */
  pgliteMs: number;
  oursMs: number;
  /** oursMs / pgliteMs. */
  ratio: number;
}

interface Internals {
  serializers: Record<number, (v: unknown) => WireValue>;
  parsers: Record<number, (v: string, t?: number) => unknown>;
  execProtocolStream(m: Uint8Array, o: { syncToFs?: boolean }): Promise<messages.BackendMessage[]>;
}

const STATEMENTS: Array<{ name: string; text: string; params: (i: number) => unknown[] }> = [
  { name: 'one-row read, 12 columns', text: 'select id, study_id, name, state, data_report, data_report -> $2 as part, seen_at, key, tags, n, score, ok from nodes where id = $1', params: (i) => [`node_${i % 20}`, 'rows'] },
  { name: '20-row read', text: 'select id, name, state, seen_at, n from nodes where study_id = $1 order by id', params: () => ['study_1'] },
  { name: 'insert', text: 'insert into events (node_id, at, data) values ($1, $2, $3)', params: (i) => [`node_${i % 20}`, new Date(1_800_000_000_000 + i), JSON.stringify({ i, kind: 'update.received', bytes: 12956 })] },
];

export async function pgliteProtocolBench(options: { executions?: number; blocks?: number } = {}): Promise<PgliteProtocolRow[]> {
  const executions = options.executions ?? 2000;
  const blocks = options.blocks ?? 5;
  const pg = new PGlite({ ...pgliteByteaOptions });
  await pg.exec(`
    create table nodes (id text primary key, study_id text, name text, state text, data_report jsonb, seen_at timestamptz, key bytea, tags text[], n bigint, score double precision, ok boolean);
    create table events (seq serial primary key, node_id text, at timestamptz, data jsonb);
    insert into nodes select 'node_' || g, 'study_1', 'region-' || g, 'ready', jsonb_build_object('rows', 300 + g, 'columns', 20, 'missing', jsonb_build_object('a', 1)), now(), decode(repeat('ab', 32), 'hex'), array['x', 'y'], g * 1000000000000, g / 3.0, g % 2 = 0 from generate_series(0, 19) g;`);
  const internals = pg as unknown as Internals;
  const DatabaseError = messages.DatabaseError as unknown as DatabaseErrorClass;
  const rows: PgliteProtocolRow[] = [];
  let counter = 0;
  for (const s of STATEMENTS) {
    const name = `b${++counter}`;
    const described = await pg.execProtocol(Buffer.concat([protocol.serialize.parse({ name, text: s.text, types: [] }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync()]));
    const types = parse.parseDescribeStatementResults(described.messages);
    const values = (i: number) => s.params(i).map((v, k) => (v === null ? null : internals.serializers[types[k]] ? internals.serializers[types[k]](v) : String(v)));
    const theirs = async (i: number) => {
      const message = Buffer.concat([protocol.serialize.bind({ statement: name, values: values(i) }), protocol.serialize.describe({ type: 'P' }), protocol.serialize.execute({}), protocol.serialize.sync()]);
      return parse.parseResults(await internals.execProtocolStream(message, { syncToFs: false }), internals.parsers, { rowMode: 'object' })[0];
    };
    const ours = async (i: number) => {
      const chunks: Uint8Array[] = [];
      await pg.execProtocolRawStream(executeMessage(name, values(i)), { syncToFs: false, onRawData: (b) => void chunks.push(b.slice()) });
      return readExecution(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), internals.parsers, DatabaseError);
    };
    const times = { theirs: [] as number[], ours: [] as number[] };
    for (let b = 0; b < blocks + 1; b++) {
      for (const [mode, run] of [['theirs', theirs], ['ours', ours]] as const) {
        const started = performance.now();
        for (let i = 0; i < executions; i++) await run(i);
        // The first block of each is warm-up (JIT, the plan cached).
        if (b > 0) times[mode].push((performance.now() - started) / executions);
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, c) => a - c)[xs.length >> 1];
    const [pgliteMs, oursMs] = [med(times.theirs), med(times.ours)];
    rows.push({ statement: s.name, pgliteMs, oursMs, ratio: oursMs / pgliteMs });
  }
  await pg.close();
  return rows;
}
