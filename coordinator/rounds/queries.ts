import type { Db } from '../db/database.ts';

/**
 * Read-only SQL behind the round views (GET a round, a submission, a study's round list). The
 * round service's own SQL (opening, closing, submitting) stays with it.
 *
 * @example
 *   const row = await findRound(db, studyId, 1); // undefined when the study has no round 1
 */
export async function findRound(db: Db, studyId: string, round: number) {
  return db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
}

export async function listRounds(db: Db, studyId: string) {
  return db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).orderBy('round').execute();
}

/** Updates received per round. */
export async function updateCountsByRound(db: Db, studyId: string): Promise<Map<number, number>> {
  const rows = await db.selectFrom('updates').select(['round', ({ fn }) => fn.countAll<number>().as('count')]).where('study_id', '=', studyId).groupBy('round').execute();
  return new Map(rows.map((r) => [r.round, Number(r.count)]));
}

/** A round's accepted updates with their node's name and region, in the order they came. */
export async function listRoundUpdates(db: Db, studyId: string, round: number) {
  return db
    .selectFrom('updates')
    .innerJoin('nodes', 'nodes.id', 'updates.node_id')
    .select(['updates.node_id', 'nodes.name', 'nodes.region', 'updates.sha256', 'updates.bytes', 'updates.num_examples', 'updates.loss', 'updates.meta', 'updates.accepted_at'])
    .where('updates.study_id', '=', studyId)
    .where('updates.round', '=', round)
    .orderBy('updates.accepted_at')
    .execute();
}
