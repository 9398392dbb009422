/**
 * Named prepared statements on PostgreSQL (issue 13), the `pg` side of pglite-prepared.ts.
 *
 * kysely's PostgresDialect sends every query as an unnamed statement, so the server parses,
 * analyses and plans the same few dozen texts again at every execution. Here a data statement
 * (select, insert, update, delete, with) is sent with a name derived from its text: node-postgres
 * then parses it once per connection (it remembers which names each connection has prepared) and
 * afterwards only binds and executes it, and PostgreSQL may reuse a generic plan. The SQL, its
 * parameters, results and errors are unchanged; transaction control and DDL go as before.
 *
 * A prepared statement's result shape is fixed: if a table gains a column under it (a newer
 * replica's migration), PostgreSQL refuses it with 0A000 "cached plan must not change result
 * type". The text then gets a new name (its generation), so its next execution prepares it
 * afresh; the refused execution fails as any statement would (inside a transaction it aborts it,
 * and the caller's retry runs it again).
 */
import { createHash } from 'node:crypto';
import type { Pool, PoolClient, QueryConfig } from 'pg';

const PREPARABLE = /^\s*(select|insert|update|delete|with)\b/i;
const PLAN_RESULT_CHANGED = '0A000';

/**
 * A pool for kysely's PostgresDialect whose clients send data statements as named prepared ones,
 * once `enable()` was called (after the migrations: a statement prepared before a table changed
 * could not run after it).
 *
 * @example
 *   const prepared = preparedPool(new pg.Pool({ connectionString }));
 *   const db = new Kysely({ dialect: new PostgresDialect({ pool: prepared.pool }) });
 *   await migrate(db);
 *   prepared.enable();
 */
export function preparedPool(pool: Pool): { pool: Pool; enable(): void } {
  let enabled = false;
  const names = new Map<string, string>();
  const generations = new Map<string, number>();
  const nameOf = (text: string) => {
    let name = names.get(text);
    if (name === undefined) {
      const generation = generations.get(text) ?? 0;
      name = `fedmark_${createHash('sha256').update(text).digest('hex').slice(0, 24)}_${generation}`;
      names.set(text, name);
    }
    return name;
  };
  const wrapped = new WeakSet<PoolClient>();
  const wrap = (client: PoolClient): PoolClient => {
    if (wrapped.has(client)) return client;
    wrapped.add(client);
    const query = client.query.bind(client) as (config: QueryConfig | string, values?: unknown[]) => Promise<unknown>;
    client.query = (async (text: unknown, values?: unknown[]) => {
      if (!enabled || typeof text !== 'string' || !PREPARABLE.test(text)) return query(text as string, values);
      try {
        return await query({ name: nameOf(text), text, values });
      } catch (err) {
        if ((err as { code?: string }).code === PLAN_RESULT_CHANGED) {
          names.delete(text);
          generations.set(text, (generations.get(text) ?? 0) + 1);
        }
        throw err;
      }
    }) as PoolClient['query'];
    return client;
  };
  const proxy = new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop === 'connect') {
        return (callback?: unknown) => {
          if (typeof callback === 'function') throw new Error('preparedPool: connect with a callback is not supported');
          return target.connect().then(wrap);
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    pool: proxy,
    enable: () => {
      enabled = true;
    },
  };
}
