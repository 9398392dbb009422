import { sql, type Kysely } from 'kysely';

/**
 * Migration 0024_rounds_in_flight (issue 13: a coordinator that stays small over a long study).
 * A partial index of the rounds still in flight (phase fit or evaluate): one or two rows per
 * running study whatever its age. A node's task view looks for its study's open round and for an
 * evaluation it still owes (rounds in phase evaluate); on the primary key (study_id, round) both
 * walked every round of the study and dropped the closed ones, per node asking, so a round's
 * opening grew with the study's history (1,000 closed rounds: 3.2-4.2 ms for ten nodes' views
 * against ~1 ms at 60 rounds). PostgreSQL uses it for `phase in ('fit', 'evaluate')` and for
 * `phase = 'evaluate'`, which implies it. A phase change moves a row in or out of it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index if not exists rounds_in_flight on rounds (study_id, round) where phase in ('fit', 'evaluate')`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists rounds_in_flight`.execute(db);
}
