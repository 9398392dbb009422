import { AuditEntry, Checkpoint, entryHash, trustedCoordinatorKeys, verifyChain, verifyCheckpointSignature } from '../../protocols/audit/audit-chain.ts';
import { loadPublicKey, type PublicKey } from '../../protocols/crypto/keys.ts';
import { firstCoordinatorKey, toCheckpoint } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { auditPrefixDigests, listAuditEntriesAfter, listCheckpointsAfter } from './repository.ts';

type EntryRow = Database['audit_log'];
const toEntry = (r: EntryRow): AuditEntry => ({ seq: r.seq, at: r.at, actor: r.actor, kind: r.kind, studyId: r.study_id, round: r.round, data: JSON.parse(r.data), prevHash: r.prev_hash, hash: r.hash });

/** What GET /v1/dashboard/audit answers. */
export interface AuditStatus {
  ok: boolean;
  problem: string | null;
  message: string | null;
  entries: number;
  checkpoints: number;
  head: string | null;
  uncheckpointedEntries: number | null;
  lastCheckpoint: { seq: number; number: number | null; at: string; headHash: string; coordinatorFingerprint: string } | null;
}

/** The chain as last verified: everything after it is all a request has to check. */
interface Verified {
  seq: number;
  hash: string;
  /** Checkpoints verified, in seq then number order, and the last of them. */
  checkpoints: number;
  lastCheckpoint: Checkpoint;
  /** The database's digests of the verified rows (repository.ts): a changed one means a full verification. */
  digests: { entries: string; checkpoints: string };
  /** Coordinator keys by fingerprint, with the seq they are trusted from, and the latest (rotations chain from it). */
  trusted: Map<string, { key: PublicKey; fromSeq: number }>;
  latestKey: PublicKey;
}

/** Work done, for tests and for an operator wondering what a refresh costs. */
export interface AuditVerifierStats {
  fullVerifications: number;
  incrementalVerifications: number;
  entriesVerified: number;
  checkpointSignaturesVerified: number;
}

const lastCheckpointOf = (c: Checkpoint | undefined) => (c ? { seq: c.seq, number: c.number ?? null, at: c.at, headHash: c.headHash, coordinatorFingerprint: c.coordinatorFingerprint } : null);

/**
 * The audit chain's status for the dashboard, verified incrementally: the first request verifies
 * the whole log (verifyChain); later ones only the entries and checkpoints added since (chained
 * from the last verified hash, signed, numbered and matching), once the database confirms that
 * the rows already verified are unchanged. Anything that does not fit, a changed old row
 * included, falls back to the full verification, whose classified problem is what is shown.
 * A page refreshing every few seconds then costs a digest query, not a signature per checkpoint.
 * One verification runs at a time: concurrent requests share it.
 */
export function createAuditVerifier(db: Db) {
  let verified: Verified | null = null;
  let inFlight: Promise<AuditStatus> | null = null;
  const stats: AuditVerifierStats = { fullVerifications: 0, incrementalVerifications: 0, entriesVerified: 0, checkpointSignaturesVerified: 0 };

  // One snapshot per verification: the digests, entries and checkpoints read must agree.
  const snapshot = <T>(fn: (tx: Db) => Promise<T>) => db.transaction().setIsolationLevel('repeatable read').setAccessMode('read only').execute((tx) => fn(tx as unknown as Db));

  async function full(): Promise<AuditStatus> {
    stats.fullVerifications++;
    verified = null;
    return snapshot(async (tx) => {
      const entries = (await listAuditEntriesAfter(tx, 0)).map(toEntry);
      const headSeq = entries.at(-1)?.seq ?? 0;
      const checkpoints = (await listCheckpointsAfter(tx, 0)).map(toCheckpoint).filter((c) => c.seq <= headSeq);
      const last = checkpoints.at(-1);
      if (entries.length === 0) return { ok: true, problem: null, message: null, entries: 0, checkpoints: 0, head: null, uncheckpointedEntries: 0, lastCheckpoint: lastCheckpointOf(last) };
      const firstKey = await firstCoordinatorKey(tx);
      const result = await verifyChain(entries, checkpoints, firstKey, { allowUnsealedTail: true });
      stats.entriesVerified += entries.length;
      stats.checkpointSignaturesVerified += checkpoints.length;
      const head = entries[entries.length - 1].hash;
      if (!result.ok) return { ok: false, problem: result.problem, message: result.message, entries: entries.length, checkpoints: checkpoints.length, head, uncheckpointedEntries: null, lastCheckpoint: lastCheckpointOf(last) };
      if (last) {
        const key = await loadPublicKey(firstKey);
        const trusted = await trustedCoordinatorKeys(entries, key);
        verified = { seq: headSeq, hash: head, checkpoints: checkpoints.length, lastCheckpoint: last, digests: await auditPrefixDigests(tx, headSeq, checkpoints.length), trusted, latestKey: latestOf(trusted) };
      }
      return { ok: true, problem: null, message: null, entries: result.entries, checkpoints: result.checkpoints, head, uncheckpointedEntries: result.uncheckpointedEntries, lastCheckpoint: lastCheckpointOf(last) };
    });
  }

  /** Only what was added since `v`; null when something does not fit (then the full verification decides). */
  async function incremental(v: Verified): Promise<AuditStatus | null> {
    return snapshot(async (tx) => {
      const digests = await auditPrefixDigests(tx, v.seq, v.checkpoints);
      if (digests.entries !== v.digests.entries || digests.checkpoints !== v.digests.checkpoints) return null;
      // From the last checkpoint on: new checkpoints may seal entries verified while unsealed.
      const tail = (await listAuditEntriesAfter(tx, v.lastCheckpoint.seq)).map(toEntry);
      const fresh = tail.filter((e) => e.seq > v.seq);
      const newCheckpoints = (await listCheckpointsAfter(tx, v.checkpoints)).map(toCheckpoint);
      stats.incrementalVerifications++;
      const next = await verifyAdded(v, tail, fresh, newCheckpoints);
      if (!next) return null;
      if (next.seq !== v.seq || next.checkpoints !== v.checkpoints) next.digests = await auditPrefixDigests(tx, next.seq, next.checkpoints);
      verified = next;
      const c = next.lastCheckpoint;
      return { ok: true, problem: null, message: null, entries: next.seq, checkpoints: next.checkpoints, head: next.hash, uncheckpointedEntries: next.seq - c.seq, lastCheckpoint: lastCheckpointOf(c) };
    });
  }

  /** The new entries chain from `v`'s head, the new checkpoints are signed, numbered in turn and name the entries' hashes. */
  async function verifyAdded(v: Verified, tail: AuditEntry[], fresh: AuditEntry[], checkpoints: Checkpoint[]): Promise<Verified | null> {
    let seq = v.seq;
    let hash = v.hash;
    for (const e of fresh) {
      stats.entriesVerified++;
      if (!AuditEntry.safeParse(e).success || e.seq !== seq + 1 || e.prevHash !== hash || entryHash(e) !== e.hash) return null;
      seq = e.seq;
      hash = e.hash;
    }
    const added = await trustedCoordinatorKeys(fresh, v.latestKey);
    const trusted = new Map(v.trusted);
    for (const [fingerprint, signer] of added) if (!trusted.has(fingerprint)) trusted.set(fingerprint, signer);
    const hashAt = new Map(tail.map((e) => [e.seq, e.hash]));
    hashAt.set(v.lastCheckpoint.seq, v.lastCheckpoint.headHash);
    let last = v.lastCheckpoint;
    let count = v.checkpoints;
    for (const c of checkpoints) {
      if (c.seq > seq) break; // not in a consistent snapshot; counted from here by the next request
      const signer = trusted.get(c.coordinatorFingerprint);
      if (!Checkpoint.safeParse(c).success || c.seq < last.seq || hashAt.get(c.seq) !== c.headHash || (c.number !== undefined && c.number !== count + 1)) return null;
      stats.checkpointSignaturesVerified++;
      if (!signer || signer.fromSeq > c.seq || !(await verifyCheckpointSignature(c, signer.key))) return null;
      last = c;
      count++;
    }
    return { seq, hash, checkpoints: count, lastCheckpoint: last, digests: v.digests, trusted, latestKey: latestOf(trusted) };
  }

  async function run(): Promise<AuditStatus> {
    const v = verified;
    return (v && (await incremental(v))) || full();
  }

  return {
    stats,
    /** The chain as stored, verified up to its head (entries after the last checkpoint are counted, not refused: they are sealed at the round's end). */
    status(): Promise<AuditStatus> {
      inFlight ??= run().finally(() => {
        inFlight = null;
      });
      return inFlight;
    },
  };
}

/** The key trusted from the highest seq: a rotation announced next must be signed by it. */
function latestOf(trusted: Map<string, { key: PublicKey; fromSeq: number }>): PublicKey {
  return [...trusted.values()].reduce((a, b) => (b.fromSeq >= a.fromSeq ? b : a)).key;
}
export type AuditVerifier = ReturnType<typeof createAuditVerifier>;
