import { PGlite, messages, parse, protocol } from '@electric-sql/pglite';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgliteByteaOptions } from '../../coordinator/db/pglite-bytea.ts';
import { executeMessage, readExecution, type DatabaseErrorClass, type WireValue } from '../../coordinator/db/pglite-protocol.ts';

/**
 * coordinator/db/pglite-protocol.ts (issue 13): the hand-written request and answer of a prepared
 * execution must be byte for byte what pg-protocol writes, and read into exactly what PGlite's own
 * parser and parseResults make of the same answer (rows, types, counts, errors), on a real PGlite.
 */
const DatabaseError = messages.DatabaseError as unknown as DatabaseErrorClass;

/** pg-protocol's Bind + Describe + Execute + Sync, as PGlite's path builds them. */
function referenceMessage(statement: string, values: WireValue[]): Uint8Array {
  const { serialize } = protocol;
  return Buffer.concat([serialize.bind({ statement, values }), serialize.describe({ type: 'P' }), serialize.execute({}), serialize.sync()]);
}

describe('executeMessage', () => {
  it('writes the bytes pg-protocol writes, for any statement name and text, bytes and null values', () => {
    const value = fc.oneof(fc.constant(null), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.uint8Array({ maxLength: 64 }));
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\0')), fc.array(value, { maxLength: 12 }), (name, values) => {
        expect(Buffer.from(executeMessage(name, values)).equals(Buffer.from(referenceMessage(name, values)))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('binds a 4 MB update in one buffer, the bytes unchanged', () => {
    const big = new Uint8Array(4 << 20).map((_, i) => i * 7);
    const message = Buffer.from(executeMessage('s', ['x', big]));
    expect(message.equals(Buffer.from(referenceMessage('s', ['x', big])))).toBe(true);
  });
});

describe('readExecution against PGlite\'s own parser', () => {
  let pg: PGlite;
  let counter = 0;

  beforeAll(async () => {
    pg = new PGlite({ ...pgliteByteaOptions });
    await pg.exec(`
      create table t (id text primary key, n bigint, i int, doc jsonb, js json, at timestamptz, d date, raw bytea, tags text[], score double precision, ok boolean, price numeric, check (i is null or i >= 0));
      create unique index t_n on t (n);`);
  });
  afterAll(async () => {
    await pg.close();
  });

  /** Prepares `text`, executes it once with `params` and returns the raw answer. */
  async function answerOf(text: string, params: unknown[]): Promise<Uint8Array> {
    const name = `p${++counter}`;
    const described = await pg.execProtocol(Buffer.concat([protocol.serialize.parse({ name, text, types: [] }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync()]));
    const types = parse.parseDescribeStatementResults(described.messages);
    const serializers = (pg as unknown as { serializers: Record<number, (v: unknown) => WireValue> }).serializers;
    const values = params.map((v, i) => (v === null || v === undefined ? null : serializers[types[i]] ? serializers[types[i]](v) : String(v)));
    const chunks: Uint8Array[] = [];
    await pg.execProtocolRawStream(executeMessage(name, values), { syncToFs: false, onRawData: (b) => void chunks.push(b.slice()) });
    return Buffer.concat(chunks);
  }

  const parsers = () => (pg as unknown as { parsers: Record<number, (v: string, t?: number) => unknown> }).parsers;

  /** What PGlite's path makes of an answer: its Parser's messages, then parseResults (or the first error). */
  function reference(answer: Uint8Array) {
    const found: messages.BackendMessage[] = [];
    new protocol.Parser().parse(answer, (m) => void found.push(m));
    const error = found.find((m) => m instanceof messages.DatabaseError);
    if (error) return { error };
    return { result: parse.parseResults(found, parsers(), { rowMode: 'object' })[0] };
  }

  function ours(answer: Uint8Array) {
    try {
      return { result: readExecution(answer, parsers(), DatabaseError) };
    } catch (error) {
      return { error };
    }
  }

  const same = async (text: string, params: unknown[]) => {
    const answer = await answerOf(text, params);
    const [a, b] = [ours(answer), reference(answer)];
    expect(a).toEqual(b);
    if (b.error) {
      expect(a.error).toBeInstanceOf(messages.DatabaseError);
      expect({ ...(a.error as object) }).toEqual({ ...(b.error as object) });
    }
    return b;
  };

  it('inserts, updates and deletes: affected rows, command, returning rows', async () => {
    const insert = 'insert into t (id, n, i, doc, js, at, d, raw, tags, score, ok, price) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning id, n, raw';
    for (let k = 0; k < 5; k++) {
      const r = await same(insert, [`id ${k} é ✓`, 10n ** 15n + BigInt(k), k, { k, nested: [1, 'two', null] }, { a: k }, new Date(Date.UTC(2026, 11, 4, k)), '2026-12-04', new Uint8Array([k, 0, 255]), ['a', `b${k}`, ''], k / 3, k % 2 === 0, '12.50']);
      expect(r.result?.affectedRows).toBe(1);
    }
    await same('update t set score = $1 where i >= $2', [1.5, 2]);
    await same('delete from t where i = $1 returning id', [4]);
    expect((await same('update t set score = $1 where id = $2', [0, 'none'])).result?.affectedRows).toBe(0);
  });

  it('selects: every column type the coordinator reads, nulls, unicode, many rows and none', async () => {
    await same('select * from t order by id', []);
    await same('select id, doc -> $1 as part, tags[1] as first, null::text as nothing, n::text as n_text from t where id like $2 order by n', ['nested', 'id%']);
    await same('select count(*) as c, max(at) as last, array_agg(raw order by id) as raws from t', []);
    await same('select id from t where false', []);
    await same('select g, repeat($1, g) as s from generate_series(1, 300) g', ['ÿ✓']);
  });

  it('errors: PostgreSQL\'s fields (code, constraint, table, detail, ...) exactly as PGlite reads them', async () => {
    const dup = await same('insert into t (id, n) values ($1, $2)', ['id 0 é ✓', 1]);
    expect(dup.error).toMatchObject({ code: '23505', table: 't' });
    expect((await same('insert into t (id, n) values ($1, $2)', ['new', 10n ** 15n])).error).toMatchObject({ code: '23505', constraint: 't_n' });
    expect((await same('insert into t (id, i) values ($1, $2)', ['neg', -1])).error).toMatchObject({ code: '23514' });
    expect((await same('select 1 / $1::int as x', [0])).error).toMatchObject({ code: '22012' });
  });

  it('edge values: a leading byte order mark (dropped, as PGlite drops it), a column named __proto__, 40,000 parameters', async () => {
    await same('select $1::text as bom, $2::text as plain', ['\uFEFFx', 'x\uFEFF']);
    const proto = await same('select 1 as a, $1::text as "__proto__", 2 as b', ['p']);
    expect(Object.getPrototypeOf(proto.result!.rows[0])).toBe(Object.prototype);
    expect(Object.keys(proto.result!.rows[0] as object)).toEqual(['a', '__proto__', 'b']);
    const many = Array.from({ length: 40_000 }, (_, i) => String(i));
    expect(Buffer.from(executeMessage('s', many)).equals(Buffer.from(referenceMessage('s', many)))).toBe(true);
  });

  it('refuses an answer cut short or a string without its end, rather than reading past it', async () => {
    const answer = Buffer.from(await answerOf('select $1::text as t', ['abc']));
    expect(() => readExecution(answer.subarray(0, answer.length - 3), parsers(), DatabaseError)).toThrow(/runs past/);
    const broken = Buffer.from(answer);
    broken.writeInt32BE(2, 1); // a message length below its own 4 bytes
    expect(() => readExecution(broken, parsers(), DatabaseError)).toThrow(/runs past|length/);
  });

  it('random text and bytes come back as they went in', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'grapheme', maxLength: 60 }), fc.uint8Array({ maxLength: 80 }), async (text, bytes) => {
        const r = await same('select $1::text as text, $2::bytea as bytes, length($1::text) as n', [text, bytes]);
        const row = r.result?.rows[0] as { text: string; bytes: Uint8Array };
        expect(row.text).toBe(text);
        expect(Buffer.from(row.bytes).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });
});
