import type { Kysely, Transaction } from 'kysely';
import { canonicalJson, entryHash, GENESIS_HASH, signCheckpoint, type AuditEntry, type AuditEntryBody, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import type { Database } from '../db/schema.ts';
import type { CoordinatorKeyring } from '../identity.ts';

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
    const head = await tx.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).forUpdate().executeTakeFirstOrThrow();
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
    await tx.insertInto('audit_log').values({ seq: entry.seq, at: entry.at, actor: entry.actor, kind: entry.kind, study_id: entry.studyId, round: entry.round, data: JSON.stringify(entry.data), prev_hash: entry.prevHash, hash: entry.hash }).execute();
    await tx.updateTable('audit_head').set({ seq: entry.seq, hash: entry.hash }).where('id', '=', 1).execute();
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
    const head = await tx.selectFrom('audit_head').select('seq').where('id', '=', 1).forUpdate().executeTakeFirstOrThrow();
    if (head.seq === 0) return undefined;
    const existing = await tx.selectFrom('audit_checkpoints').select('seq').where('seq', '=', head.seq).executeTakeFirst();
    if (existing) return undefined;
    const entry = toEntry(await tx.selectFrom('audit_log').selectAll().where('seq', '=', head.seq).executeTakeFirstOrThrow());
    const checkpoint = await signCheckpoint(entry, keyring.current.privateKey);
    await tx.insertInto('audit_checkpoints').values({ seq: checkpoint.seq, head_hash: checkpoint.headHash, at: checkpoint.at, coordinator_fingerprint: checkpoint.coordinatorFingerprint, signature: checkpoint.signature }).execute();
    return checkpoint;
  });
}

/** Everything an auditor needs: entries, checkpoints, and the coordinator's public key. */
export async function readAuditLog(db: Kysely<Database>): Promise<{ entries: AuditEntry[]; checkpoints: Checkpoint[] }> {
  const entries = (await db.selectFrom('audit_log').selectAll().orderBy('seq').execute()).map(toEntry);
  const checkpoints = (await db.selectFrom('audit_checkpoints').selectAll().orderBy('seq').execute()).map((c) => ({ seq: c.seq, headHash: c.head_hash, at: c.at, coordinatorFingerprint: c.coordinator_fingerprint, signature: c.signature }));
  return { entries, checkpoints };
}

/** The coordinator's first key: exports carry it, and the log's signed rotation entries lead from it to the others. */
export async function firstCoordinatorKey(db: Kysely<Database>): Promise<string> {
  const row = await db.selectFrom('coordinator_keys').select('public_key').orderBy('created_at').orderBy('fingerprint').executeTakeFirst();
  if (!row) throw new Error('this database has no coordinator key on record');
  return row.public_key;
}
