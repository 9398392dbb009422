import { readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { entryHash, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import type { Db } from '../db/database.ts';
import { ConflictError } from '../errors.ts';
import { findCheckpointsAndCount, listAuditEntriesFrom, type AuditCheckpointRow, type AuditLogRow } from './repository.ts';

/**
 * The last head the coordinator signed, kept beside its key (`audit-head.json` in the key folder),
 * outside the database. Whoever owns the database can disable the append-only triggers, delete
 * entries, recompute every hash and drop the checkpoints; without this file the coordinator would
 * then sign the forged head at its next checkpoint. With it, the coordinator signs only a head
 * whose chain still holds the head it signed last (same seq, same hash, intact links from there),
 * with every checkpoint it made still in place; anything else is refused and raised as an alarm.
 *
 * What it cannot stop: whoever holds the key folder (and so the key) can remove the file too.
 * A database restored from an older backup is refused as well, on purpose: the operator accepts
 * it by moving the file aside, a deliberate act, and the witnesses still hold the lost history.
 */
export const AUDIT_HEAD_FILE = 'audit-head.json';

export const SignedHead = z.strictObject({
  type: z.literal('fedmark-audit-head'),
  seq: z.number().int().min(1),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  /** The checkpoint's number; null for one signed before checkpoints were numbered. */
  checkpointNumber: z.number().int().min(1).nullable(),
  at: z.string(),
  coordinatorFingerprint: z.string(),
});
export type SignedHead = z.infer<typeof SignedHead>;

/** The coordinator will not sign this head: the database does not extend what it signed before. */
export class AuditHeadRefusedError extends ConflictError {
  constructor(
    message: string,
    readonly signed: SignedHead,
  ) {
    // 409 for an export (the log's state conflicts with what was signed; the refusal is audited
    // with its reason); checkpoints at a round's end, start-up and shutdown log it as an error.
    super('AUDIT_HEAD_REFUSED', `AUDIT ALARM: refusing to sign the audit head: ${message}`);
  }
}

/** The signed head on file, or undefined before the first checkpoint (then the database is trusted once). */
export function readSignedHead(path: string): SignedHead | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  // A file that does not parse is not "no file": that would re-open trust on first use.
  const parsed = SignedHead.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${path} is not a signed audit head: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/**
 * Atomically replaces the file: temporary file, fsync, rename, fsync of the folder (the rename
 * itself must survive a crash). Asynchronous (libuv's thread pool): the two fsyncs took ~3 ms a
 * checkpoint on this machine's disk with the event loop blocked, every round (issue 13); the
 * caller awaits it, so the checkpoint is still on disk before it counts as written.
 */
export async function writeSignedHead(path: string, checkpoint: Checkpoint): Promise<void> {
  const head: SignedHead = { type: 'fedmark-audit-head', seq: checkpoint.seq, hash: checkpoint.headHash, checkpointNumber: checkpoint.number ?? null, at: checkpoint.at, coordinatorFingerprint: checkpoint.coordinatorFingerprint };
  const tmp = `${path}.tmp-${process.pid}`;
  const file = await open(tmp, 'w', 0o600);
  try {
    await file.writeFile(JSON.stringify(head, null, 2) + '\n');
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * Throws AuditHeadRefusedError unless the database's chain from `signed.seq` to `head` is intact
 * and starts with the signed head, and every checkpoint up to the signed one is still there.
 * Reads only the entries since the last checkpoint (those before it are tied to it by their hashes).
 * Returns what a new checkpoint needs from the same reads (issue 13: a checkpoint took 10
 * statements, now 6): the head's entry, the checkpoint at the head if any, and how many there are.
 */
export async function requireExtendsSignedHead(tx: Db, signed: SignedHead, head: { seq: number; hash: string | null }): Promise<ExtendsSignedHead> {
  const refuse = (message: string): never => {
    throw new AuditHeadRefusedError(message, signed);
  };
  const last = `the head this coordinator last signed (seq ${signed.seq}, hash ${signed.hash.slice(0, 12)}, checkpoint ${signed.checkpointNumber !== null ? `#${signed.checkpointNumber}` : 'unnumbered'}, ${signed.at})`;
  if (head.seq < signed.seq) {
    refuse(`the database's audit head is seq ${head.seq}, behind ${last}: entries ${head.seq + 1}..${signed.seq} were deleted (or the database was restored from an older backup)`);
  }
  const rows = await listAuditEntriesFrom(tx, signed.seq);
  let expectedSeq = signed.seq;
  let prevHash: string | null = null;
  let headRow: AuditLogRow | undefined;
  for (const row of rows) {
    const entry = { seq: row.seq, at: row.at, actor: row.actor, kind: row.kind, studyId: row.study_id, round: row.round, data: JSON.parse(row.data), prevHash: row.prev_hash };
    if (row.seq !== expectedSeq) refuse(`entry ${expectedSeq} is missing from the database (found ${row.seq} next), after ${last}`);
    if (entryHash(entry) !== row.hash) refuse(`entry ${row.seq} in the database does not match its recorded hash: it was altered after ${last}`);
    if (prevHash === null && row.hash !== signed.hash) refuse(`entry ${row.seq} in the database hashes to ${row.hash.slice(0, 12)}, not to ${last}: the log was rewritten (hashes recomputed)`);
    if (prevHash !== null && row.prev_hash !== prevHash) refuse(`entry ${row.seq} does not link to entry ${row.seq - 1}: the chain after ${last} was rewritten`);
    prevHash = row.hash;
    headRow = row;
    expectedSeq++;
  }
  if (prevHash === null || !headRow) refuse(`entry ${signed.seq} is missing from the database: it held ${last}`);
  if (expectedSeq - 1 !== head.seq || prevHash !== head.hash) refuse(`the database's head row (seq ${head.seq}) is not the end of the chain (seq ${expectedSeq - 1})`);
  const { found, count } = await findCheckpointsAndCount(tx, [signed.seq, head.seq]);
  const checkpoint = found.find((c) => c.seq === signed.seq);
  if (!checkpoint || checkpoint.head_hash !== signed.hash || (checkpoint.number ?? null) !== signed.checkpointNumber) {
    refuse(`the checkpoint it made at seq ${signed.seq}${signed.checkpointNumber !== null ? ` (#${signed.checkpointNumber})` : ''} is ${checkpoint ? 'different' : 'no longer'} in the database: checkpoints were dropped or replaced`);
  }
  if (signed.checkpointNumber !== null && count < signed.checkpointNumber) {
    refuse(`the database holds ${count} checkpoints, but this coordinator has signed ${signed.checkpointNumber}: checkpoints were dropped`);
  }
  return { headRow: headRow!, checkpointAtHead: found.find((c) => c.seq === head.seq), checkpointCount: count };
}

export interface ExtendsSignedHead {
  /** The entry the head row names (the last one the chain check read). */
  headRow: AuditLogRow;
  checkpointAtHead: AuditCheckpointRow | undefined;
  checkpointCount: number;
}
