import { sql, type Kysely } from 'kysely';

/**
 * Migration 0023_evaluation_stats_json (issue 13: the coordinator's CPU per round).
 * `evaluations.stats` and `evaluations.personalized_stats` become `json` (the text as received,
 * checked to be JSON) instead of `jsonb` (parsed into PostgreSQL's binary tree on every insert and
 * printed back on every read). A binary study's report is a histogram of 2 x 1,000 counts, so
 * jsonb cost 1.1-1.3 ms per stored report and 3.6-3.8 ms to read a round's ten back for pooling;
 * as json 0.41-0.50 ms and 0.65-0.77 ms (PGlite, .scratch benchmark in stop 16's closing note).
 * Nothing queries inside these columns: they are read whole, parsed and checked by zod
 * (evaluation-pooling.ts), and a retried report is compared in canonical form (intake.ts), so
 * jsonb's key order never mattered. Existing rows are converted in place.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table evaluations alter column stats type json using stats::json, alter column personalized_stats type json using personalized_stats::json`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table evaluations alter column stats type jsonb using stats::jsonb, alter column personalized_stats type jsonb using personalized_stats::jsonb`.execute(db);
}
