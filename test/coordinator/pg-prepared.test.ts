import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preparedPool } from '../../coordinator/db/pg-prepared.ts';
import { backendOrSkip } from '../helpers/databases.ts';

/**
 * coordinator/db/pg-prepared.ts (issue 13): on PostgreSQL the coordinator's data statements go as
 * named prepared statements, parsed once per connection. Against the real server: its
 * pg_prepared_statements view shows them, results are unchanged, and a table that changed shape
 * under a prepared statement costs one failed execution, not every later one.
 */
describe('PostgreSQL statements run prepared', async () => {
  const backend = await backendOrSkip('postgres');
  let target: Awaited<ReturnType<NonNullable<typeof backend>['create']>> | undefined;
  let pool: pg.Pool;
  let db: Kysely<any>;
  let enable: () => void;

  beforeAll(async () => {
    if (!backend) return;
    target = await backend.create();
    // One connection: the session whose prepared statements are looked at.
    pool = new pg.Pool({ connectionString: target.databaseUrl, max: 1 });
    const prepared = preparedPool(pool);
    enable = prepared.enable;
    db = new Kysely({ dialect: new PostgresDialect({ pool: prepared.pool }) });
    await sql`create table t (id text primary key, n integer, doc jsonb)`.execute(db);
  });
  afterAll(async () => {
    await db?.destroy();
    await target?.drop();
  });

  const sessionStatements = async () => (await sql<{ name: string; statement: string }>`select name, statement from pg_prepared_statements`.execute(db)).rows;

  it.skipIf(!backend)('prepares nothing before enable() (the migrations), then each data statement once per connection', async () => {
    await sql`insert into t (id, n, doc) values (${'a'}, ${1}, ${JSON.stringify({ x: 1 })})`.execute(db);
    expect(await sessionStatements()).toEqual([]);
    enable();
    for (let i = 0; i < 5; i++) await sql`insert into t (id, n, doc) values (${`b${i}`}, ${i}, ${JSON.stringify({ i })})`.execute(db);
    const select = db.selectFrom('t').select(['id', 'n', 'doc']).where('n', '>=', 2).orderBy('id');
    const first = await select.execute();
    expect(await select.execute()).toEqual(first);
    expect(first).toEqual([{ id: 'b2', n: 2, doc: { i: 2 } }, { id: 'b3', n: 3, doc: { i: 3 } }, { id: 'b4', n: 4, doc: { i: 4 } }]);
    const statements = await sessionStatements();
    const texts = statements.map((s) => s.statement);
    expect(texts.filter((t) => t.startsWith('insert into t'))).toHaveLength(1);
    expect(texts.filter((t) => t === select.compile().sql)).toHaveLength(1);
    expect(statements.every((s) => s.name.startsWith('fedmark_'))).toBe(true);
  });

  it.skipIf(!backend)('a table that gained a column under a prepared statement: one refused execution, then prepared afresh', async () => {
    const star = db.selectFrom('t').selectAll().where('id', '=', 'a');
    expect(Object.keys((await star.execute())[0])).toEqual(['id', 'n', 'doc']);
    await sql`alter table t add column extra text`.execute(db);
    const refused = await star.execute().catch((e: { code?: string }) => e.code);
    expect(refused).toBe('0A000');
    expect((await star.execute())[0]).toEqual({ id: 'a', n: 1, doc: { x: 1 }, extra: null });
  });

  it.skipIf(!backend)('errors are PostgreSQL\'s and the connection goes on', async () => {
    const duplicate = await sql`insert into t (id, n) values (${'a'}, ${9})`.execute(db).catch((e: { code?: string }) => e.code);
    expect(duplicate).toBe('23505');
    expect((await sql<{ c: number }>`select count(*)::int as c from t where id = ${'a'}`.execute(db)).rows).toEqual([{ c: 1 }]);
  });
});
