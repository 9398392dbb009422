import { type Kysely, sql } from 'kysely';

/**
 * Node claims bounded and checked (issue 11): every column holding an example count, or a sum of
 * them, becomes BIGINT. One count is below 2^31 (the message schemas refuse more), but a round's
 * total, a region's total and what later sums read from them are not: counts summing past 2^31
 * overflowed an `integer` column, and the round stayed in `fit` past its deadline for good.
 * Both backends (PostgreSQL through pg, PGlite) read int8 back as a JS number (database.ts sets
 * pg's type parser; PGlite parses int8 to number itself); totals stay far below 2^53.
 */
const COUNT_COLUMNS = [
  ['rounds', 'num_examples'],
  ['updates', 'num_examples'],
  ['evaluations', 'num_examples'],
  ['regional_models', 'num_examples'],
] as const;

export async function up(db: Kysely<any>): Promise<void> {
  for (const [table, column] of COUNT_COLUMNS) {
    await sql`alter table ${sql.table(table)} alter column ${sql.ref(column)} type bigint`.execute(db);
  }
}

/** Back to integer: fails (as it should) when a stored count no longer fits. */
export async function down(db: Kysely<any>): Promise<void> {
  for (const [table, column] of COUNT_COLUMNS) {
    await sql`alter table ${sql.table(table)} alter column ${sql.ref(column)} type integer`.execute(db);
  }
}
