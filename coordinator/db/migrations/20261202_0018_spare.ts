import type { Kysely } from 'kysely';

/** Migration 0018_spare: spare slot for this session's work (does nothing yet). */
export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}
