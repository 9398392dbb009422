import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { verifyChain } from '../../protocols/audit/audit-chain.ts';
import { exportAuditLog } from '../../coordinator/audit/audit-log.ts';
import type { RefusalLog } from '../../coordinator/http/refusals.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { ADMIN, inProcessCoordinator, type Harness } from './harness.ts';

/** The allowance of unauthenticated refusals per source in these tests (the default is 300 a minute). */
const LIMIT = 40;

/** Waits, when needed, until a minute boundary is at least `seconds` away: the counts are per minute. */
async function awayFromMinuteEnd(seconds: number) {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < seconds * 1000) await new Promise((r) => setTimeout(r, left + 50));
}

const auditCount = async (h: Harness) => Number((await h.built.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const counts = (h: Harness) => h.built.db.selectFrom('refusal_counts').selectAll().orderBy('reason').execute();

/**
 * Bounded logging (issue 11): a flood of unauthenticated requests grows counts, not the
 * hash-chained audit log; fields from the request are bounded; past the allowance, a source is
 * answered 429 with Retry-After before anything else is done.
 */
for (const backendName of BACKEND_NAMES) {
  describe(`refusals of unauthenticated requests on ${backendName}`, () => {
    let h: Harness | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend, undefined, { rateLimitRefusals: LIMIT, rateLimitWindowSeconds: 60 });
    });
    afterAll(async () => h?.close());

    it('a flood of refusals is one counted row per source, minute and reason; the audit log gains one entry per reason; every field is bounded', async (ctx) => {
      if (!h) return ctx.skip();
      await awayFromMinuteEnd(15);
      const before = await auditCount(h);
      const hugeId = 'r'.repeat(8000);
      const longPath = `/v1/${'p'.repeat(6000)}`;
      const statuses: number[] = [];
      for (let i = 0; i < 12; i++) statuses.push((await request(h.app).get('/v1/tokens').set('x-request-id', hugeId)).status);
      for (let i = 0; i < 8; i++) statuses.push((await request(h.app).get('/v1/tokens').set('authorization', 'Bearer fmtok_guessed-0000000000000000')).status);
      for (let i = 0; i < 10; i++) statuses.push((await request(h.app).get(longPath).set('user-agent', 'u'.repeat(7000))).status);
      expect(statuses).toEqual([...Array(20).fill(401), ...Array(10).fill(404)]);

      const rows = await counts(h);
      expect(rows.map((r) => [r.actor, r.reason, Number(r.count), r.status])).toEqual([
        ['anonymous', 'NOT_FOUND', 10, 404],
        ['anonymous', 'UNAUTHENTICATED: missing bearer token (Authorization: Bearer <token>)', 12, 401],
        ['anonymous', 'UNAUTHENTICATED: unknown API token', 8, 401],
      ]);
      expect(new Set(rows.map((r) => r.source)).size).toBe(1);
      for (const r of rows) expect(JSON.stringify(r.sample).length).toBeLessThan(600);

      // One audit entry per 401 reason (an unknown path refuses nothing: counted, not audited).
      const entries = await h.built.db.selectFrom('audit_log').selectAll().where('seq', '>', before).orderBy('seq').execute();
      expect(entries.map((e) => e.kind)).toEqual(['auth.failed', 'auth.failed']);
      for (const e of entries) {
        expect(e.data.length).toBeLessThan(1000);
        expect(JSON.parse(e.data)).toMatchObject({ counted: true, status: 401, code: 'UNAUTHENTICATED' });
      }
      // The client's 8000-character request id was not kept or echoed: a fresh one replaced it.
      expect(entries.some((e) => e.data.includes('rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr'))).toBe(false);
    });

    it('past the allowance a source gets 429 with Retry-After before its body is read or its token looked up; the 429s are counted, not audited; the audit chain verifies', async (ctx) => {
      if (!h) return ctx.skip();
      await awayFromMinuteEnd(10);
      // The first test used 30 of the 40 (the window is a minute, from the first refusal): ten more
      // refusals (malformed enrollments), and the next request is over.
      let refused = 0;
      while ((await request(h.app).post('/v1/nodes/enroll').send({ token: 'x' })).status === 400 && refused < 100) refused++;
      expect(refused).toBe(LIMIT - 30);
      const auditBefore = await auditCount(h);
      const huge = await request(h.app).post('/v1/studies').set('authorization', `Bearer ${ADMIN}`).set('content-type', 'application/json').send(Buffer.alloc(3_000_000, 0x20));
      expect(huge.status).toBe(429); // not 413: the body was never read; not 201/400: the admin token was never looked up
      expect(Number(huge.headers['retry-after'])).toBeGreaterThan(0);
      expect(huge.body.error.code).toBe('RATE_LIMITED');
      for (let i = 0; i < 24; i++) expect((await request(h.app).get('/v1/tokens')).status).toBe(429);
      expect(await auditCount(h)).toBe(auditBefore);

      await (h.app.locals.refusals as RefusalLog).flush();
      const limited = (await counts(h)).filter((r) => r.reason === 'RATE_LIMITED');
      expect(limited.reduce((n, r) => n + Number(r.count), 0)).toBe(1 + 1 + 24);

      // The log is still one valid hash chain, with signed checkpoints over it (read directly: the
      // admin shares the throttled address).
      const log = await exportAuditLog(h.built.db, h.built.keyring);
      expect(await verifyChain(log.entries, log.checkpoints, log.coordinatorPublicKey)).toMatchObject({ ok: true });
    });
  });
}

describe('the refusal limit does not slow authenticated callers or public reads', () => {
  let h: Harness | undefined;
  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!, undefined, { rateLimitRefusals: 3, rateLimitWindowSeconds: 60 });
  });
  afterAll(async () => h?.close());

  it('an admin refused 30 times, and 30 health checks, are never throttled; an authenticated refusal is audited with bounded fields', async () => {
    for (let i = 0; i < 30; i++) {
      const res = await request(h!.app).post('/v1/studies').set('authorization', `Bearer ${ADMIN}`).set('x-request-id', 'q'.repeat(5000)).send({ name: 'x'.repeat(300) });
      expect(res.status).toBe(400);
    }
    for (let i = 0; i < 30; i++) expect((await request(h!.app).get('/healthz')).status).toBe(200);
    const last = await h!.built.db.selectFrom('audit_log').selectAll().where('kind', '=', 'request.refused').orderBy('seq', 'desc').executeTakeFirstOrThrow();
    expect(last.actor).toBe('admin:bootstrap-admin');
    expect(last.data.length).toBeLessThan(1000);
    expect(last.data).not.toContain('qqqqqqqqqqqqqqqq');
    // Three strangers' refusals use the allowance up.
    for (let i = 0; i < 3; i++) expect((await request(h!.app).get('/v1/tokens')).status).toBe(401);
    expect((await request(h!.app).get('/v1/tokens')).status).toBe(429);
  });
});
