import { CompiledQuery, sql, type Compilable } from 'kysely';
import type { Db } from './database.ts';

/**
 * Repository queries compiled by kysely once, then run as that SQL text (issue 13: the
 * coordinator's CPU per round).
 *
 * Kysely builds a tree of immutable operation nodes for every call and compiles it to SQL, which
 * for the node's task view (two lateral joins, four subqueries) costs 0.25 ms warm and 0.65 ms
 * cold, and its SQL text is the same every time: only the parameter values change. In the demo's
 * profile kysely was 7.5% of the coordinator's CPU, the task view and the intake's round lock most
 * of it. Here the builder runs once per `shape` with a marker in place of each argument; the
 * compiled text is kept with where each argument goes among its parameters, and later calls
 * execute that text with the arguments put in place (constants the builder wrote stay as they
 * are). The SQL, its parameters and their order are exactly the builder's.
 *
 * A Kysely with plugins (none in the coordinator; the tests' statement counters) gets the builder
 * every time, since a plugin may rewrite the query.
 *
 * Only for queries whose text depends on nothing but `shape`: the arguments must be scalars that
 * the builder passes straight through as parameters. An argument the builder computes with or
 * writes into the SQL text is caught at the first call (its marker is then missing from the
 * parameters, or found in the text) and thrown as a programming error, not run.
 *
 * @example
 *   const lockRow = compiledOnce((db, a: { id: string }) => db.selectFrom('rounds').selectAll().where('study_id', '=', a.id).forUpdate());
 *   const [row] = await lockRow(tx, { id: studyId });
 */
export function compiledOnce<A extends Record<string, string | number>, O>(build: (db: Db, args: A) => Compilable<O>): (db: Db, args: A, shape?: string) => Promise<O[]> {
  const compiled = new Map<string, { sql: string; slots: Array<{ arg: string } | { value: unknown }> }>();
  return async (db, args, shape = '') => {
    // A plugin may rewrite a query (the tests' statement log reads each one): built every time there.
    if (db.getExecutor().plugins.length > 0) return (await db.executeQuery(build(db, args))).rows;
    let query = compiled.get(shape);
    if (!query) compiled.set(shape, (query = compileWithMarkers(db, args, build)));
    const parameters = query.slots.map((slot) => ('arg' in slot ? args[slot.arg] : slot.value));
    return (await db.executeQuery<O>(CompiledQuery.raw(query.sql, parameters))).rows;
  };
}

/** A marker no real argument is: NUL is refused in every text the coordinator takes in (http/middleware.ts). */
const MARKER = '\u0000compiled-once:';

function compileWithMarkers<A extends Record<string, string | number>, O>(db: Db, args: A, build: (db: Db, args: A) => Compilable<O>) {
  const names = Object.keys(args);
  const marked = Object.fromEntries(names.map((name) => [name, MARKER + name])) as unknown as A;
  const { sql, parameters } = build(db, marked).compile();
  if (sql.includes(MARKER)) throw new Error(`compiledOnce: an argument is written into the SQL text, not passed as a parameter: ${sql}`);
  const slots = parameters.map((p) => {
    const name = typeof p === 'string' && p.startsWith(MARKER) ? p.slice(MARKER.length) : undefined;
    if (name !== undefined && names.includes(name)) return { arg: name };
    // A value made from a marker (concatenated, or arithmetic: NaN) would be a wrong constant.
    if ((typeof p === 'string' && p.includes(MARKER)) || (typeof p === 'number' && Number.isNaN(p))) throw new Error(`compiledOnce: a parameter is computed from an argument (${JSON.stringify(p)}): the query's text would not be the same for every value`);
    return { value: p };
  });
  const unused = names.filter((name) => !slots.some((s) => 'arg' in s && s.arg === name));
  if (unused.length) throw new Error(`compiledOnce: argument(s) ${unused.join(', ')} did not reach the parameters as they are (computed with, or left out): the query's text would not be the same for every value`);
  return { sql, slots };
}

/**
 * A raw statement as kysely's `sql` tag writes it, with its text joined once per call site (issue
 * 13): kysely builds and compiles a tree of nodes for every `sql` template it runs, ~0.1 ms each
 * in the intake's statements (the nonce, the update and evaluation reads and writes), which run
 * for every node in every round. A template's strings are the same array at every call from one
 * place in the code, so the text (`$1`, `$2`, ... in place of the values, as kysely numbers them)
 * is kept per array and every value is passed as a parameter. The text and parameters are exactly
 * what `sql` would compile to; a value that is itself SQL (a kysely fragment) is refused, since it
 * would have been written into the text.
 *
 * A Kysely with plugins (the tests' statement counters) runs kysely's own `sql` instead.
 *
 * @example
 *   const { rows } = await sqlOnce<{ n: number }>`select count(*)::int as n from nodes where study_id = ${studyId}`.execute(db);
 */
export function sqlOnce<R>(strings: TemplateStringsArray, ...values: unknown[]): { execute(db: Db): Promise<{ rows: R[]; numAffectedRows?: bigint }> } {
  return {
    async execute(db) {
      if (db.getExecutor().plugins.length > 0) return sql<R>(strings, ...values).execute(db);
      let text = joined.get(strings);
      if (text === undefined) joined.set(strings, (text = strings.reduce((out, s, i) => (i === 0 ? s : `${out}$${i}${s}`), '')));
      for (const v of values) if (isSqlFragment(v)) throw new Error(`sqlOnce: a value is SQL, not a parameter (use kysely's sql for composed statements): ${text}`);
      return db.executeQuery<R>(CompiledQuery.raw(text, values));
    },
  };
}

const joined = new WeakMap<TemplateStringsArray, string>();

const isSqlFragment = (v: unknown): boolean => typeof v === 'object' && v !== null && typeof (v as { toOperationNode?: unknown }).toOperationNode === 'function';
