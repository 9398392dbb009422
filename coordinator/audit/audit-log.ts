import type { Kysely, Transaction } from 'kysely';
import { canonicalJson, entryHash, GENESIS_HASH, signCheckpoint, type AuditEntry, type AuditEntryBody, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import type { Database } from '../db/schema.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { findAuditEntry, firstCoordinatorPublicKey, hasCheckpointAt, insertAuditEntry, insertCheckpoint, listAuditEntries, listCheckpoints, lockAuditHead, setAuditHead } from './repository.ts';

type Executor = Kysely<Database> | Transaction<Database>;

export interface AuditFields {
  actor: string;
  kind: string;
  studyId?: string | null;
  round?: number | null;
  /** Facts only: sizes, hashes, norms, counts, configurations. Never weights or rows. */
  data?: Record<string, unknown>;
}

function toEntry(row: Database['audit_log'] extends infer R ? { [K in keyof R]: R[K] } : never): AuditEntry {
  return { seq: row.seq, at: row.at, actor: row.actor, kind: row.kind, studyId: row.study_id, round: row.round, data: JSON.parse(row.data), prevHash: row.prev_hash, hash: row.hash };
}

/**
 * Appends one entry, chained to the head, inside the caller's transaction when it has one (so
 * the entry commits or rolls back with the event it records). The head row's lock serializes
 * appends across connections.
 */
export async function appendAudit(db: Executor, fields: AuditFields): Promise<AuditEntry> {
  const run = async (tx: Transaction<Database>) => {
    // The head row holds the last entry's seq and hash: locking it serializes appends, and the
    // new entry chains to it without reading the previous entry back.
    const head = await lockAuditHead(tx);
    const body: AuditEntryBody = {
      seq: head.seq + 1,
      at: new Date().toISOString(),
      actor: fields.actor,
      kind: fields.kind,
      studyId: fields.studyId ?? null,
      round: fields.round ?? null,
      data: JSON.parse(canonicalJson(fields.data ?? {})) as Record<string, unknown>,
      prevHash: head.seq === 0 ? GENESIS_HASH : head.hash!,
    };
    const entry: AuditEntry = { ...body, hash: entryHash(body) };
    await insertAuditEntry(tx, { seq: entry.seq, at: entry.at, actor: entry.actor, kind: entry.kind, study_id: entry.studyId, round: entry.round, data: JSON.stringify(entry.data), prev_hash: entry.prevHash, hash: entry.hash });
    await setAuditHead(tx, entry.seq, entry.hash);
    return entry;
  };
  return 'isTransaction' in db && db.isTransaction ? run(db as Transaction<Database>) : (db as Kysely<Database>).transaction().execute(run);
}

export interface CheckpointOptions {
  /** Tries in all (a lost connection, a serialization failure, a signing hiccup are transient). */
  attempts?: number;
  /** Wait before the first retry; doubled before each later one. */
  retryDelayMs?: number;
}

/**
 * Signs the current head: called at each round's end, at start-up and before an export. Retried
 * with backoff, because callers at a round's end cannot stall the study on it, and a head left
 * unsigned leaves its entries' deletion undetectable until the next checkpoint. Throws only after
 * the last attempt; then the next checkpoint covers these entries too.
 */
export async function checkpointAudit(db: Kysely<Database>, keyring: Pick<CoordinatorKeyring, 'current'>, options: CheckpointOptions = {}): Promise<Checkpoint | undefined> {
  const attempts = Math.max(1, options.attempts ?? 4);
  const delay = options.retryDelayMs ?? 200;
  for (let attempt = 1; ; attempt++) {
    try {
      return await checkpointOnce(db, keyring);
    } catch (err) {
      if (attempt >= attempts) throw new Error(`audit checkpoint failed after ${attempts} attempt${attempts > 1 ? 's' : ''}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      await new Promise((r) => setTimeout(r, delay * 2 ** (attempt - 1)));
    }
  }
}

async function checkpointOnce(db: Kysely<Database>, keyring: Pick<CoordinatorKeyring, 'current'>): Promise<Checkpoint | undefined> {
  return db.transaction().execute(async (tx) => {
    const head = await lockAuditHead(tx);
    if (head.seq === 0) return undefined;
    if (await hasCheckpointAt(tx, head.seq)) return undefined;
    const row = await findAuditEntry(tx, head.seq);
    if (!row) throw new Error(`audit head names entry ${head.seq}, which is not in the log`);
    const checkpoint = await signCheckpoint(toEntry(row), keyring.current.privateKey);
    await insertCheckpoint(tx, { seq: checkpoint.seq, head_hash: checkpoint.headHash, at: checkpoint.at, coordinator_fingerprint: checkpoint.coordinatorFingerprint, signature: checkpoint.signature });
    return checkpoint;
  });
}

/** Everything an auditor needs: entries, checkpoints, and the coordinator's public key. */
export async function readAuditLog(db: Kysely<Database>): Promise<{ entries: AuditEntry[]; checkpoints: Checkpoint[] }> {
  const entries = (await listAuditEntries(db)).map(toEntry);
  const checkpoints = (await listCheckpoints(db)).map((c) => ({ seq: c.seq, headHash: c.head_hash, at: c.at, coordinatorFingerprint: c.coordinator_fingerprint, signature: c.signature }));
  return { entries, checkpoints };
}

/** The coordinator's first key: exports carry it, and the log's signed rotation entries lead from it to the others. */
export async function firstCoordinatorKey(db: Kysely<Database>): Promise<string> {
  const key = await firstCoordinatorPublicKey(db);
  if (key === undefined) throw new Error('this database has no coordinator key on record');
  return key;
}

/** The auditor's export: a fresh signed checkpoint first, so no entry is left unsigned. */
export async function exportAuditLog(db: Kysely<Database>, keyring: Pick<CoordinatorKeyring, 'current'>) {
  await checkpointAudit(db, keyring);
  const log = await readAuditLog(db);
  return { ...log, coordinatorPublicKey: await firstCoordinatorKey(db), exportedAt: new Date().toISOString() };
}
