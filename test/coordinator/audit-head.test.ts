import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { exportFromDatabase } from '../../coordinator/audit/audit-export-sources.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { CoordinatorKeyring } from '../../coordinator/identity.ts';
import { verifyAuditExport } from '../../protocols/audit/audit-export.ts';
import { AuditHeadRefusedError, readSignedHead } from '../../coordinator/audit/audit-head.ts';
import { appendAudit, checkpointAudit, readAuditLog } from '../../coordinator/audit/audit-log.ts';
import type { Db } from '../../coordinator/db/database.ts';
import { appendEntry, type AuditEntry } from '../../protocols/audit/audit-chain.ts';
import { describeOnEachBackend, type Harness } from './harness.ts';

/**
 * The database owner's attack, as issue 11 reproduced it: without the coordinator key, but with
 * superuser SQL. Triggers off (session_replication_role = replica skips them, as DISABLE TRIGGER
 * would), an entry deleted from the middle, every later entry renumbered and rehashed, the head
 * row moved, every checkpoint dropped. The chain is then internally consistent: only the head the
 * coordinator signed last, kept beside its key, shows that it is not the one it signed.
 */
async function forgeHistory(db: Db, deleteSeq: number): Promise<AuditEntry[]> {
  const { entries } = await readAuditLog(db);
  const forged: AuditEntry[] = entries.slice(0, deleteSeq - 1);
  for (const e of entries.slice(deleteSeq)) {
    forged.push(appendEntry(forged.at(-1) ?? null, { at: e.at, actor: e.actor, kind: e.kind, studyId: e.studyId, round: e.round, data: e.data }));
  }
  await db.transaction().execute(async (tx) => {
    await sql`set local session_replication_role = replica`.execute(tx);
    await sql`delete from audit_log where seq >= ${deleteSeq}`.execute(tx);
    for (const e of forged.slice(deleteSeq - 1)) {
      await sql`insert into audit_log (seq, at, actor, kind, study_id, round, data, prev_hash, hash) values (${e.seq}, ${e.at}, ${e.actor}, ${e.kind}, ${e.studyId}, ${e.round}, ${JSON.stringify(e.data)}, ${e.prevHash}, ${e.hash})`.execute(tx);
    }
    const head = forged.at(-1)!;
    await sql`update audit_head set seq = ${head.seq}, hash = ${head.hash} where id = 1`.execute(tx);
    await sql`delete from audit_checkpoints`.execute(tx);
  });
  return forged;
}

async function someHistory(h: Harness) {
  const studyId = await h.createStudy();
  // Not ready: no round starts, so nothing is appended behind the test's back.
  await h.enroll(studyId, 'node-a', false);
  await h.enroll(studyId, 'node-b', false);
  return studyId;
}

const checkpointCount = async (db: Db) => Number((await sql<{ n: string }>`select count(*) as n from audit_checkpoints`.execute(db)).rows[0].n);

describeOnEachBackend('the coordinator signs only a head that extends the one it signed last', (run) => {
  run('keeps the signed head beside its key, numbers checkpoints, and signs a head that extends it', async (h) => {
    await someHistory(h);
    const first = await checkpointAudit(h.built.db, h.built.keyring);
    expect(first).toBeDefined();
    const onFile = readSignedHead(h.built.keyring.auditHeadFile);
    expect(onFile).toMatchObject({ seq: first!.seq, hash: first!.headHash, checkpointNumber: first!.number });
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.later' });
    const second = await checkpointAudit(h.built.db, h.built.keyring);
    expect(second).toMatchObject({ number: first!.number! + 1 });
    expect(readSignedHead(h.built.keyring.auditHeadFile)).toMatchObject({ seq: second!.seq, hash: second!.headHash, checkpointNumber: second!.number });
  });

  run('a database owner rewrites the log and drops the checkpoints: the coordinator refuses to certify it, logs an alarm, and the export fails', async (h) => {
    await someHistory(h);
    await checkpointAudit(h.built.db, h.built.keyring);
    const signed = readSignedHead(h.built.keyring.auditHeadFile)!;
    expect(existsSync(h.built.keyring.auditHeadFile)).toBe(true);
    // The study's first enrollment disappears; the chain is recomputed around the gap.
    const { entries } = await readAuditLog(h.built.db);
    const victim = entries.find((e) => e.kind === 'node.enrolled')!;
    const forged = await forgeHistory(h.built.db, victim.seq);
    expect(forged.at(-1)!.seq).toBe(signed.seq - 1);

    // At the next checkpoint (a round's end, start-up, shutdown):
    const refused = await checkpointAudit(h.built.db, h.built.keyring).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(AuditHeadRefusedError);
    expect((refused as Error).message).toMatch(new RegExp(`^AUDIT ALARM: refusing to sign the audit head: the database's audit head is seq ${signed.seq - 1}, behind the head this coordinator last signed \\(seq ${signed.seq}, hash ${signed.hash.slice(0, 12)}, checkpoint #${signed.checkpointNumber}`));
    expect(await checkpointCount(h.built.db)).toBe(0);
    // The refusal is in the log as well.
    const after = await readAuditLog(h.built.db);
    expect(after.entries.at(-1)).toMatchObject({ kind: 'audit.checkpoint-refused', data: { signedHead: { seq: signed.seq, hash: signed.hash } } });

    // More activity does not launder it: the forged chain now extends past seq signed.seq, but entry signed.seq is not the signed one.
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.later' });
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.later' });
    await expect(checkpointAudit(h.built.db, h.built.keyring)).rejects.toThrow(new RegExp(`entry ${signed.seq} in the database hashes to [0-9a-f]{12}, not to the head this coordinator last signed`));

    // And the auditor's export is refused with the reason, instead of certifying the forged head.
    const res = await h.admin('get', '/v1/audit/export');
    expect(res.status, JSON.stringify(res.body)).toBe(409);
    expect(res.body.error).toMatchObject({ code: 'AUDIT_HEAD_REFUSED', message: expect.stringMatching(/^AUDIT ALARM: refusing to sign the audit head: entry \d+ in the database hashes to/) });
    expect(await checkpointCount(h.built.db)).toBe(0);
    // The file still names what was signed: a restart does not forget it.
    expect(readSignedHead(h.built.keyring.auditHeadFile)).toEqual(signed);
    await h.restart();
    await expect(checkpointAudit(h.built.db, h.built.keyring)).rejects.toThrow(/^AUDIT ALARM: refusing to sign the audit head/);
    expect(await checkpointCount(h.built.db)).toBe(0);
  });
});

describeOnEachBackend('the signed head survives what the database owner can do without the key', (run) => {
  run('cutting the tail and its checkpoint (no recomputation) is refused; so is dropping a middle checkpoint', async (h) => {
    await someHistory(h);
    await checkpointAudit(h.built.db, h.built.keyring);
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.later' });
    const second = (await checkpointAudit(h.built.db, h.built.keyring))!;
    // Drop only checkpoint #1: the head is intact, but a checkpoint the coordinator made is gone.
    await h.built.db.transaction().execute(async (tx) => {
      await sql`set local session_replication_role = replica`.execute(tx);
      await sql`delete from audit_checkpoints where number = 1`.execute(tx);
    });
    await appendAudit(h.built.db, { actor: 'test', kind: 'test.later' });
    await expect(checkpointAudit(h.built.db, h.built.keyring)).rejects.toThrow(new RegExp(`the database holds 1 checkpoints, but this coordinator has signed ${second.number}`));
    // Cut the tail with the last checkpoint: the head falls behind the signed one.
    await h.built.db.transaction().execute(async (tx) => {
      await sql`set local session_replication_role = replica`.execute(tx);
      await sql`delete from audit_log where seq >= ${second.seq}`.execute(tx);
      await sql`delete from audit_checkpoints where seq >= ${second.seq}`.execute(tx);
      await sql`update audit_head set seq = ${second.seq - 1}, hash = (select hash from audit_log where seq = ${second.seq - 1}) where id = 1`.execute(tx);
    });
    await expect(checkpointAudit(h.built.db, h.built.keyring)).rejects.toThrow(new RegExp(`audit head is seq ${second.seq - 1}, behind the head this coordinator last signed \\(seq ${second.seq}`));
  });
});

describe('an export straight from the database, signed with --key-dir', () => {
  it('is refused when the database does not extend the head the coordinator signed last', async () => {
    const work = mkdtempSync(join(tmpdir(), 'fedmark-audit-head-export-'));
    try {
      const dataDir = join(work, 'db');
      const keyDir = join(work, 'keys');
      const passphrase = 'audit-head-passphrase-0123';
      const opened = await openDatabase({ dataDir });
      const keyring = await CoordinatorKeyring.open(opened.db, keyDir, passphrase);
      for (let i = 0; i < 4; i++) await appendAudit(opened.db, { actor: 'test', kind: 'test.entry', data: { i } });
      await checkpointAudit(opened.db, keyring);
      await opened.db.destroy();
      // Honest: the export is signed.
      await exportFromDatabase({ dataDir, out: join(work, 'honest'), keyDir, passphrase });
      expect(await verifyAuditExport(join(work, 'honest'))).toMatchObject({ ok: true, manifestSignedBy: keyring.current.fingerprint.toLowerCase() });
      // The database owner rewrites it: the operator's signing export refuses, naming why.
      const owner = await openDatabase({ dataDir });
      await forgeHistory(owner.db, 2);
      await owner.db.destroy();
      await expect(exportFromDatabase({ dataDir, out: join(work, 'forged'), keyDir, passphrase })).rejects.toThrow(/^AUDIT ALARM: refusing to sign the audit head: the database's audit head is seq \d+, behind the head this coordinator last signed/);
      expect(existsSync(join(work, 'forged', 'manifest.json'))).toBe(false);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 60_000);
});
