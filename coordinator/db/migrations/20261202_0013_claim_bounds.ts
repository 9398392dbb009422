import type { Kysely } from 'kysely';

/** Node claims bounded and checked (issue 11): filled in by that change. */
export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}
