import type { Kysely } from 'kysely';

/** Unauthenticated refusals counted per source and minute (issue 11): filled in by that change. */
export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}
