import { PGlite } from '@electric-sql/pglite';
import { Kysely, PGliteDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgliteByteaOptions } from '../../coordinator/db/pglite-bytea.ts';
import { MAX_STATEMENTS, usePreparedStatements, type PreparedStats } from '../../coordinator/db/pglite-prepared.ts';

/**
 * coordinator/db/pglite-prepared.ts (issue 13): PGlite's data statements run as named prepared
 * statements, with the same results, errors, transactions and type conversions as PGlite's own
 * `query`. Against a real PGlite; PostgreSQL's pg_prepared_statements shows they are prepared.
 */
describe('PGlite statements run prepared', () => {
  let pg: PGlite;
  let plain: PGlite;
  let stats: PreparedStats;
  let db: Kysely<any>;

  beforeAll(async () => {
    pg = new PGlite({ ...pgliteByteaOptions });
    plain = new PGlite({ ...pgliteByteaOptions });
    const schema = `create table t (id text primary key, n bigint, doc jsonb, at timestamptz, raw bytea, tags text[], score double precision);`;
    await pg.exec(schema);
    await plain.exec(schema);
    stats = usePreparedStatements(pg);
    db = new Kysely({ dialect: new PGliteDialect({ pglite: pg }) });
  });
  afterAll(async () => {
    await db.destroy();
    await plain.close();
  });

  const row = (i: number) => [`id${i}`, 10n ** 12n + BigInt(i), { i, nested: { ok: true } }, new Date(Date.UTC(2026, 11, 3, 9, i)), new Uint8Array([i, 0, 255, 7]), ['a', `b${i}`], i / 3];
  const insert = 'insert into t (id, n, doc, at, raw, tags, score) values ($1, $2, $3, $4, $5, $6, $7)';
  const select = `select id, n, doc, at, raw, tags, score, doc -> 'nested' as nested from t where id = any($1::text[]) or n = $2 order by id`;

  it('prepares each text once, reuses it, and answers exactly as the unprepared path does (every type the coordinator binds)', async () => {
    for (let i = 0; i < 6; i++) {
      await pg.query(insert, row(i));
      await plain.query(insert, row(i));
    }
    const params = [['id1', 'id4'], String(10n ** 12n + 5n)];
    for (let k = 0; k < 8; k++) {
      const [a, b] = [await pg.query(select, params), await plain.query(select, params)];
      expect(a.rows).toEqual(b.rows);
      expect(a.fields).toEqual(b.fields);
    }
    const named = await plain.query('select 1'); // (the plain instance prepares nothing)
    expect(named.rows).toHaveLength(1);
    const statements = (await pg.query<{ name: string; statement: string }>('select name, statement from pg_prepared_statements order by name')).rows;
    expect(statements.map((s) => s.statement)).toEqual(expect.arrayContaining([insert, select]));
    expect(statements.filter((s) => s.statement === select)).toHaveLength(1);
    expect(stats.executed).toBeGreaterThanOrEqual(6 + 8);
    // An update's affected-row count, as kysely reads it.
    const updated = await pg.query('update t set score = $1 where id like $2', [0.5, 'id%']);
    expect(updated.affectedRows).toBe(6);
    expect(await pg.query('select count(*)::int as c from t where score = $1', [0.5])).toMatchObject({ rows: [{ c: 6 }] });
  });

  it('a failing statement raises PostgreSQL\'s error with its query, and the session goes on', async () => {
    const err = (await pg.query(insert, row(1)).catch((e: unknown) => e)) as { code?: string; query?: string; message: string };
    expect(err.code).toBe('23505');
    expect(err.query).toBe(insert);
    expect((await pg.query('select count(*)::int as c from t where id = $1', ['id1'])).rows).toEqual([{ c: 1 }]);
  });

  it('transactions through kysely: committed writes stay, a failed transaction leaves nothing, statements inside run prepared', async () => {
    const before = stats.executed;
    await db.transaction().execute(async (tx) => {
      await sql`insert into t (id, n) values (${'tx-ok'}, ${1})`.execute(tx);
      await sql`update t set n = n + 1 where id = ${'tx-ok'}`.execute(tx);
    });
    const failed = await db
      .transaction()
      .execute(async (tx) => {
        await sql`insert into t (id, n) values (${'tx-bad'}, ${1})`.execute(tx);
        await sql`insert into t (id, n) values (${'tx-bad'}, ${2})`.execute(tx); // duplicate: aborts
      })
      .catch((e: { code?: string }) => e.code);
    expect(failed).toBe('23505');
    const rows = await sql<{ id: string; n: number }>`select id, n from t where id like ${'tx-%'} order by id`.execute(db);
    expect(rows.rows).toEqual([{ id: 'tx-ok', n: 2 }]);
    expect(stats.executed - before).toBeGreaterThanOrEqual(4); // the failed insert is not counted
  });

  it('a table that changed shape under a prepared statement: the statement is forgotten and the query still answers', async () => {
    const star = 'select * from t where id = $1';
    expect(Object.keys((await pg.query<Record<string, unknown>>(star, ['id2'])).rows[0])).not.toContain('extra');
    await pg.exec('alter table t add column extra text');
    const unprepared = stats.unprepared;
    expect((await pg.query<Record<string, unknown>>(star, ['id2'])).rows[0]).toHaveProperty('extra', null);
    expect(stats.unprepared).toBe(unprepared + 1);
    // Prepared again on its next use, with the new shape; the stale one was closed, not left behind.
    expect((await pg.query<Record<string, unknown>>(star, ['id2'])).rows[0]).toHaveProperty('extra', null);
    expect((await pg.query<{ c: number }>('select count(*)::int as c from pg_prepared_statements where statement = $1', [star])).rows).toEqual([{ c: 1 }]);
  });

  it(`keeps at most ${MAX_STATEMENTS} statements, closing the least recently used`, async () => {
    const hot = 'select id from t where id = $1';
    await pg.query(hot, ['id0']);
    for (let i = 0; i < MAX_STATEMENTS + 20; i++) {
      await pg.query(`select ${i} as k from t where id = $1`, ['id0']);
      if (i % 100 === 0) await pg.query(hot, ['id0']); // kept in use: never the one closed
    }
    const names = (await pg.query<{ statement: string }>('select statement from pg_prepared_statements')).rows.map((r) => r.statement);
    expect(names.length).toBeLessThanOrEqual(MAX_STATEMENTS);
    expect(names).toContain(hot);
    expect(names).not.toContain('select 0 as k from t where id = $1');
    expect(names).toContain(`select ${MAX_STATEMENTS + 19} as k from t where id = $1`);
  });

  it('leaves anything but data statements to PGlite (transaction control, DDL, vacuum)', async () => {
    await pg.query('vacuum t');
    await pg.query('create index t_n on t (n)');
    const names = (await pg.query<{ statement: string }>('select statement from pg_prepared_statements')).rows.map((r) => r.statement);
    expect(names.some((s) => /vacuum|create index/i.test(s))).toBe(false);
  });
});
