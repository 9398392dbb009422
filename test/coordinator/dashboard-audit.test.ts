import { sql, type Transaction } from 'kysely';
import { expect } from 'vitest';
import { appendAudit, checkpointAudit, readAuditLog } from '../../coordinator/audit/audit-log.ts';
import { createAuditVerifier } from '../../coordinator/dashboard/audit-status.ts';
import type { Db } from '../../coordinator/db/database.ts';
import type { Database } from '../../coordinator/db/schema.ts';
import { entryHash } from '../../protocols/audit/audit-chain.ts';
import { describeOnEachBackend, type Harness } from './harness.ts';

/** Rewrites the log behind the coordinator's back, as a superuser could (replica mode skips the append-only triggers). */
async function asSuperuser(db: Db, fn: (tx: Transaction<Database>) => Promise<unknown>) {
  await db.transaction().execute(async (tx) => {
    await sql`set local session_replication_role = replica`.execute(tx);
    await fn(tx);
  });
}

/** `n` entries, a checkpoint after each `every` of them. */
async function grow(h: Harness, n: number, every = n) {
  for (let i = 1; i <= n; i++) {
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.entry', data: { i } });
    if (i % every === 0) await checkpointAudit(h.built.db, h.built.keyring);
  }
  return readAuditLog(h.built.db);
}

describeOnEachBackend("the dashboard's audit status (GET /v1/dashboard/audit), verified incrementally", (run) => {
  run('a later request verifies only the entries and checkpoints added since the last one', async (h) => {
    const before = await grow(h, 6, 2);
    const verifier = createAuditVerifier(h.built.db);
    expect(await verifier.status()).toMatchObject({ ok: true, entries: before.entries.length, checkpoints: before.checkpoints.length, uncheckpointedEntries: 0 });
    expect(verifier.stats).toEqual({ fullVerifications: 1, incrementalVerifications: 0, entriesVerified: before.entries.length, checkpointSignaturesVerified: before.checkpoints.length });

    const after = await grow(h, 5, 2); // two checkpoints, one entry left unsealed
    const second = await verifier.status();
    expect(second).toMatchObject({ ok: true, entries: after.entries.length, checkpoints: after.checkpoints.length, uncheckpointedEntries: 1, head: after.entries.at(-1)!.hash });
    expect(verifier.stats).toEqual({
      fullVerifications: 1,
      incrementalVerifications: 1,
      entriesVerified: after.entries.length,
      checkpointSignaturesVerified: after.checkpoints.length,
    });
    // The same answer a full verification gives.
    expect(second).toEqual(await createAuditVerifier(h.built.db).status());

    // Nothing new: no signature, no entry verified again. Then the unsealed entry gets sealed.
    expect(await verifier.status()).toEqual(second);
    expect(verifier.stats).toMatchObject({ fullVerifications: 1, entriesVerified: after.entries.length, checkpointSignaturesVerified: after.checkpoints.length });
    await checkpointAudit(h.built.db, h.built.keyring);
    const sealed = await readAuditLog(h.built.db);
    expect(await verifier.status()).toMatchObject({ ok: true, entries: sealed.entries.length, checkpoints: sealed.checkpoints.length, uncheckpointedEntries: 0 });
    expect(verifier.stats).toMatchObject({ fullVerifications: 1, entriesVerified: sealed.entries.length, checkpointSignaturesVerified: sealed.checkpoints.length });

    // The route answers from the app's own verifier.
    const res = await h.admin('get', '/v1/dashboard/audit');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ok: true, entries: sealed.entries.length, checkpoints: sealed.checkpoints.length });
  });

  run('concurrent requests share one verification', async (h) => {
    const log = await grow(h, 3);
    const verifier = createAuditVerifier(h.built.db);
    const answers = await Promise.all([1, 2, 3, 4].map(() => verifier.status()));
    for (const a of answers) expect(a).toEqual(answers[0]);
    expect(verifier.stats).toEqual({ fullVerifications: 1, incrementalVerifications: 0, entriesVerified: log.entries.length, checkpointSignaturesVerified: log.checkpoints.length });
    const more = await grow(h, 2);
    await Promise.all([1, 2, 3, 4].map(() => verifier.status()));
    expect(verifier.stats).toEqual({ fullVerifications: 1, incrementalVerifications: 1, entriesVerified: more.entries.length, checkpointSignaturesVerified: more.checkpoints.length });
  });

  run('an already verified entry changed in the database is reported broken, and so is the app route', async (h) => {
    await grow(h, 4, 2);
    const verifier = createAuditVerifier(h.built.db);
    expect((await verifier.status()).ok).toBe(true);
    expect((await h.admin('get', '/v1/dashboard/audit')).body.ok).toBe(true);
    await grow(h, 1);
    expect((await verifier.status()).ok).toBe(true); // warm: the next request would be incremental
    const { rows } = await sql<{ seq: number; data: string }>`select seq, data from audit_log where kind = 'test.entry' order by seq limit 1`.execute(h.built.db);
    const target = rows[0];
    await asSuperuser(h.built.db, (tx) => sql`update audit_log set data = jsonb_set(data::jsonb, '{tampered}', 'true')::text where seq = ${target.seq}`.execute(tx));
    try {
      const broken = await verifier.status();
      expect(broken).toMatchObject({ ok: false, problem: 'modified' });
      expect(broken.message).toContain(`entry ${target.seq} `);
      expect(await verifier.status()).toMatchObject({ ok: false, problem: 'modified' }); // and stays so
      expect((await h.admin('get', '/v1/dashboard/audit')).body).toMatchObject({ ok: false, problem: 'modified' });
    } finally {
      await asSuperuser(h.built.db, (tx) => sql`update audit_log set data = ${target.data} where seq = ${target.seq}`.execute(tx));
    }
    expect((await verifier.status()).ok).toBe(true);
  });

  run('a new checkpoint that is not signed, or a new entry that does not match its hash, is reported broken', async (h) => {
    await grow(h, 2);
    const verifier = createAuditVerifier(h.built.db);
    expect((await verifier.status()).ok).toBe(true);
    const head = (await grow(h, 1, 2)).entries.at(-1)!;
    const last = (await readAuditLog(h.built.db)).checkpoints.at(-1)!;
    // The previous checkpoint's signature under a new payload: well formed, numbered in turn, names the head.
    await sql`insert into audit_checkpoints (seq, head_hash, at, coordinator_fingerprint, signature, number) values (${head.seq}, ${head.hash}, ${last.at}, ${last.coordinatorFingerprint}, ${last.signature}, ${last.number! + 1})`.execute(h.built.db);
    try {
      expect(await verifier.status()).toMatchObject({ ok: false, problem: 'bad-checkpoint-signature', checkpoints: expect.any(Number) });
    } finally {
      await asSuperuser(h.built.db, (tx) => sql`delete from audit_checkpoints where number = ${last.number! + 1}`.execute(tx));
    }
    expect(await verifier.status()).toMatchObject({ ok: true, uncheckpointedEntries: 1 });

    // An entry chained to the head whose content does not match its recorded hash.
    const body = { seq: head.seq + 1, at: new Date().toISOString(), actor: 'test', kind: 'test.entry', studyId: null, round: null, data: { forged: true }, prevHash: head.hash };
    const hash = entryHash({ ...body, data: { forged: false } });
    await sql`insert into audit_log (seq, at, actor, kind, study_id, round, data, prev_hash, hash) values (${body.seq}, ${body.at}, 'test', 'test.entry', ${null}, ${null}, ${JSON.stringify(body.data)}, ${body.prevHash}, ${hash})`.execute(h.built.db);
    try {
      expect(await verifier.status()).toMatchObject({ ok: false, problem: 'modified' });
    } finally {
      await asSuperuser(h.built.db, (tx) => sql`delete from audit_log where seq = ${body.seq}`.execute(tx));
    }
    expect((await verifier.status()).ok).toBe(true);
  });
});
