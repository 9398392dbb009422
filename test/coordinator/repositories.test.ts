import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { appendAudit } from '../../coordinator/audit/audit-log.ts';
import * as audit from '../../coordinator/audit/repository.ts';
import * as auth from '../../coordinator/auth/repository.ts';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import * as nodes from '../../coordinator/nodes/repository.ts';
import * as policies from '../../coordinator/policies/repository.ts';
import * as privacy from '../../coordinator/privacy/repository.ts';
import * as keys from '../../coordinator/keys/repository.ts';
import * as regions from '../../coordinator/regions/repository.ts';
import * as rounds from '../../coordinator/rounds/round-repository.ts';
import * as studies from '../../coordinator/studies/repository.ts';
import { BACKEND_NAMES, backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';

/**
 * The repositories (the coordinator's only SQL), each against a real, freshly migrated database:
 * PGlite and PostgreSQL run the same tests.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function seedStudy(db: Db, id: string, name = id) {
  await studies.insertStudy(db, { id, name, config: JSON.stringify({ name, seed: 1 }), state: 'running', current_round: 0, latest_model_version: 0 });
}

async function seedNode(db: Db, studyId: string, id: string, over: { name?: string; region?: string; jurisdiction?: string | null } = {}) {
  await nodes.insertNode(db, { id, study_id: studyId, name: over.name ?? id, region: over.region ?? 'eu', api_key_hash: `hash-${id}`, state: 'enrolled', state_message: null, data_report: null, last_seen_at: new Date(), public_key: null, key_fingerprint: null, revoked_at: null, jurisdiction: over.jurisdiction === undefined ? 'EU-GDPR' : over.jurisdiction, withdrawn_at: null });
}

/** Rounds and updates seeded with plain SQL, independently of the repository functions under test. */
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
      await audit.insertCheckpoint(db, { seq: last.seq, head_hash: last.hash, at: new Date().toISOString(), coordinator_fingerprint: 'fp', signature: 'sig', number: 1 });
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

    test('round machine: the round row is locked until its transaction ends', async (db) => {
      await seedStudy(db, 'study_rl');
      await seedRound(db, 'study_rl', 1, ['node_x']);
      expect(await db.transaction().execute((tx) => rounds.lockRound(tx, 'study_rl', 2))).toBeUndefined();
      let locked!: () => void;
      const lockHeld = new Promise<void>((r) => (locked = r));
      const first = db.transaction().execute(async (tx) => {
        expect((await rounds.lockRound(tx, 'study_rl', 1))?.phase).toBe('fit');
        locked();
        await sleep(300);
        await rounds.updateRound(tx, 'study_rl', 1, { phase: 'evaluate', accumulator: null });
      });
      await lockHeld;
      // A second transition (a deadline timer, a late update) waits for the first to commit, then
      // sees the phase it left: without the lock it would read 'fit' and close the phase twice.
      const second = await db.transaction().execute(async (tx) => rounds.lockRound(tx, 'study_rl', 1));
      await first;
      expect(second?.phase).toBe('evaluate');
    });

    test('round machine: the study row is locked while a round opens', async (db) => {
      await seedStudy(db, 'study_sl');
      let locked!: () => void;
      const lockHeld = new Promise<void>((r) => (locked = r));
      const first = db.transaction().execute(async (tx) => {
        expect((await rounds.lockStudy(tx, 'study_sl'))?.current_round).toBe(0);
        locked();
        await sleep(300);
        await rounds.updateStudy(tx, 'study_sl', { current_round: 1 });
      });
      await lockHeld;
      const second = await db.transaction().execute(async (tx) => rounds.lockStudy(tx, 'study_sl'));
      await first;
      expect(second?.current_round).toBe(1);
      expect(await db.transaction().execute((tx) => rounds.lockStudy(tx, 'study_none'))).toBeUndefined();
    });

    test('round machine: kept updates come back in arrival order, and go with the round', async (db) => {
      await seedStudy(db, 'study_k');
      await seedRound(db, 'study_k', 1, ['node_k1', 'node_k2', 'node_k3']);
      await seedRound(db, 'study_k', 2, ['node_k1']);
      expect(await rounds.keptUpdates(db, 'study_k', 1)).toEqual([]);
      // Arrival order, not node order: a median or Krum restart must see the same sequence.
      for (const [nodeId, byte] of [['node_k3', 3], ['node_k1', 1], ['node_k2', 2]] as const) {
        await db.transaction().execute((tx) => rounds.keepUpdate(tx, { studyId: 'study_k', round: 1, nodeId, bytes: new Uint8Array([byte, 255, 0]) }));
      }
      await rounds.keepUpdate(db, { studyId: 'study_k', round: 2, nodeId: 'node_k1', bytes: new Uint8Array([9]) });
      expect((await rounds.keptUpdates(db, 'study_k', 1)).map((b) => Array.from(b))).toEqual([[3, 255, 0], [1, 255, 0], [2, 255, 0]]);
      // Once per node and round.
      await expect(rounds.keepUpdate(db, { studyId: 'study_k', round: 1, nodeId: 'node_k1', bytes: new Uint8Array([7]) })).rejects.toThrow();
      await rounds.dropKeptUpdates(db, 'study_k', 1);
      expect(await rounds.keptUpdates(db, 'study_k', 1)).toEqual([]);
      expect((await rounds.keptUpdates(db, 'study_k', 2)).map((b) => Array.from(b))).toEqual([[9]]);
    });

    test('round machine: the previous round hands on its server state', async (db) => {
      await seedStudy(db, 'study_ss');
      await seedStudy(db, 'study_ss_other');
      const state = (n: number) => new Uint8Array([n, n, n]);
      await seedRound(db, 'study_ss', 1, []);
      await seedRound(db, 'study_ss', 2, []);
      await seedRound(db, 'study_ss_other', 3, []);
      await rounds.updateRound(db, 'study_ss', 1, { phase: 'completed', server_state: state(1), next_server_state: state(11), mechanism: JSON.stringify({ strategy: 'fedavg' }) });
      // A failed round carries its starting state over unchanged.
      await rounds.updateRound(db, 'study_ss', 2, { phase: 'failed', server_state: state(11), next_server_state: state(11) });
      expect(await rounds.previousRound(db, 'study_ss', 1)).toBeUndefined();
      const before2 = await rounds.previousRound(db, 'study_ss', 2);
      expect(before2).toMatchObject({ round: 1, phase: 'completed', mechanism: { strategy: 'fedavg' } });
      expect(Array.from(before2!.server_state!)).toEqual([1, 1, 1]);
      expect(Array.from(before2!.next_server_state!)).toEqual([11, 11, 11]);
      // The nearest earlier round of the same study, whatever the gap.
      const before5 = await rounds.previousRound(db, 'study_ss', 5);
      expect(before5).toMatchObject({ round: 2, phase: 'failed' });
      expect(Array.from(before5!.next_server_state!)).toEqual([11, 11, 11]);
      expect(await rounds.previousRound(db, 'study_ss_other', 3)).toBeUndefined();
    });

    test('round machine: a round opened, read, found open, and closed', async (db) => {
      await seedStudy(db, 'study_o');
      const deadline = new Date(Date.now() + 60_000);
      await rounds.insertRound(db, { study_id: 'study_o', round: 1, phase: 'fit', participants: JSON.stringify(['node_o1']), fit_deadline: deadline, evaluation_deadline: null, accumulator: new Uint8Array([1, 2]), num_examples: 0, mean_loss: null, validation_auc: null, validation_loss: null, failure_reason: null, closed_at: null, started_at: new Date(), clip_norm: 0.5, mechanism: JSON.stringify({ expectedParticipants: 1 }), server_state: new Uint8Array([5]), next_server_state: null, instructions: JSON.stringify({ node_o1: { proximalMu: 0.1 } }), validation_metrics: null });
      expect(await rounds.findOpenRoundNumber(db, 'study_o')).toBe(1);
      const open = await rounds.findLatestOpenRound(db, 'study_o');
      expect(open).toMatchObject({ round: 1, phase: 'fit', participants: ['node_o1'], clip_norm: 0.5, instructions: { node_o1: { proximalMu: 0.1 } } });
      expect(Array.from(open!.accumulator!)).toEqual([1, 2]);
      expect((await rounds.listOpenRounds(db)).filter((r) => r.study_id === 'study_o')).toEqual([{ study_id: 'study_o', round: 1, phase: 'fit', fit_deadline: deadline, evaluation_deadline: null }]);
      await rounds.updateRound(db, 'study_o', 1, { phase: 'evaluate', evaluation_deadline: deadline, accumulator: null });
      expect(await rounds.findOpenRoundNumber(db, 'study_o')).toBe(1);
      expect((await rounds.findLatestOpenRound(db, 'study_o'))?.accumulator).toBeNull();
      await rounds.updateRound(db, 'study_o', 1, { phase: 'completed', closed_at: new Date() });
      expect(await rounds.findOpenRoundNumber(db, 'study_o')).toBeUndefined();
      expect(await rounds.findLatestOpenRound(db, 'study_o')).toBeUndefined();
      expect((await rounds.listOpenRounds(db)).filter((r) => r.study_id === 'study_o')).toEqual([]);
    });

    test('round machine: updates and evaluations of a round', async (db) => {
      await seedStudy(db, 'study_u');
      await seedNode(db, 'study_u', 'node_u1');
      await seedNode(db, 'study_u', 'node_u2');
      await seedRound(db, 'study_u', 1, ['node_u1', 'node_u2']);
      expect(await rounds.findUpdate(db, 'study_u', 1, 'node_u1')).toBeUndefined();
      const at = new Date();
      await rounds.insertUpdate(db, { study_id: 'study_u', round: 1, node_id: 'node_u1', sha256: 'su1', bytes: 12, num_examples: 7, loss: 0.25, meta: JSON.stringify({ numExamples: 7, metaSha256: 'm1' }), accepted_at: at });
      await rounds.insertUpdate(db, { study_id: 'study_u', round: 1, node_id: 'node_u2', sha256: 'su2', bytes: 12, num_examples: 3, loss: null, meta: JSON.stringify({ numExamples: 3 }), accepted_at: at });
      expect(await rounds.findUpdate(db, 'study_u', 1, 'node_u1')).toMatchObject({ sha256: 'su1', bytes: 12, meta: { numExamples: 7, metaSha256: 'm1' } });
      expect((await rounds.listUpdaterIds(db, 'study_u', 1)).sort()).toEqual(['node_u1', 'node_u2']);
      expect(await rounds.listUpdaterIds(db, 'study_u', 2)).toEqual([]);
      const contributions = await rounds.listUpdateContributions(db, 'study_u', 1);
      expect(contributions.sort((a, b) => a.node_id.localeCompare(b.node_id))).toEqual([{ node_id: 'node_u1', num_examples: 7, loss: 0.25 }, { node_id: 'node_u2', num_examples: 3, loss: null }]);
      const stats = { kind: 'regression', count: 7, sumY: 1 };
      expect(await rounds.findEvaluation(db, 'study_u', 1, 'node_u1')).toBeUndefined();
      await rounds.insertEvaluation(db, { study_id: 'study_u', round: 1, node_id: 'node_u1', num_examples: 7, loss: 0.3, histogram: null, stats: JSON.stringify(stats) });
      expect(await rounds.findEvaluation(db, 'study_u', 1, 'node_u1')).toEqual({ histogram: null, stats, num_examples: 7, loss: 0.3, personalized_stats: null });
      expect(await rounds.listRoundEvaluations(db, 'study_u', 1)).toEqual([{ node_id: 'node_u1', num_examples: 7, loss: 0.3, histogram: null, stats, personalized_num_examples: null, personalized_stats: null }]);
      // One update and one evaluation per node and round.
      await expect(rounds.insertEvaluation(db, { study_id: 'study_u', round: 1, node_id: 'node_u1', num_examples: 7, loss: null, histogram: null, stats: JSON.stringify(stats) })).rejects.toThrow();
      await expect(rounds.insertUpdate(db, { study_id: 'study_u', round: 1, node_id: 'node_u1', sha256: 'other', bytes: 1, num_examples: 1, loss: null, meta: '{}', accepted_at: at })).rejects.toThrow();
    });

    test('round machine: the study, its nodes and models as a round sees them', async (db) => {
      await seedStudy(db, 'study_m');
      await seedNode(db, 'study_m', 'node_m2', { region: 'us' });
      await seedNode(db, 'study_m', 'node_m1', { region: 'eu' });
      await seedNode(db, 'study_m', 'node_m3', { region: 'eu' });
      expect(await rounds.listReadyNodeIds(db, 'study_m')).toEqual([]);
      await nodes.updateNode(db, 'node_m2', { state: 'ready' });
      await nodes.updateNode(db, 'node_m1', { state: 'ready' });
      await nodes.updateNode(db, 'node_m3', { state: 'privacy-ceiling' });
      expect(await rounds.listReadyNodeIds(db, 'study_m')).toEqual(['node_m1', 'node_m2']);
      expect(await rounds.nodeRegions(db, [])).toEqual([]);
      expect(await rounds.nodeRegions(db, ['node_m2', 'node_m1'])).toEqual([{ id: 'node_m1', region: 'eu' }, { id: 'node_m2', region: 'us' }]);
      expect(await rounds.nodeStates(db, [])).toEqual([]);
      expect(await rounds.nodeStates(db, ['node_m3', 'node_m1'])).toEqual([{ id: 'node_m1', state: 'ready' }, { id: 'node_m3', state: 'privacy-ceiling' }]);
      const seen = new Date(Date.now() + 5000);
      await rounds.markNodeSeen(db, 'node_m1', seen);
      expect((await db.selectFrom('nodes').select('last_seen_at').where('id', '=', 'node_m1').executeTakeFirstOrThrow()).last_seen_at).toEqual(seen);
      expect(await rounds.findStudyState(db, 'study_m')).toBe('running');
      expect(await rounds.findStudyState(db, 'study_none')).toBeUndefined();
      expect(await rounds.listRunningStudyIds(db)).toContain('study_m');
      await rounds.updateStudy(db, 'study_m', { state: 'completed', stop_reason: 'done', latest_model_version: 1 });
      expect(await rounds.findStudyState(db, 'study_m')).toBe('completed');
      expect(await rounds.listRunningStudyIds(db)).not.toContain('study_m');
      await expect(rounds.getModel(db, 'study_m', 0)).rejects.toThrow();
      await rounds.insertModel(db, { study_id: 'study_m', version: 0, weights: new Uint8Array([4, 5, 6]), sha256: 'hm0', bytes: 3, signature: 'sig', signer_fingerprint: 'fp' });
      const model = await rounds.getModel(db, 'study_m', 0);
      expect({ ...model, weights: Array.from(model.weights) }).toEqual({ weights: [4, 5, 6], sha256: 'hm0', bytes: 3 });
    });

    test('regions: stored updates and legacy sums per region, published regional models, the region report reads', async (db) => {
      await seedStudy(db, 'study_g');
      await seedNode(db, 'study_g', 'node_g2', { name: 'g2', region: 'eu', jurisdiction: null });
      await seedNode(db, 'study_g', 'node_g1', { name: 'g1', region: 'eu' });
      await seedNode(db, 'study_g', 'node_g3', { name: 'g3', region: 'us' });
      await seedRound(db, 'study_g', 1, ['node_g1', 'node_g2', 'node_g3']);
      // Legacy running sums (written before issue 13) are only read and dropped now.
      await db.insertInto('regional_accumulators').values([{ study_id: 'study_g', round: 1, region: 'us', state: new Uint8Array([3]) }, { study_id: 'study_g', round: 1, region: 'eu', state: new Uint8Array([1, 2]) }]).execute();
      const all = await regions.listRegionalAccumulators(db, 'study_g', 1);
      expect(all.map((r) => [r.region, Array.from(r.state)])).toEqual([['eu', [1, 2]], ['us', [3]]]);
      // What a region's model is folded from at close: the stored updates, in arrival order.
      await rounds.keepUpdate(db, { studyId: 'study_g', round: 1, nodeId: 'node_g3', bytes: new Uint8Array([7, 7]), weight: 2.5 });
      await rounds.keepUpdate(db, { studyId: 'study_g', round: 1, nodeId: 'node_g1', bytes: new Uint8Array([8]), weight: 4 });
      expect(await regions.listKeptUpdateRefs(db, 'study_g', 1)).toEqual([{ seq: 0, node_id: 'node_g3', weight: 2.5 }, { seq: 1, node_id: 'node_g1', weight: 4 }]);
      expect(Array.from(await regions.readKeptUpdate(db, 'study_g', 1, 1))).toEqual([8]);
      await rounds.dropKeptUpdates(db, 'study_g', 1);
      await regions.dropRegionalAccumulators(db, 'study_g', 1);
      expect(await regions.listRegionalAccumulators(db, 'study_g', 1)).toEqual([]);
      expect(await regions.nodeRegionsAndJurisdictions(db, [])).toEqual([]);
      expect((await regions.nodeRegionsAndJurisdictions(db, ['node_g1', 'node_g2'])).sort((a, b) => a.id.localeCompare(b.id))).toEqual([{ id: 'node_g1', region: 'eu', jurisdiction: 'EU-GDPR' }, { id: 'node_g2', region: 'eu', jurisdiction: null }]);
      expect(await regions.findRegionalModel(db, 'study_g', 'eu')).toBeUndefined();
      for (const version of [1, 2]) {
        await regions.insertRegionalModel(db, { study_id: 'study_g', version, region: 'eu', weights: new Uint8Array([version]), sha256: `hg${version}`, bytes: 1, nodes: 2, num_examples: 10 * version, signature: 'sig', signer_fingerprint: 'fp' });
      }
      expect(await regions.findRegionalModel(db, 'study_g', 'eu')).toMatchObject({ version: 2, sha256: 'hg2' });
      expect(await regions.findRegionalModel(db, 'study_g', 'eu', 1)).toMatchObject({ version: 1, sha256: 'hg1', num_examples: 10 });
      expect(await regions.findRegionalModel(db, 'study_g', 'eu', 3)).toBeUndefined();
      expect(await regions.findRegionalModel(db, 'study_g', 'us')).toBeUndefined();
      expect((await regions.listRegionalModelSummaries(db, 'study_g', 'eu')).sort((a, b) => a.version - b.version)).toEqual([{ version: 1, sha256: 'hg1', nodes: 2, num_examples: 10 }, { version: 2, sha256: 'hg2', nodes: 2, num_examples: 20 }]);
      expect(await regions.findStudyConfigRow(db, 'study_g')).toEqual({ id: 'study_g', config: { name: 'study_g', seed: 1 } });
      expect(await regions.findStudyConfigRow(db, 'study_none')).toBeUndefined();
      expect((await regions.listRegionMembers(db, 'study_g', 'eu')).map((m) => m.name)).toEqual(['g1', 'g2']);
      expect((await regions.listRoundPhases(db, 'study_g')).map((r) => [r.round, r.phase])).toEqual([[1, 'fit']]);
      await seedUpdate(db, 'study_g', 1, 'node_g1', new Date());
      await seedUpdate(db, 'study_g', 1, 'node_g3', new Date());
      expect(await regions.listNodeUpdates(db, 'study_g', [])).toEqual([]);
      expect(await regions.listNodeUpdates(db, 'study_g', ['node_g1', 'node_g2'])).toEqual([{ round: 1, node_id: 'node_g1', num_examples: 5, loss: 0.5 }]);
      expect(await regions.listNodeEvaluations(db, 'study_g', [])).toEqual([]);
      await rounds.insertEvaluation(db, { study_id: 'study_g', round: 1, node_id: 'node_g3', num_examples: 5, loss: null, histogram: null, stats: JSON.stringify({ kind: 'x' }) });
      expect(await regions.listNodeEvaluations(db, 'study_g', ['node_g1', 'node_g3'])).toEqual([{ round: 1, node_id: 'node_g3', histogram: null, stats: { kind: 'x' } }]);
    });

    test('keys: the coordinator keys on record, oldest first', async (db) => {
      expect(await keys.isKeyRecorded(db, 'FP-A')).toBe(false);
      const t = Date.now();
      await keys.recordKeyIfAbsent(db, { fingerprint: 'FP-A', public_key: 'pub-a', announcement: null, created_at: new Date(t - 2000) });
      // Start-up records its key every time: a key already on record stays as it was.
      await keys.recordKeyIfAbsent(db, { fingerprint: 'FP-A', public_key: 'pub-a-again', announcement: null });
      await keys.recordKey(db, { fingerprint: 'FP-B', public_key: 'pub-b', announcement: 'signed by A', created_at: new Date(t - 1000) });
      await expect(keys.recordKey(db, { fingerprint: 'FP-B', public_key: 'pub-b', announcement: 'again' })).rejects.toThrow();
      expect(await keys.isKeyRecorded(db, 'FP-A')).toBe(true);
      expect(await keys.isKeyRecorded(db, 'FP-B')).toBe(true);
      const history = await keys.listKeyHistory(db);
      expect(history.map((h) => [h.fingerprint, h.announcement])).toEqual([['FP-A', null], ['FP-B', 'signed by A']]);
      expect(await audit.firstCoordinatorPublicKey(db)).toBe('pub-a');
    });
  });
}
