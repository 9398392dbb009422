import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import request from 'supertest';
import { appendAudit, checkpointAudit } from '../../coordinator/audit/audit-log.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { APP_ROLE } from '../../coordinator/db/migrations/20261129_0009_app_role.ts';
import { CoordinatorKeyring } from '../../coordinator/identity.ts';
import { IDENTITY_FILES, loadOrCreateIdentity } from '../../protocols/crypto/index.ts';
import { AuditEntry, Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { verifyAuditExport, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { BACKEND_NAMES, backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, tinyStudy, evaluation } from './harness.ts';

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

for (const backendName of BACKEND_NAMES) {
  describe(`audit log on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    let studyId: string;
    let auditorToken: string;
    /** PostgreSQL: the app connects as a LOGIN member of fedmark_app; the owner only migrates. */
    let database: Awaited<ReturnType<DatabaseBackend['create']>> | undefined;
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-audit-'));

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      // The whole flow below (study, enrollment, updates, aggregation, evaluation, tokens) runs
      // as the production app role on PostgreSQL: a missing grant fails it.
      h = await inProcessCoordinator({ ...backend, create: async () => (database = await backend.create({ appRole: true })) });
      studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await h!.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, weights(0.5), defaultMeta(10))).status).toBe(201);
      expect((await h.submit(b, studyId, 1, weights(0.7), defaultMeta(10))).status).toBe(201);
      await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      for (const node of [a, b]) {
        await h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1], [1, 0], 0.4), `${studyId}/1`);
      }
      await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.state === 'completed' ? true : undefined));
      await request(h.app).get(`/v1/studies/${studyId}`).set('authorization', 'Bearer fmtok_forged-token-000000000000'); // an authentication failure
      auditorToken = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'auditor' })).body.token;
    });
    afterAll(async () => {
      await h?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('records every event, with sizes, hashes and norms but never values', async (ctx) => {
      if (!h) return ctx.skip();
      const res = await request(h.app).get('/v1/audit/export').set('authorization', `Bearer ${auditorToken}`);
      expect(res.status).toBe(200);
      const kinds = res.body.entries.map((e: { kind: string }) => e.kind);
      for (const kind of ['study.created', 'node.enrolled', 'node.status', 'round.started', 'update.received', 'aggregate.published', 'evaluation.received', 'round.completed', 'study.completed', 'auth.failed', 'token.created']) {
        expect(kinds).toContain(kind);
      }
      const update = res.body.entries.find((e: { kind: string }) => e.kind === 'update.received');
      expect(update.data).toMatchObject({ bytes: expect.any(Number), sha256: expect.stringMatching(/^[0-9a-f]{64}$/), deltaNorm: expect.any(Number), numExamples: 10 });
      expect(JSON.stringify(update.data)).not.toMatch(/values|0\.5,0\.5/);
      const started = res.body.entries.find((e: { kind: string }) => e.kind === 'round.started');
      expect(started.data.participants).toHaveLength(2);
      expect(started.data.config.rounds).toBe(1);
      expect(res.body.checkpoints.length).toBeGreaterThanOrEqual(1);
    });

    it('exports to a folder that verifies offline, and a tampered copy does not', async (ctx) => {
      if (!h) return ctx.skip();
      const res = await request(h.app).get('/v1/audit/export').set('authorization', `Bearer ${auditorToken}`);
      const out = join(dir, 'export');
      await writeAuditExport(out, { entries: res.body.entries.map((e: unknown) => AuditEntry.parse(e)), checkpoints: res.body.checkpoints.map((c: unknown) => Checkpoint.parse(c)), coordinatorPublicKeyArmored: res.body.coordinatorPublicKey, exportedAt: res.body.exportedAt, source: 'test', manifestSignature: res.body.manifestSignature });
      const ok = await verifyAuditExport(out);
      expect(ok.ok).toBe(true);
      const lines = readFileSync(join(out, 'entries.jsonl'), 'utf8').split('\n');
      const i = lines.findIndex((l) => l.includes('"update.received"'));
      lines[i] = lines[i].replace(/"numExamples":10/, '"numExamples":11');
      writeFileSync(join(out, 'entries.jsonl'), lines.join('\n'));
      const bad = await verifyAuditExport(out);
      expect(bad.ok).toBe(false);
      if (!bad.ok) {
        expect(bad.problem).toBe('modified');
        expect(bad.seq).toBe(i + 1);
      }
    });

    it('the triggers refuse UPDATE, DELETE and TRUNCATE of audit rows, even for the schema owner', async (ctx) => {
      if (!h) return ctx.skip();
      // PGlite: the app's own (superuser) session; PostgreSQL: the owner that ran the migrations.
      const owner = database?.migrationDatabaseUrl ? (await openDatabase({ databaseUrl: database.migrationDatabaseUrl, mode: 'read-only' })).db : h.built.db;
      try {
        // Read-only would refuse the writes before the triggers could: lift it for this session's transactions.
        const tx = async (statement: ReturnType<typeof sql>) => owner.transaction().execute(async (t) => {
          await sql`set transaction read write`.execute(t);
          await statement.execute(t);
        });
        await expect(tx(sql`update audit_log set actor = 'someone-else' where seq = 1`)).rejects.toThrow(/append-only/);
        await expect(tx(sql`delete from audit_log where seq = 1`)).rejects.toThrow(/append-only/);
        await expect(tx(sql`truncate audit_log`)).rejects.toThrow(/append-only/);
        await expect(tx(sql`delete from audit_checkpoints`)).rejects.toThrow(/append-only/);
        const still = await owner.selectFrom('audit_log').select('actor').where('seq', '=', 1).executeTakeFirstOrThrow();
        expect(still.actor).not.toBe('someone-else');
      } finally {
        if (owner !== h.built.db) await owner.destroy();
      }
    });

    it('PostgreSQL: the app\'s role can append but cannot change, remove, or switch off the guards on audit rows', async (ctx) => {
      if (!h || backendName !== 'postgres') return ctx.skip();
      expect(database?.appLogin).toBeDefined();
      const app = new pg.Client({ connectionString: database!.databaseUrl });
      await app.connect();
      try {
        const me = await app.query(`select current_user as role, rolsuper from pg_roles where rolname = current_user`);
        expect(me.rows[0]).toEqual({ role: database!.appLogin, rolsuper: false });
        expect((await app.query(`select pg_has_role(current_user, '${APP_ROLE}', 'MEMBER') as member`)).rows[0].member).toBe(true);
        const before = (await app.query('select seq, hash from audit_log order by seq')).rows;
        const checkpointsBefore = (await app.query('select count(*)::int as n from audit_checkpoints')).rows[0].n;
        const attacks: Array<[string, RegExp]> = [
          [`update audit_log set actor = 'someone-else' where seq = 1`, /permission denied for table audit_log/],
          [`delete from audit_log where seq = 1`, /permission denied for table audit_log/],
          [`truncate audit_log`, /permission denied for table audit_log/],
          [`update audit_checkpoints set signature = 'x'`, /permission denied for table audit_checkpoints/],
          [`delete from audit_checkpoints`, /permission denied for table audit_checkpoints/],
          [`truncate audit_checkpoints`, /permission denied for table audit_checkpoints/],
          [`alter table audit_log disable trigger audit_log_no_update`, /must be owner of table audit_log/],
          [`alter table audit_log disable trigger all`, /must be owner of table audit_log/],
          [`drop trigger audit_log_no_update on audit_log`, /must be owner of (table|relation) audit_log/],
          [`alter table audit_log owner to ${database!.appLogin}`, /must be owner of table audit_log/],
          [`set session_replication_role = replica`, /permission denied to set parameter "session_replication_role"/],
        ];
        for (const [statement, error] of attacks) {
          await expect(app.query(statement), statement).rejects.toThrow(error);
        }
        // Nothing changed, and the app's ordinary work still succeeds as this role.
        expect((await app.query('select seq, hash from audit_log order by seq')).rows).toEqual(before);
        expect((await app.query('select count(*)::int as n from audit_checkpoints')).rows[0].n).toBe(checkpointsBefore);
        const appended = await appendAudit(h.built.db, { actor: 'test', kind: 'test.appended-as-app-role' });
        expect(appended.seq).toBe(before.length + 1);
        expect(await checkpointAudit(h.built.db, h.built.keyring)).toMatchObject({ seq: appended.seq });
        // The coordinator sees nothing to warn about for this role.
        const { checkAppRole } = await import('../../coordinator/db/database.ts');
        expect(await checkAppRole(h.built.db)).toEqual([]);
      } finally {
        await app.end();
      }
    });

    it('PostgreSQL: start-up warns when the app connects as a superuser or the audit tables\' owner', async (ctx) => {
      if (!h || backendName !== 'postgres') return ctx.skip();
      const { checkAppRole } = await import('../../coordinator/db/database.ts');
      const owner = await openDatabase({ databaseUrl: database!.migrationDatabaseUrl, mode: 'read-only' });
      try {
        const problems = await checkAppRole(owner.db);
        expect(problems.join('\n')).toMatch(/superuser "postgres": it can switch the audit log's append-only triggers off/);
        expect(problems.join('\n')).toContain('FEDMARK_MIGRATION_DATABASE_URL');
      } finally {
        await owner.db.destroy();
      }
    });

    it('names the acting token, and audits issued enrollment tokens without the token', async (ctx) => {
      if (!h) return ctx.skip();
      const created = (await h.admin('post', '/v1/tokens').send({ role: 'admin', name: 'second operator' })).body as { id: string; token: string };
      const as = (method: 'post', path: string) => request(h!.app)[method](path).set('authorization', `Bearer ${created.token}`);
      const study = (await as('post', '/v1/studies').send(tinyStudy({ minNodesToStart: 99 }))).body.id as string;
      const issued = (await as('post', '/v1/enrollment-tokens').send({ studyId: study, nodeName: 'audited', region: 'us' })).body as { token: string; expiresAt: string };
      const enrolled = await h.enroll(study, 'revoke-me', false);
      expect((await as('post', `/v1/nodes/${enrolled.nodeId}/revoke`).send({ reason: 'test' })).status).toBe(200);
      const { entries } = (await request(h.app).get('/v1/audit/export').set('authorization', `Bearer ${auditorToken}`)).body as { entries: Array<{ kind: string; actor: string; studyId: string | null; data: Record<string, unknown> }> };
      const mine = entries.filter((e) => e.studyId === study);
      expect(mine.find((e) => e.kind === 'study.created')?.actor).toBe(`admin:${created.id}`);
      expect(mine.find((e) => e.kind === 'node.revoked')?.actor).toBe(`admin:${created.id}`);
      const tokens = mine.filter((e) => e.kind === 'enrollment-token.issued');
      expect(tokens).toHaveLength(2); // ours, and the harness's (by the bootstrap admin)
      const ours = tokens.find((e) => e.data.nodeName === 'audited')!;
      expect(ours.actor).toBe(`admin:${created.id}`);
      expect(ours.data).toMatchObject({ studyId: study, nodeName: 'audited', region: 'us', expiresAt: issued.expiresAt, tokenHashPrefix: expect.stringMatching(/^[0-9a-f]{16}$/) });
      const { createHash } = await import('node:crypto');
      expect(createHash('sha256').update(issued.token).digest('hex').startsWith(String(ours.data.tokenHashPrefix))).toBe(true);
      expect(JSON.stringify(entries)).not.toContain(issued.token);
      expect(tokens.find((e) => e.data.nodeName === 'revoke-me')?.actor).toBe('admin:bootstrap-admin');
    });

    it('a key rotation whose audit entry cannot be written leaves the old key in force', async (ctx) => {
      if (!h) return ctx.skip();
      const owner = database?.migrationDatabaseUrl ? (await openDatabase({ databaseUrl: database.migrationDatabaseUrl })).db : h.built.db;
      const before = (await request(h.app).get('/v1/coordinator/key')).body as { fingerprint: string; rotations: unknown[] };
      const keysBefore = await h.built.db.selectFrom('coordinator_keys').select('fingerprint').execute();
      const headBefore = await h.built.db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow();
      // Make exactly the rotation's audit append fail, as a full disk or a lost connection would.
      await sql`create function fail_key_rotated() returns trigger language plpgsql as $$
        begin if new.kind = 'coordinator.key-rotated' then raise exception 'simulated audit failure'; end if; return new; end $$`.execute(owner);
      await sql`create trigger fail_key_rotated before insert on audit_log for each row execute function fail_key_rotated()`.execute(owner);
      try {
        expect((await h.admin('post', '/v1/coordinator/key/rotate').send({})).status).toBe(500);
      } finally {
        await sql`drop trigger fail_key_rotated on audit_log`.execute(owner);
        await sql`drop function fail_key_rotated()`.execute(owner);
        if (owner !== h.built.db) await owner.destroy();
      }
      const after = (await request(h.app).get('/v1/coordinator/key')).body as { fingerprint: string; rotations: unknown[] };
      expect(after.fingerprint).toBe(before.fingerprint);
      expect(after.rotations).toEqual(before.rotations);
      expect(await h.built.db.selectFrom('coordinator_keys').select('fingerprint').execute()).toEqual(keysBefore);
      expect(h.built.keyring.current.fingerprint).toBe(before.fingerprint);
      // What stays on disk is the old key, nothing staged.
      const keyDir = join(h.built.keyring.current.files.privateKey, '..');
      expect(readdirSync(keyDir).filter((f) => f.startsWith('retired-') || f === 'rotating')).toEqual(readdirSync(keyDir).filter((f) => f.startsWith('retired-')));
      expect(existsSync(join(keyDir, 'rotating'))).toBe(false);
      // The refusal itself is audited; no rotation entry was.
      const head = await h.built.db.selectFrom('audit_log').select(['seq', 'kind']).where('seq', '>', headBefore.seq).execute();
      expect(head.map((e) => e.kind)).not.toContain('coordinator.key-rotated');
    });

    it('still verifies after a coordinator key rotation: the log carries the signed announcement', async (ctx) => {
      if (!h) return ctx.skip();
      const first = (await request(h.app).get('/v1/coordinator/key')).body.fingerprint;
      expect((await h.admin('post', '/v1/coordinator/key/rotate').send({})).status).toBe(201);
      await h.createStudy(tinyStudy({ minNodesToStart: 99 })); // an event after the rotation
      const res = await request(h.app).get('/v1/audit/export').set('authorization', `Bearer ${auditorToken}`);
      const signers = new Set(res.body.checkpoints.map((c: { coordinatorFingerprint: string }) => c.coordinatorFingerprint));
      expect(signers.size).toBe(2); // checkpoints by the old key and by the new one
      const out = join(dir, 'rotated');
      await writeAuditExport(out, { entries: res.body.entries.map((e: unknown) => AuditEntry.parse(e)), checkpoints: res.body.checkpoints.map((c: unknown) => Checkpoint.parse(c)), coordinatorPublicKeyArmored: res.body.coordinatorPublicKey, exportedAt: res.body.exportedAt, source: 'test', manifestSignature: res.body.manifestSignature });
      const verified = await verifyAuditExport(out, { expectedFingerprint: first });
      expect(verified.ok).toBe(true);
    });

    it('only admins and auditors may export', async (ctx) => {
      if (!h) return ctx.skip();
      const analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'x', region: 'eu' })).body.token;
      expect((await request(h.app).get('/v1/audit/export').set('authorization', `Bearer ${analyst}`)).status).toBe(403);
    });
  });
}

describe('audit checkpoints and key rotation, without a server', () => {
  let opened: Awaited<ReturnType<typeof openDatabase>>;
  const root = mkdtempSync(join(tmpdir(), 'fedmark-audit-unit-'));
  beforeAll(async () => {
    opened = await openDatabase({ dataDir: join(root, 'db') });
  });
  afterAll(async () => {
    await opened.db.destroy();
    rmSync(root, { recursive: true, force: true });
  });

  it('a checkpoint that fails transiently is retried, and reports the cause once it gives up', async () => {
    const keyring = await CoordinatorKeyring.open(opened.db, join(root, 'keys'), 'test-coordinator-passphrase');
    await appendAudit(opened.db, { actor: 'test', kind: 'test.entry' });
    let failures = 2;
    const flaky = {
      get current() {
        if (failures-- > 0) throw new Error('signing key busy');
        return keyring.current;
      },
    };
    const checkpoint = await checkpointAudit(opened.db, flaky, { attempts: 3, retryDelayMs: 1 });
    expect(checkpoint?.seq).toBe(1);
    await appendAudit(opened.db, { actor: 'test', kind: 'test.entry' });
    const broken = { get current(): never { throw new Error('signing key gone'); } };
    await expect(checkpointAudit(opened.db, broken, { attempts: 2, retryDelayMs: 1 })).rejects.toThrow(/audit checkpoint failed after 2 attempts: signing key gone/);
  });

  it('finishes a rotation the database recorded before a crash, and drops one it never recorded', async () => {
    const keyDir = join(root, 'crash-keys');
    const first = await CoordinatorKeyring.open(opened.db, keyDir, 'test-coordinator-passphrase');
    const oldFingerprint = first.current.fingerprint;
    // Crash after the commit: the new key is staged and on record, the files never moved.
    const staged = await loadOrCreateIdentity(join(keyDir, 'rotating'), { name: 'fedmark coordinator', passphrase: 'test-coordinator-passphrase' });
    await opened.db.insertInto('coordinator_keys').values({ fingerprint: staged.fingerprint, public_key: staged.publicKeyArmored, announcement: 'recorded' }).execute();
    const reopened = await CoordinatorKeyring.open(opened.db, keyDir, 'test-coordinator-passphrase');
    expect(reopened.current.fingerprint).toBe(staged.fingerprint);
    expect(existsSync(join(keyDir, `retired-${oldFingerprint}`, IDENTITY_FILES.privateKey))).toBe(true);
    expect(reopened.decryptionKeys.map((k) => k.fingerprint)).toEqual([staged.fingerprint, oldFingerprint]);
    expect(existsSync(join(keyDir, 'rotating'))).toBe(false);
    // Crash before the commit: a staged key nobody announced is discarded.
    const orphan = await loadOrCreateIdentity(join(keyDir, 'rotating'), { name: 'fedmark coordinator', passphrase: 'test-coordinator-passphrase' });
    const again = await CoordinatorKeyring.open(opened.db, keyDir, 'test-coordinator-passphrase');
    expect(again.current.fingerprint).toBe(staged.fingerprint);
    expect(again.current.fingerprint).not.toBe(orphan.fingerprint);
    expect(existsSync(join(keyDir, 'rotating'))).toBe(false);
  });

  it('a restart with a wrong passphrase never deletes a staged key the database announced', async () => {
    const keyDir = join(root, 'crash-keys-passphrase');
    await CoordinatorKeyring.open(opened.db, keyDir, 'test-coordinator-passphrase');
    const staged = await loadOrCreateIdentity(join(keyDir, 'rotating'), { name: 'fedmark coordinator', passphrase: 'test-coordinator-passphrase' });
    await opened.db.insertInto('coordinator_keys').values({ fingerprint: staged.fingerprint, public_key: staged.publicKeyArmored, announcement: 'recorded' }).execute();
    await expect(CoordinatorKeyring.open(opened.db, keyDir, 'a-mistyped-passphrase')).rejects.toThrow();
    expect(existsSync(join(keyDir, 'rotating', IDENTITY_FILES.privateKey))).toBe(true);
    // With the right passphrase the announced key becomes current, as after any interrupted rotation.
    const reopened = await CoordinatorKeyring.open(opened.db, keyDir, 'test-coordinator-passphrase');
    expect(reopened.current.fingerprint).toBe(staged.fingerprint);
  });
});
