import type { Db } from '../db/database.ts';

/**
 * SQL of jurisdiction policy profiles (every version is kept). Plain functions taking `db` or a
 * transaction.
 *
 * @example
 *   const known = await listJurisdictions(db); // ['EU-GDPR', 'US-CA-CCPA']
 */

/** Every version of every profile, latest version of each jurisdiction first. */
export async function listPolicyVersionsLatestFirst(db: Db) {
  return db.selectFrom('policies').select(['jurisdiction', 'version', 'profile']).orderBy('jurisdiction').orderBy('version', 'desc').execute();
}

/** Every version of every profile, oldest first within a jurisdiction. */
export async function listPolicies(db: Db) {
  return db.selectFrom('policies').selectAll().orderBy('jurisdiction').orderBy('version').execute();
}

/** Jurisdictions with at least one profile, sorted. */
export async function listJurisdictions(db: Db): Promise<string[]> {
  return (await db.selectFrom('policies').select('jurisdiction').distinct().orderBy('jurisdiction').execute()).map((p) => p.jurisdiction);
}

/** The latest version number of a jurisdiction's profile (0 when it has none). */
export async function latestPolicyVersion(db: Db, jurisdiction: string): Promise<number> {
  return (await db.selectFrom('policies').select('version').where('jurisdiction', '=', jurisdiction).orderBy('version', 'desc').executeTakeFirst())?.version ?? 0;
}

export async function insertPolicy(db: Db, jurisdiction: string, version: number, profileJson: string) {
  await db.insertInto('policies').values({ jurisdiction, version, profile: profileJson }).execute();
}

/** A node's jurisdiction and that jurisdiction's latest profile, in one query; throws (NoResultError) when there is no such node. */
export async function findNodePolicy(db: Db, nodeId: string) {
  return db
    .selectFrom('nodes as n')
    .select((eb) => ['n.jurisdiction', eb.selectFrom('policies as p').select('p.profile').whereRef('p.jurisdiction', '=', 'n.jurisdiction').orderBy('p.version', 'desc').limit(1).as('profile')])
    .where('n.id', '=', nodeId)
    .executeTakeFirstOrThrow();
}

/** One version of a jurisdiction's profile (undefined when there is none). */
export async function findPolicyVersion(db: Db, jurisdiction: string, version: number) {
  return (await db.selectFrom('policies').select('profile').where('jurisdiction', '=', jurisdiction).where('version', '=', version).executeTakeFirst())?.profile;
}
