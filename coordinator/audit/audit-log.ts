import type { Kysely, Transaction } from 'kysely';
import { canonicalJson, entryHash, GENESIS_HASH, signCheckpoint, verifyCheckpointSignature, type AuditEntry, type AuditEntryBody, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { signAuditExport } from '../../protocols/audit/audit-export.ts';
import type { Database } from '../db/schema.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { AuditHeadRefusedError, readSignedHead, requireExtendsSignedHead, writeSignedHead, type SignedHead } from './audit-head.ts';
import { appendAuditEntriesIfHead, countCheckpoints, findAuditEntry, findCheckpoint, firstCoordinatorPublicKey, insertAuditEntriesAndSetHead, insertCheckpoint, latestCheckpoint, listAuditEntries, listCheckpoints, lockAuditHead, type AuditCheckpointRow } from './repository.ts';

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
 * the entry commits or rolls back with the event it records). Appends are serialized across
 * connections and replicas by the head row: a compare-and-swap on it, or its lock (appendAudits).
 */
export async function appendAudit(db: Executor, fields: AuditFields): Promise<AuditEntry> {
  return (await appendAudits(db, [fields]))[0];
}

/**
 * Appends entries in order, each chained to the one before (the first to the head), inside the
 * caller's transaction when it has one.
 *
 * The common case is one statement: a compare-and-swap from the head this process last saw on
 * this database (`knownHeads`). When the head moved since (another transaction, another replica,
 * or an append this process made in a transaction that then rolled back), nothing is written and
 * the append takes the head's lock and chains to what it reads, as before. A remembered head is
 * only ever a guess: the swap writes nothing unless the database's head row still holds it.
 */
export async function appendAudits(db: Executor, all: AuditFields[]): Promise<AuditEntry[]> {
  if (all.length === 0) return [];
  const known = knownHeads.get(handleOf(db));
  if (known) {
    const entries = chainEntries(known, all);
    // Without a transaction the single statement is atomic on its own (no begin/commit needed).
    if (await appendAuditEntriesIfHead(db, known, entries.map(toRow))) return remember(db, entries);
  }
  const run = async (tx: Transaction<Database>) => {
    // The head row holds the last entry's seq and hash: locking it serializes appends, and the
    // new entry chains to it without reading the previous entry back.
    const head = await lockAuditHead(tx);
    const entries = chainEntries({ seq: head.seq, hash: head.seq === 0 ? GENESIS_HASH : head.hash! }, all);
    await insertAuditEntriesAndSetHead(tx, entries.map(toRow));
    return remember(tx, entries);
  };
  return 'isTransaction' in db && db.isTransaction ? run(db as Transaction<Database>) : (db as Kysely<Database>).transaction().execute(run);
}

/**
 * The head after this process's last append, per database handle (a transaction shares its
 * Kysely's dialect adapter, so the adapter names the database the handle talks to). Set after
 * the append's statement succeeded, before its transaction commits: if it rolls back, the next
 * append's compare-and-swap finds another head row and falls back to the lock.
 */
const knownHeads = new WeakMap<object, { seq: number; hash: string }>();
const handleOf = (db: Executor): object => db.getExecutor().adapter;

function remember(db: Executor, entries: AuditEntry[]): AuditEntry[] {
  const last = entries[entries.length - 1];
  knownHeads.set(handleOf(db), { seq: last.seq, hash: last.hash });
  return entries;
}

function chainEntries(head: { seq: number; hash: string }, all: AuditFields[]): AuditEntry[] {
  const entries: AuditEntry[] = [];
  let prev = head;
  for (const fields of all) {
    const body: AuditEntryBody = {
      seq: prev.seq + 1,
      at: new Date().toISOString(),
      actor: fields.actor,
      kind: fields.kind,
      studyId: fields.studyId ?? null,
      round: fields.round ?? null,
      data: JSON.parse(canonicalJson(fields.data ?? {})) as Record<string, unknown>,
      prevHash: prev.hash,
    };
    const entry: AuditEntry = { ...body, hash: entryHash(body) };
    entries.push(entry);
    prev = entry;
  }
  return entries;
}

const toRow = (e: AuditEntry) => ({ seq: e.seq, at: e.at, actor: e.actor, kind: e.kind, study_id: e.studyId, round: e.round, data: JSON.stringify(e.data), prev_hash: e.prevHash, hash: e.hash });

/**
 * What signing a checkpoint needs: the current key, and where the last signed head is kept
 * (CoordinatorKeyring: beside the key). Without `auditHeadFile` (a bare key in tests) nothing
 * guards against signing a rewritten database.
 */
export type CheckpointKeyring = Pick<CoordinatorKeyring, 'current'> & { readonly auditHeadFile?: string };

export const toCheckpoint = (c: AuditCheckpointRow): Checkpoint => ({ seq: c.seq, headHash: c.head_hash, at: c.at, coordinatorFingerprint: c.coordinator_fingerprint, ...(c.number !== null ? { number: c.number } : {}), signature: c.signature });

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
export async function checkpointAudit(db: Kysely<Database>, keyring: CheckpointKeyring, options: CheckpointOptions = {}): Promise<Checkpoint | undefined> {
  const attempts = Math.max(1, options.attempts ?? 4);
  const delay = options.retryDelayMs ?? 200;
  for (let attempt = 1; ; attempt++) {
    try {
      return await serialized(keyring.auditHeadFile ?? '', () => checkpointOnce(db, keyring));
    } catch (err) {
      // A refusal is not transient: retrying would only repeat the alarm.
      if (err instanceof AuditHeadRefusedError) {
        await recordRefusal(db, err);
        throw err;
      }
      if (attempt >= attempts) throw new Error(`audit checkpoint failed after ${attempts} attempt${attempts > 1 ? 's' : ''}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      await new Promise((r) => setTimeout(r, delay * 2 ** (attempt - 1)));
    }
  }
}

/** One checkpoint at a time per head file: the file is written after the commit, in commit order. */
const queues = new Map<string, Promise<unknown>>();
function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const run = (queues.get(key) ?? Promise.resolve()).then(fn, fn);
  queues.set(key, run.catch(() => undefined));
  return run;
}

/**
 * Signs the head unless it is already signed; first checks that the database still extends the
 * head signed last (audit-head.ts). The head file is written after the commit: a crash in
 * between leaves it one checkpoint behind, which the next checkpoint still extends.
 */
async function checkpointOnce(db: Kysely<Database>, keyring: CheckpointKeyring): Promise<Checkpoint | undefined> {
  const headFile = keyring.auditHeadFile;
  const signed = headFile ? readSignedHead(headFile) : undefined;
  const outcome = await db.transaction().execute(async (tx) => {
    const head = await lockAuditHead(tx);
    if (head.seq === 0) return undefined;
    // With a signed head, its check has read the head's entry and the checkpoints already.
    const checked = signed ? await requireExtendsSignedHead(tx, signed, head) : undefined;
    const existing = checked ? checked.checkpointAtHead : await findCheckpoint(tx, head.seq);
    if (existing) return { checkpoint: toCheckpoint(existing), isNew: false };
    const row = checked ? checked.headRow : await findAuditEntry(tx, head.seq);
    if (!row) throw new Error(`audit head names entry ${head.seq}, which is not in the log`);
    const number = (checked ? checked.checkpointCount : await countCheckpoints(tx)) + 1;
    const checkpoint = await signCheckpoint(toEntry(row), keyring.current.privateKey, new Date().toISOString(), number);
    await insertCheckpoint(tx, { seq: checkpoint.seq, head_hash: checkpoint.headHash, at: checkpoint.at, coordinator_fingerprint: checkpoint.coordinatorFingerprint, number, signature: checkpoint.signature });
    return { checkpoint, isNew: true };
  });
  if (!outcome) return undefined;
  // An existing checkpoint (the head file lagging after a crash, or absent before the first
  // guarded checkpoint) is recorded only if this key really signed it.
  if (headFile && (outcome.isNew || (await isOwnNewerCheckpoint(outcome.checkpoint, signed, keyring)))) await writeSignedHead(headFile, outcome.checkpoint);
  return outcome.isNew ? outcome.checkpoint : undefined;
}

async function isOwnNewerCheckpoint(c: Checkpoint, signed: SignedHead | undefined, keyring: CheckpointKeyring): Promise<boolean> {
  if (signed && c.seq <= signed.seq) return false;
  return verifyCheckpointSignature(c, keyring.current.publicKey);
}

/** The refusal goes into the log too (best effort: the database is the suspect), so an auditor sees when the alarm was raised. */
async function recordRefusal(db: Kysely<Database>, err: AuditHeadRefusedError): Promise<void> {
  const { seq, hash, checkpointNumber, at } = err.signed;
  await appendAudit(db, { actor: 'coordinator', kind: 'audit.checkpoint-refused', data: { reason: err.message, signedHead: { seq, hash, checkpointNumber, at } } }).catch(() => undefined);
}

/** Everything an auditor needs: entries, checkpoints, and the coordinator's public key. */
export async function readAuditLog(db: Kysely<Database>, options: { upToSeq?: number } = {}): Promise<{ entries: AuditEntry[]; checkpoints: Checkpoint[] }> {
  const upTo = options.upToSeq ?? Number.MAX_SAFE_INTEGER;
  const entries = (await listAuditEntries(db)).map(toEntry).filter((e) => e.seq <= upTo);
  const checkpoints = (await listCheckpoints(db)).map(toCheckpoint).filter((c) => c.seq <= upTo);
  return { entries, checkpoints };
}

/** The coordinator's first key: exports carry it, and the log's signed rotation entries lead from it to the others. */
export async function firstCoordinatorKey(db: Kysely<Database>): Promise<string> {
  const key = await firstCoordinatorPublicKey(db);
  if (key === undefined) throw new Error('this database has no coordinator key on record');
  return key;
}

/**
 * The auditor's export: a fresh signed checkpoint first, so no entry is left unsigned (refused,
 * and so no export, when the database does not extend the head signed last), then the log and
 * the coordinator's signature over the manifest the exporter will write.
 */
export async function exportAuditLog(db: Kysely<Database>, keyring: CheckpointKeyring) {
  await checkpointAudit(db, keyring);
  // Up to the last checkpoint only: entries appended since (this very request may add some) would
  // be an unsealed tail, which the verifier refuses; they go into the next export.
  const log = await readAuditLog(db, { upToSeq: (await latestCheckpoint(db))?.seq ?? 0 });
  const coordinatorPublicKey = await firstCoordinatorKey(db);
  const exportedAt = new Date().toISOString();
  const manifestSignature = await signAuditExport({ ...log, coordinatorPublicKeyArmored: coordinatorPublicKey, exportedAt }, keyring.current.privateKey);
  return { ...log, coordinatorPublicKey, exportedAt, manifestSignature };
}
