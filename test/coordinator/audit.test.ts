import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import request from 'supertest';
import { AuditEntry, Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { verifyAuditExport, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, tinyStudy } from './harness.ts';

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
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-audit-'));

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      h = await inProcessCoordinator(backend);
      studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await h!.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, weights(0.5), defaultMeta(10))).status).toBe(201);
      expect((await h.submit(b, studyId, 1, weights(0.7), defaultMeta(10))).status).toBe(201);
      await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      for (const node of [a, b]) {
        await h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, { numExamples: 2, loss: 0.4, histogram: { bins: 2, positives: [0, 1], negatives: [1, 0] } }, `${studyId}/1`);
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
      await writeAuditExport(out, { entries: res.body.entries.map((e: unknown) => AuditEntry.parse(e)), checkpoints: res.body.checkpoints.map((c: unknown) => Checkpoint.parse(c)), coordinatorPublicKeyArmored: res.body.coordinatorPublicKey, exportedAt: res.body.exportedAt, source: 'test' });
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

    it('the database refuses UPDATE, DELETE and TRUNCATE of audit rows, even for the app\'s own role', async (ctx) => {
      if (!h) return ctx.skip();
      const db = h.built.db;
      await expect(sql`update audit_log set actor = 'someone-else' where seq = 1`.execute(db)).rejects.toThrow(/append-only/);
      await expect(sql`delete from audit_log where seq = 1`.execute(db)).rejects.toThrow(/append-only/);
      await expect(sql`truncate audit_log`.execute(db)).rejects.toThrow(/append-only/);
      await expect(sql`delete from audit_checkpoints`.execute(db)).rejects.toThrow(/append-only/);
      const still = await db.selectFrom('audit_log').select('actor').where('seq', '=', 1).executeTakeFirstOrThrow();
      expect(still.actor).not.toBe('someone-else');
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
      await writeAuditExport(out, { entries: res.body.entries.map((e: unknown) => AuditEntry.parse(e)), checkpoints: res.body.checkpoints.map((c: unknown) => Checkpoint.parse(c)), coordinatorPublicKeyArmored: res.body.coordinatorPublicKey, exportedAt: res.body.exportedAt, source: 'test' });
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
