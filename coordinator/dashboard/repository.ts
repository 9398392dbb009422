import type { Db } from '../db/database.ts';

/** Every study with what the dashboard's list shows (the only SQL of the dashboard). */
export async function listStudySummaryRows(db: Db) {
  return db.selectFrom('studies').select(['id', 'name', 'state', 'current_round', 'config', 'stop_reason', 'created_at']).orderBy('created_at').execute();
}
