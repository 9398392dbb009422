import { sql, type Kysely } from 'kysely';

/**
 * Migration 0022_reuse_kept_update_space (issue 13: the coordinator path of a 1M-parameter update
 * on PGlite). `round_kept_updates` fills with every update of an open round (4 MB each for a
 * 1M-parameter model) and is emptied when the round closes. Its space is now kept for the next
 * round instead of being handed back to the file system: `vacuum_truncate = false` on the table
 * and its TOAST table, so a VACUUM marks the pages free (the free space map) without truncating
 * the file, and the next round's updates are written into them.
 *
 * Why: growing a relation makes PostgreSQL write the new pages as zeros first, then again with the
 * data. On PGlite (no fallocate in its WebAssembly file system) that doubled the bytes written per
 * stored update (measured: 12.6 MB written per 4 MB update, 4.1 MB of it zeros; 8.45 MB and no
 * zeros once the space is reused). PGlite runs no autovacuum (one embedded backend, no
 * postmaster), so the coordinator vacuums this table itself after each close
 * (round-repository.ts `reclaimKeptUpdateSpace`); without that the dead updates were never freed
 * and the database grew by every update ever received. PostgreSQL's autovacuum does the same
 * there; keeping the pages only spares it the truncation's exclusive lock.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table round_kept_updates set (vacuum_truncate = false, toast.vacuum_truncate = false)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table round_kept_updates reset (vacuum_truncate, toast.vacuum_truncate)`.execute(db);
}
