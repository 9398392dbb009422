import type { Kysely } from 'kysely';

/**
 * Migration 0020_fold_updates (issue 13: the coordinator's per-update path in O(update) writes).
 * Every accepted update of an open round is now stored once in `round_kept_updates` (until now
 * only the every-update strategies' frames were), in the form that was folded, with the weight it
 * was folded with: `weight` (double precision; null on rows written before, which only the
 * every-update strategies wrote and which ignore weights). The running sum lives in the
 * coordinator's memory and is rebuilt from these rows after a restart (rounds/fold-cache.ts);
 * `rounds.accumulator` keeps only the state the round opened with (noised under central DP).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('round_kept_updates').addColumn('weight', 'double precision').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('round_kept_updates').dropColumn('weight').execute();
}
