import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { appendAudit } from '../../coordinator/audit/audit-log.ts';
import * as audit from '../../coordinator/audit/repository.ts';
import * as auth from '../../coordinator/auth/repository.ts';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import * as nodes from '../../coordinator/nodes/repository.ts';
import * as policies from '../../coordinator/policies/repository.ts';
import * as privacy from '../../coordinator/privacy/repository.ts';
import * as rounds from '../../coordinator/rounds/queries.ts';
import * as studies from '../../coordinator/studies/repository.ts';
import { BACKEND_NAMES, backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';

/**
 * The repositories (the only SQL outside the round service and regional models), each against a
 * real, freshly migrated database: PGlite and PostgreSQL run the same tests.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function seedStudy(db: Db, id: string, name = id) {
  await studies.insertStudy(db, { id, name, config: JSON.stringify({ name, seed: 1 }), state: 'running', current_round: 0, latest_model_version: 0 });
}

async function seedNode(db: Db, studyId: string, id: string, over: { name?: string; region?: string; jurisdiction?: string | null } = {}) {
  await nodes.insertNode(db, { id, study_id: studyId, name: over.name ?? id, region: over.region ?? 'eu', api_key_hash: `hash-${id}`, state: 'enrolled', state_message: null, data_report: null, last_seen_at: new Date(), public_key: null, key_fingerprint: null, revoked_at: null, jurisdiction: over.jurisdiction === undefined ? 'EU-GDPR' : over.jurisdiction, withdrawn_at: null });
}

/** Rounds and updates are written by the round service: seeded here with plain SQL. */
async function seedRound(db: Db, studyId: string, round: number, participants: string[]) {
  await sql`insert into rounds (study_id, round, phase, participants, fit_deadline, started_at) values (${studyId}, ${round}, 'fit', cast(${JSON.stringify(participants)} as jsonb), ${new Date(Date.now() + 60_000)}, ${new Date(Date.now() + round)})`.execute(db);
}
async function seedUpdate(db: Db, studyId: string, round: number, nodeId: string, acceptedAt: Date, meta: object = {}) {
  await sql`insert into updates (study_id, round, node_id, sha256, bytes, num_examples, loss, meta, accepted_at) values (${studyId}, ${round}, ${nodeId}, ${`sha-${nodeId}`}, 100, 5, 0.5, cast(${JSON.stringify(meta)} as jsonb), ${acceptedAt})`.execute(db);
}

for (const backendName of BACKEND_NAMES) {
  describe(`repositories on ${backendName}`, () => {
    let db: Db | undefined;
    let database: Awaited<ReturnType<DatabaseBackend['create']>> | undefined;

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      database = await backend.create();
      db = (await openDatabase({ databaseUrl: database.databaseUrl, dataDir: database.dataDir })).db;
    });
    afterAll(async () => {
      await db?.destroy();
      await database?.drop();
    });
    /** A test that needs the backend (skipped when PostgreSQL is not reachable). */
    const test = (name: string, fn: (db: Db) => Promise<void>) =>
      it(name, async (ctx) => {
        if (!db) return ctx.skip();
        await fn(db);
      });

    test('studies: a study, its models and their hashes', async (db) => {
      expect(await studies.findStudyRow(db, 'study_none')).toBeUndefined();
      expect(await studies.findStudyConfig(db, 'study_none')).toBeUndefined();
      expect(await studies.latestModelVersion(db, 'study_none')).toBeUndefined();
      await seedStudy(db, 'study_s1', 'first');
      await seedStudy(db, 'study_s2', 'second');
      expect((await studies.findStudyRow(db, 'study_s1'))).toMatchObject({ id: 'study_s1', name: 'first', state: 'running', current_round: 0 });
      expect(await studies.findStudyConfig(db, 'study_s1')).toEqual({ name: 'first', seed: 1 });
      expect((await studies.listStudyRows(db)).map((s) => s.id)).toEqual(expect.arrayContaining(['study_s1', 'study_s2']));
      const bytes = new Uint8Array([1, 2, 3, 250]);
      await studies.insertModel(db, { study_id: 'study_s1', version: 0, weights: bytes, sha256: 'h0', bytes: 4, signature: 'sig', signer_fingerprint: 'fp' });
      await studies.insertModel(db, { study_id: 'study_s1', version: 1, weights: bytes, sha256: 'h1', bytes: 4, signature: null, signer_fingerprint: null });
      const model = await studies.findModel(db, 'study_s1', 0);
      expect(Array.from(model!.weights)).toEqual([1, 2, 3, 250]);
      expect(model).toMatchObject({ version: 0, sha256: 'h0', signature: 'sig', signer_fingerprint: 'fp' });
      expect(await studies.findModel(db, 'study_s1', 7)).toBeUndefined();
      expect(await studies.latestModelVersion(db, 'study_s1')).toBe(0);
      expect(await studies.modelHashes(db, 'study_s1')).toEqual(new Map([[0, 'h0'], [1, 'h1']]));
    });

    test('nodes: enrollment tokens, nodes by key, name and region, guarded status updates', async (db) => {
      await seedStudy(db, 'study_n');
      await nodes.insertEnrollmentToken(db, { token_hash: 'th1', study_id: 'study_n', node_name: 'a', region: 'eu', jurisdiction: null, expires_at: new Date(Date.now() + 60_000) });
      await seedNode(db, 'study_n', 'node_b', { name: 'b', region: 'us', jurisdiction: null });
      await seedNode(db, 'study_n', 'node_a', { name: 'a', region: 'eu' });
      await nodes.markEnrollmentTokenUsed(db, 'th1', 'node_a', new Date());
      expect(await nodes.findNodeIdByName(db, 'study_n', 'a')).toBe('node_a');
      expect(await nodes.findNodeIdByName(db, 'study_n', 'zzz')).toBeUndefined();
      expect(await nodes.findNodeByApiKeyHash(db, 'hash-node_a')).toMatchObject({ id: 'node_a', study_id: 'study_n', region: 'eu', revoked_at: null });
      expect(await nodes.findNodeByApiKeyHash(db, 'nope')).toBeUndefined();
      expect((await nodes.listStudyNodes(db, 'study_n')).map((n) => n.name)).toEqual(['a', 'b']);
      expect(await nodes.nodeIdsInRegion(db, 'study_n', 'us')).toEqual(new Set(['node_b']));
      expect(await nodes.regionHasNode(db, 'study_n', 'eu')).toBe(true);
      expect(await nodes.regionHasNode(db, 'study_n', 'apac')).toBe(false);
      expect(await nodes.nodeJurisdiction(db, 'node_a')).toBe('EU-GDPR');
      expect(await nodes.nodeJurisdiction(db, 'node_b')).toBeNull();
      await expect(nodes.nodeJurisdiction(db, 'node_none')).rejects.toThrow();
      expect(await nodes.nodesWithJurisdiction(db, [])).toEqual([]);
      expect((await nodes.nodesWithJurisdiction(db, ['node_b', 'node_a'])).map((n) => n.id)).toEqual(['node_a', 'node_b']);
      // A status report racing a revocation does not bring the node back.
      await nodes.updateNode(db, 'node_b', { state: 'revoked', revoked_at: new Date() });
      await nodes.updateActiveNode(db, 'node_b', { state: 'ready' });
      await nodes.updateActiveNode(db, 'node_a', { state: 'ready' });
      expect((await nodes.listStudyNodes(db, 'study_n')).map((n) => n.state)).toEqual(['ready', 'revoked']);
      expect((await nodes.findNodeForRevocation(db, 'node_b'))?.revoked_at).toBeTruthy();
    });

    test('nodes: an enrollment token is locked until its transaction ends', async (db) => {
      await seedStudy(db, 'study_lock');
      await nodes.insertEnrollmentToken(db, { token_hash: 'th-lock', study_id: 'study_lock', node_name: 'l', region: 'eu', jurisdiction: null, expires_at: new Date(Date.now() + 60_000) });
      await seedNode(db, 'study_lock', 'node_l');
      let locked!: () => void;
      const lockHeld = new Promise<void>((r) => (locked = r));
      const first = db.transaction().execute(async (tx) => {
        expect((await nodes.lockEnrollmentToken(tx, 'th-lock'))?.used_at).toBeNull();
        locked();
        await sleep(300);
        await nodes.markEnrollmentTokenUsed(tx, 'th-lock', 'node_l', new Date());
      });
      await lockHeld;
      // The second reader waits for the first to commit, then sees the token used.
      const second = await db.transaction().execute(async (tx) => nodes.lockEnrollmentToken(tx, 'th-lock'));
      await first;
      expect(second?.used_at).toBeTruthy();
      expect(second?.node_id).toBe('node_l');
    });

    test('auth: API tokens and request nonces', async (db) => {
      await auth.insertApiToken(db, { id: 'tok_1', token_hash: 'tokhash1', role: 'analyst', name: 'eu team', region: 'eu', revoked_at: null });
      expect(await auth.findApiTokenByHash(db, 'tokhash1')).toMatchObject({ id: 'tok_1', role: 'analyst', region: 'eu', revoked_at: null });
      expect(await auth.findApiTokenByHash(db, 'other')).toBeUndefined();
      expect(await auth.revokeApiToken(db, 'tok_1', new Date())).toBe(true);
      expect(await auth.revokeApiToken(db, 'tok_1', new Date())).toBe(false);
      expect(await auth.revokeApiToken(db, 'tok_none', new Date())).toBe(false);
      const listed = (await auth.listApiTokens(db)).find((t) => t.id === 'tok_1');
      expect(listed).toMatchObject({ role: 'analyst', name: 'eu team', region: 'eu' });
      expect(listed?.revoked_at).toBeTruthy();
      expect(listed).not.toHaveProperty('token_hash');
      expect(await auth.recordNonce(db, 'fpA', 'n1')).toBe(true);
      expect(await auth.recordNonce(db, 'fpA', 'n1')).toBe(false);
      expect(await auth.recordNonce(db, 'fpB', 'n1')).toBe(true);
      await auth.forgetNoncesBefore(db, new Date(Date.now() - 3_600_000));
      expect(await auth.recordNonce(db, 'fpA', 'n1')).toBe(false);
      await auth.forgetNoncesBefore(db, new Date(Date.now() + 3_600_000));
      expect(await auth.recordNonce(db, 'fpA', 'n1')).toBe(true);
    });

    test('policies: versions, latest first, jurisdictions', async (db) => {
      expect(await policies.latestPolicyVersion(db, 'ZZ-TEST')).toBe(0);
      for (const v of [1, 2]) await policies.insertPolicy(db, 'ZZ-TEST', v, JSON.stringify({ jurisdiction: 'ZZ-TEST', version: v }));
      await policies.insertPolicy(db, 'ZA-TEST', 1, JSON.stringify({ jurisdiction: 'ZA-TEST', version: 1 }));
      expect(await policies.latestPolicyVersion(db, 'ZZ-TEST')).toBe(2);
      const jurisdictions = await policies.listJurisdictions(db);
      expect(jurisdictions).toEqual([...new Set(jurisdictions)].sort());
      expect(jurisdictions).toEqual(expect.arrayContaining(['ZA-TEST', 'ZZ-TEST']));
      const latestFirst = (await policies.listPolicyVersionsLatestFirst(db)).filter((p) => p.jurisdiction.endsWith('-TEST'));
      expect(latestFirst.map((p) => `${p.jurisdiction}/${p.version}`)).toEqual(['ZA-TEST/1', 'ZZ-TEST/2', 'ZZ-TEST/1']);
      const all = (await policies.listPolicies(db)).filter((p) => p.jurisdiction.endsWith('-TEST'));
      expect(all.map((p) => `${p.jurisdiction}/${p.version}`)).toEqual(['ZA-TEST/1', 'ZZ-TEST/1', 'ZZ-TEST/2']);
      expect(all[2].profile).toEqual({ jurisdiction: 'ZZ-TEST', version: 2 });
    });

    test('audit: the locked head serializes concurrent appends into one chain; checkpoints', async (db) => {
      await Promise.all(Array.from({ length: 6 }, (_, i) => appendAudit(db, { actor: 'test', kind: 'test.concurrent', data: { i } })));
      const entries = await audit.listAuditEntries(db);
      entries.forEach((e, i) => {
        expect(e.seq).toBe(i + 1);
        if (i > 0) expect(e.prev_hash).toBe(entries[i - 1].hash);
      });
      const last = entries[entries.length - 1];
      const head = await db.transaction().execute((tx) => audit.lockAuditHead(tx));
      expect(head).toEqual({ seq: last.seq, hash: last.hash });
      expect(await audit.findAuditEntry(db, last.seq)).toEqual(last);
      expect(await audit.findAuditEntry(db, last.seq + 100)).toBeUndefined();
      expect(await audit.hasCheckpointAt(db, last.seq)).toBe(false);
      await audit.insertCheckpoint(db, { seq: last.seq, head_hash: last.hash, at: new Date().toISOString(), coordinator_fingerprint: 'fp', signature: 'sig' });
      expect(await audit.hasCheckpointAt(db, last.seq)).toBe(true);
      expect((await audit.listCheckpoints(db)).map((c) => c.seq)).toEqual([last.seq]);
      // No keyring opened this database: it has no coordinator key yet.
      expect(await audit.firstCoordinatorPublicKey(db)).toBeUndefined();
    });

    test('privacy: the ledger, its totals, and the report reads', async (db) => {
      await seedStudy(db, 'study_p');
      await seedNode(db, 'study_p', 'node_p2', { name: 'p2' });
      await seedNode(db, 'study_p', 'node_p1', { name: 'p1' });
      expect(await privacy.ledgerTotals(db, 'study_p')).toEqual({ rounds: 0, total: null });
      for (const [round, total] of [[1, 0.5], [2, 0.8]]) {
        await seedRound(db, 'study_p', round, ['node_p1']);
        await privacy.insertLedgerEntry(db, { study_id: 'study_p', round, accountant: 'rdp', delta: 1e-5, sampling_rate: 1, noise_multiplier: 1.1, epsilon_round: round === 1 ? 0.5 : 0.3, epsilon_total: total, budget_epsilon: null });
      }
      expect(await privacy.ledgerTotals(db, 'study_p')).toEqual({ rounds: 2, total: 0.8 });
      expect((await privacy.listLedger(db, 'study_p')).map((l) => [l.round, l.epsilon_total])).toEqual([[1, 0.5], [2, 0.8]]);
      expect(await privacy.findStudyPrivacyRow(db, 'study_p')).toMatchObject({ state: 'running', stop_reason: null });
      expect((await privacy.listRoundMechanisms(db, 'study_p')).map((r) => [r.round, r.participants])).toEqual([[1, ['node_p1']], [2, ['node_p1']]]);
      expect((await privacy.listReportNodes(db, 'study_p')).map((n) => n.id)).toEqual(['node_p1', 'node_p2']);
      expect((await privacy.listReportNodes(db, 'study_p', 'node_p2')).map((n) => n.id)).toEqual(['node_p2']);
      await seedUpdate(db, 'study_p', 2, 'node_p1', new Date(), { dpSgd: { epsilonTotal: 1 } });
      await seedUpdate(db, 'study_p', 1, 'node_p1', new Date());
      expect((await privacy.listUpdateMeta(db, 'study_p')).map((u) => u.round)).toEqual([1, 2]);
      expect(await privacy.listUpdateMeta(db, 'study_p', 'node_p2')).toEqual([]);
    });

    test('round views: a round, its updates with their nodes, counts per round', async (db) => {
      await seedStudy(db, 'study_r');
      await seedNode(db, 'study_r', 'node_r1', { name: 'r1', region: 'eu' });
      await seedNode(db, 'study_r', 'node_r2', { name: 'r2', region: 'us' });
      await seedRound(db, 'study_r', 2, ['node_r1', 'node_r2']);
      await seedRound(db, 'study_r', 1, ['node_r1', 'node_r2']);
      expect(await rounds.findRound(db, 'study_r', 3)).toBeUndefined();
      expect(await rounds.findRound(db, 'study_r', 1)).toMatchObject({ round: 1, phase: 'fit', participants: ['node_r1', 'node_r2'] });
      expect((await rounds.listRounds(db, 'study_r')).map((r) => r.round)).toEqual([1, 2]);
      const t = Date.now();
      await seedUpdate(db, 'study_r', 1, 'node_r2', new Date(t - 1000));
      await seedUpdate(db, 'study_r', 1, 'node_r1', new Date(t));
      await seedUpdate(db, 'study_r', 2, 'node_r1', new Date(t));
      const updates = await rounds.listRoundUpdates(db, 'study_r', 1);
      expect(updates.map((u) => [u.node_id, u.name, u.region])).toEqual([['node_r2', 'r2', 'us'], ['node_r1', 'r1', 'eu']]);
      expect(await rounds.updateCountsByRound(db, 'study_r')).toEqual(new Map([[1, 2], [2, 1]]));
    });
  });
}
