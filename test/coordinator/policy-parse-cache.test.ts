import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import { insertPolicy } from '../../coordinator/policies/repository.ts';
import { latestPolicies } from '../../coordinator/policies/policy-service.ts';
import { DEFAULT_POLICIES } from '../../protocols/policy/jurisdiction-policy.ts';

/**
 * latestPolicies parses each stored profile version once (policy-service.ts parsedProfile): the
 * cache must never hand one database's profile to another that stores a different profile under
 * the same jurisdiction and version (two coordinators' databases in one process, as in tests).
 */
describe('parsed policy profiles', () => {
  const dirs: string[] = [];
  const dbs: Db[] = [];
  afterAll(async () => {
    for (const db of dbs) await db.destroy();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function databaseWith(minNodesPerAggregate: number): Promise<Db> {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-policy-cache-'));
    dirs.push(dir);
    const { db } = await openDatabase({ dataDir: dir });
    dbs.push(db);
    const gdpr = DEFAULT_POLICIES.find((p) => p.jurisdiction === 'EU-GDPR')!;
    await insertPolicy(db, 'EU-GDPR', 99, JSON.stringify({ ...gdpr, version: 99, minNodesPerAggregate }));
    return db;
  }

  it('two databases, the same jurisdiction and version, different profiles: each gets its own', async () => {
    const a = await databaseWith(111);
    const b = await databaseWith(222);
    for (let i = 0; i < 2; i++) {
      expect((await latestPolicies(a)).get('EU-GDPR')).toMatchObject({ version: 99, minNodesPerAggregate: 111 });
      expect((await latestPolicies(b)).get('EU-GDPR')).toMatchObject({ version: 99, minNodesPerAggregate: 222 });
    }
  }, 60_000);
});
