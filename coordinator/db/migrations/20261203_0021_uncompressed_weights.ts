import { sql, type Kysely } from 'kysely';

/**
 * Migration 0021_uncompressed_weights (issue 13: the coordinator path of a 1M-parameter update).
 * The bytea columns that hold float tensors are stored out of line without compression (STORAGE
 * EXTERNAL): a model update's frame, a published (global or regional) model, a round's running
 * state under central DP. PostgreSQL's default (EXTENDED) first runs pglz over a value; an FMW1
 * frame starts with a JSON header that pglz finds matches in within its first kilobyte, so pglz
 * keeps going through the float32 values, which do not compress, until its output passes 75% of
 * the input, and then the value is stored uncompressed anyway (pg_column_size = the frame's size).
 * Measured (4 MB frame of a 1M-parameter MLP, 10 inserts after 20 of warm-up, one process, the
 * coordinator's own PGlite handle): 170-194 ms CPU per insert with EXTENDED, 74 ms with EXTERNAL.
 * Only new values are affected; what is stored, and every read, is the same bytes.
 */
const COLUMNS = [
  ['round_kept_updates', 'weights'],
  ['models', 'weights'],
  ['regional_models', 'weights'],
  ['rounds', 'accumulator'],
] as const;

export async function up(db: Kysely<any>): Promise<void> {
  for (const [table, column] of COLUMNS) await sql`alter table ${sql.table(table)} alter column ${sql.ref(column)} set storage external`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const [table, column] of COLUMNS) await sql`alter table ${sql.table(table)} alter column ${sql.ref(column)} set storage extended`.execute(db);
}
