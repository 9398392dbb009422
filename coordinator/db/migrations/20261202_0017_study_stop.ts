import { type Kysely, sql } from 'kysely';

/**
 * Migration 0017_study_stop (issue 12): a study can end early, in state 'stopped', apart from
 * 'completed' (it ran its rounds). Who stopped it (`coordinator`, or the operator's actor) and
 * when are kept beside the existing stop_reason (migration 0002). Studies that ended early before
 * this migration were marked 'completed' with a stop reason: they become 'stopped'. Plain SQL
 * that PostgreSQL and PGlite both run.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('studies').addColumn('stopped_at', 'timestamptz').execute();
  await db.schema.alterTable('studies').addColumn('stopped_by', 'text').execute();
  // Migration 0001's inline check is named by PostgreSQL after the table and column.
  await sql`alter table studies drop constraint if exists studies_state_check`.execute(db);
  await sql`alter table studies add constraint studies_state_check check (state in ('running', 'completed', 'stopped'))`.execute(db);
  await sql`update studies set state = 'stopped', stopped_by = 'coordinator' where state = 'completed' and stop_reason is not null`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`update studies set state = 'completed' where state = 'stopped'`.execute(db);
  await sql`alter table studies drop constraint if exists studies_state_check`.execute(db);
  await sql`alter table studies add constraint studies_state_check check (state in ('running', 'completed'))`.execute(db);
  await db.schema.alterTable('studies').dropColumn('stopped_by').execute();
  await db.schema.alterTable('studies').dropColumn('stopped_at').execute();
}
