/**
 * The audit log's pure core: entries, their hash chain, signed checkpoints and the offline verifier.
 *
 * ## The chain
 * Every entry carries `prevHash`, the hash of the entry before it (64 zeros for seq 1), and `hash`:
 *
 *     hash = sha256hex("FEDMARK-AUDIT-V1\n" + canonicalJson({seq, at, actor, kind, studyId, round, data, prevHash}))
 *
 * Canonical JSON (object keys sorted by UTF-16 code units, no whitespace, numbers and strings as
 * `JSON.stringify` prints them, i.e. the RFC 8785 / JCS form for the values we store) is what makes
 * the hash reproducible: the coordinator keeps `data` in a PostgreSQL `jsonb` column, and jsonb
 * does not keep key order (nor whitespace), so a hash over "the JSON as written" would not survive
 * a round trip through the database, and an auditor re-serializing an entry with any other tool
 * would get another hash. The hash depends only on the values. (Store `at` as text, exactly as
 * hashed: a timestamptz column would re-format it.) `appendEntry` re-checks the previous entry's
 * hash, so a lossy round trip through the database fails at the next append, not at the audit.
 *
 * ## Checkpoints
 * At each round's end (and at start-up, shutdown and before an export) the coordinator signs
 * `canonicalJson({seq, headHash, at, coordinatorFingerprint, number})` (UTF-8 bytes, binary
 * OpenPGP detached signature) with its key; `number` counts its checkpoints 1, 2, 3, ... (absent
 * on checkpoints signed before numbering, whose payload lacks it). The chain alone proves that
 * nothing was changed *inside* the exported prefix; only a signed checkpoint proves how far the
 * chain went (deleting or rewriting the tail is invisible to the chain itself). So entries after
 * the last checkpoint fail verification unless `allowUnsealedTail` (then they are counted), and so
 * does a gap in the numbers or a log with entries and no checkpoint.
 * A verifier that trusts the key shipped inside the export trusts whoever made the export: pass
 * `expectedFingerprint` (the fingerprint the operator published) to pin the coordinator key.
 *
 * ## How `verifyChain` classifies the first problem
 * Checks run in this order; the first failure is reported:
 *   1. malformed: an entry or checkpoint that does not match its schema, `data` that is not plain
 *      JSON, an unreadable coordinator key (or a private key in its place).
 *   2. the chain, scanned in the given order. An entry is *intact* when its recorded `hash` equals
 *      the hash of its content. The scan accepts entry after entry while it is intact, has
 *      seq = s (the expected seq: 1, 2, 3, ...) and prevHash = H (the hash of the last accepted
 *      entry, zeros at the start). At the first entry e (position p, 1-based; in an export p is
 *      the line of entries.jsonl) that is not accepted, in this order:
 *      R1 e.hash is the hash of an already accepted entry -> 'inserted' (a copy), seq e.seq.
 *      R2 e is not intact (its content changed after it was hashed):
 *         - if the next entry has seq s and links to H, and nothing links to e -> 'inserted'
 *           (a forged extra entry), seq e.seq;
 *         - if e.seq = s or e.prevHash = H (e stands in slot s; a changed seq or prevHash field is
 *           itself a modification) -> 'modified', seq s;
 *         - otherwise neither its seq nor its link fit slot s: the structural rules below decide
 *           (e.g. entry 12 deleted and entry 13 edited reports the deletion of 12 first).
 *      R3 e links to an accepted entry A other than the last one (a fork: two entries claim A as
 *         predecessor). If a later entry links to e and none links to the last accepted entry,
 *         the accepted entries after A are the extra ones -> 'inserted', seq of the first of them
 *         (this is how an entry inserted with a recomputed hash shows up). Otherwise e is the
 *         extra one -> 'inserted', seq e.seq.
 *      R4 e.seq = s (e links to something other than H):
 *         - seq 1 must link to the zeros -> 'modified', seq 1;
 *         - the next entry links to e (or e is last): e is where the chain continues, so the
 *           accepted entry s-1 is not the one e was chained to: it was replaced with a
 *           recomputed hash -> 'modified', seq s-1;
 *         - otherwise e itself was rewritten -> 'modified', seq s.
 *      R5 e.seq < s (a second entry with a seq already seen) -> 'inserted', seq e.seq.
 *      R6 e.seq > s and e.prevHash = H (its seq skips but it claims to follow the last accepted
 *         entry: no genuine entry does that): if the next entry has seq s and links to H ->
 *         'inserted', seq e.seq; otherwise -> 'modified' (renumbered), seq s.
 *      R7 e.seq > s otherwise (entries s .. e.seq-1 are not here):
 *         - another entry in the export has the same seq as e -> 'inserted', seq e.seq;
 *         - no later entry has seq s -> 'deleted', seq s (the first missing one);
 *         - e.prevHash is the hash of a later entry (e is genuine, only out of place) ->
 *           'reordered', seq s (the lowest seq out of place);
 *         - e.prevHash is nobody's hash: if the next entry has seq s and links to H -> 'inserted',
 *           seq e.seq; otherwise -> 'reordered', seq s.
 *   3. if `expectedFingerprint` is given, the export's key must have it -> 'bad-checkpoint-signature'.
 *   4. every checkpoint (in seq order): its coordinatorFingerprint must be the key's, and its
 *      signature must verify over its payload, with the key valid at the checkpoint's `at`
 *      -> 'bad-checkpoint-signature', seq = checkpoint seq.
 *      (A checkpoint whose headHash was altered fails here: the signature covers the headHash.)
 *   5. every (authentic) checkpoint against the chain: seq beyond the last entry -> 'deleted',
 *      seq = the first missing entry; headHash differing from the entry at its seq (the chain up
 *      to there was rewritten with recomputed hashes) -> 'checkpoint-mismatch', seq = checkpoint seq.
 *   6. entries but no checkpoint -> 'missing-checkpoint', seq null; a numbered checkpoint not at
 *      the position its number says (in seq order) -> 'missing-checkpoint', seq = its seq; then,
 *      unless allowUnsealedTail, entries after the last checkpoint -> 'unsealed-tail', seq = the
 *      first of them.
 * A single tampering (edit, deletion, insertion, swap) is named exactly by these rules; with
 * several, the first is reported and its classification is the most plausible one for what the
 * data show.
 *
 * Pure: zod, node:crypto, openpgp and protocols/crypto (keys and detached signatures) only.
 */
import { createHash } from 'node:crypto';
import * as openpgp from 'openpgp';
import { z } from 'zod';
import { keyStatus, loadPublicKey, type PrivateKey, type PublicKey } from '../crypto/keys.ts';
import { signArtifact, verifyArtifact, verifyKeyRotation } from '../crypto/signed-artifact.ts';

export const GENESIS_HASH = '0'.repeat(64);
export const ENTRY_HASH_DOMAIN = 'FEDMARK-AUDIT-V1\n';

const Hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex characters');
const IsoTime = z.iso.datetime({ offset: true });

export const AuditEntry = z.strictObject({
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  at: IsoTime,
  actor: z.string().min(1),
  kind: z.string().min(1),
  studyId: z.string().min(1).nullable(),
  round: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable(),
  data: z.record(z.string(), z.unknown()),
  prevHash: Hex64,
  hash: Hex64,
});
export type AuditEntry = z.infer<typeof AuditEntry>;
export type AuditEntryBody = Omit<AuditEntry, 'hash'>;

/** What the coordinator supplies for a new entry; seq, prevHash and hash are computed. */
export interface AuditEntryFields {
  at: string;
  actor: string;
  kind: string;
  studyId?: string | null;
  round?: number | null;
  data?: Record<string, unknown>;
}

export const Checkpoint = z.strictObject({
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  headHash: Hex64,
  at: IsoTime,
  /** Primary-key fingerprint of the coordinator's OpenPGP key, lowercase hex (40 for v4 keys, 64 for v6). */
  coordinatorFingerprint: z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/, 'expected a lowercase hex OpenPGP fingerprint'),
  /**
   * 1 for the coordinator's first checkpoint, then 2, 3, ... (inside the signed payload): a gap
   * shows a checkpoint removed from the middle. Absent on checkpoints signed before numbering.
   */
  number: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  /** Armored detached signature over checkpointPayload(...). */
  signature: z.string().includes('-----BEGIN PGP SIGNATURE-----', { message: 'expected an armored OpenPGP signature' }),
});
export type Checkpoint = z.infer<typeof Checkpoint>;
export type CheckpointBody = Omit<Checkpoint, 'signature'>;

export type VerifyProblem =
  | 'modified'
  | 'deleted'
  | 'inserted'
  | 'reordered'
  | 'bad-checkpoint-signature'
  | 'checkpoint-mismatch'
  /** A checkpoint is absent: a gap in the numbers, or entries but no checkpoint at all. */
  | 'missing-checkpoint'
  /** Entries after the last checkpoint (a cut tail looks exactly like this); see allowUnsealedTail. */
  | 'unsealed-tail'
  /** manifest.json is not signed, or its signature or its statements do not hold. */
  | 'bad-manifest'
  /** A node's witnessed checkpoint is not in the export, or the export does not extend it. */
  | 'witness-conflict'
  | 'malformed';

export type VerifyResult =
  | {
      ok: true;
      entries: number;
      checkpoints: number;
      /** Hash of the last entry (64 zeros for an empty log). */
      head: string;
      /** Fingerprint of the key the checkpoints were verified with; compare it with the published one. */
      coordinatorFingerprint: string;
      /** Seq of the last signed checkpoint; entries after it are protected by the chain only. */
      lastCheckpointSeq: number | null;
      /** Number of the last checkpoint (null when it predates numbering, or there is none). */
      lastCheckpointNumber: number | null;
      /** Entries after the last checkpoint; non-zero only with allowUnsealedTail. */
      uncheckpointedEntries: number;
    }
  | {
      ok: false;
      problem: VerifyProblem;
      seq: number | null;
      message: string;
      /** Set by the export reader for malformed files. */
      file?: string;
      line?: number;
    };

export interface VerifyOptions {
  /** Fingerprint of the coordinator key as published by the operator (case, spaces and colons ignored). */
  expectedFingerprint?: string;
  /**
   * Accept entries after the last checkpoint (reported in uncheckpointedEntries). Off by default:
   * cutting the tail together with its checkpoints leaves exactly such an export.
   */
  allowUnsealedTail?: boolean;
}

export class CanonicalJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CanonicalJsonError';
  }
}

/**
 * Canonical JSON: object keys sorted (UTF-16 code unit order), no whitespace, numbers and strings
 * as JSON.stringify prints them. Only plain JSON is accepted: NaN, ±Infinity, undefined (also as a
 * property value or array hole), bigint, functions, symbols, class instances (Date, Map, Buffer,
 * ...) and cycles throw, instead of being silently dropped or converted as JSON.stringify would.
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  writeCanonical(value, out, new Set(), '$');
  return out.join('');
}

function writeCanonical(value: unknown, out: string[], stack: Set<object>, path: string): void {
  if (value === null) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'string':
      out.push(JSON.stringify(value));
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalJsonError(`${path}: ${value} has no JSON representation`);
      out.push(JSON.stringify(value));
      return;
    case 'object': {
      if (stack.has(value)) throw new CanonicalJsonError(`${path}: circular reference`);
      stack.add(value);
      if (Array.isArray(value)) {
        out.push('[');
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out.push(',');
          if (!(i in value)) throw new CanonicalJsonError(`${path}[${i}]: array hole (undefined) has no JSON representation`);
          writeCanonical(value[i], out, stack, `${path}[${i}]`);
        }
        out.push(']');
      } else {
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) {
          const name = (proto?.constructor as { name?: string } | undefined)?.name ?? 'object';
          throw new CanonicalJsonError(`${path}: ${name} is not plain JSON (convert it first, e.g. a Date to an ISO string)`);
        }
        if (Object.getOwnPropertySymbols(value).length > 0) throw new CanonicalJsonError(`${path}: symbol keys have no JSON representation`);
        const keys = Object.keys(value).sort();
        out.push('{');
        keys.forEach((key, i) => {
          const child = (value as Record<string, unknown>)[key];
          if (child === undefined) throw new CanonicalJsonError(`${path}.${key}: undefined has no JSON representation`);
          if (i > 0) out.push(',');
          out.push(JSON.stringify(key), ':');
          writeCanonical(child, out, stack, `${path}.${key}`);
        });
        out.push('}');
      }
      stack.delete(value);
      return;
    }
    default:
      throw new CanonicalJsonError(`${path}: ${typeof value} has no JSON representation`);
  }
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The hash of an entry: only the listed fields count (a `hash` property, if present, is ignored). */
export function entryHash(entry: AuditEntryBody): string {
  const { seq, at, actor, kind, studyId, round, data, prevHash } = entry;
  return sha256Hex(ENTRY_HASH_DOMAIN + canonicalJson({ seq, at, actor, kind, studyId, round, data, prevHash }));
}

/**
 * The next entry of the chain. `previous` is the current head (null for the first entry); it must
 * be intact, which catches a head that changed on its way through the database. `data` is copied
 * (so later mutation of the caller's object cannot break the hash) and must be plain JSON.
 */
export function appendEntry(previous: AuditEntry | null, fields: AuditEntryFields): AuditEntry {
  let prevHash = GENESIS_HASH;
  let seq = 1;
  if (previous !== null) {
    AuditEntry.parse(previous);
    const prev = previous;
    const recomputed = entryHash(prev);
    if (recomputed !== prev.hash) {
      throw new Error(`audit head seq ${prev.seq} does not match its hash (recorded ${prev.hash}, content ${recomputed}); was it altered on its way through the database?`);
    }
    prevHash = prev.hash;
    seq = prev.seq + 1;
  }
  const body: AuditEntryBody = {
    seq,
    at: fields.at,
    actor: fields.actor,
    kind: fields.kind,
    studyId: fields.studyId ?? null,
    round: fields.round ?? null,
    data: JSON.parse(canonicalJson(fields.data ?? {})) as Record<string, unknown>,
    prevHash,
  };
  const entry: AuditEntry = { ...body, hash: entryHash(body) };
  AuditEntry.parse(entry); // validate only: zod's copy would drop a "__proto__" key of data
  return entry;
}

/** The exact text a checkpoint signature covers (sign/verify its UTF-8 bytes). */
export function checkpointPayload(checkpoint: CheckpointBody): string {
  const { seq, headHash, at, coordinatorFingerprint, number } = checkpoint;
  // Unnumbered (older) checkpoints keep the payload they were signed with.
  return canonicalJson(number === undefined ? { seq, headHash, at, coordinatorFingerprint } : { seq, headHash, at, coordinatorFingerprint, number });
}

// ---------------------------------------------------------------------------------------------
// Signing. Keys and detached signatures come from protocols/crypto (OpenPGP, binary signatures over
// the exact bytes, which is what `gpg --verify cp.asc cp.json` checks).
//
// A checkpoint is signed with its own `at` as the signature time and verified as of that time:
// the coordinator key must have been valid (not expired, not yet revoked... and a revocation
// certificate is dated at key creation, so a revoked key fails for every checkpoint) when the
// checkpoint was made. Verifying "as of now" instead would make every old export unverifiable
// once the coordinator key expires, which is exactly when auditors look at old rounds.

const payloadBytes = (c: CheckpointBody) => new TextEncoder().encode(checkpointPayload(c));

/** Lowercase hex primary-key fingerprint of an armored PUBLIC key (a private key is refused). */
export async function keyFingerprint(armoredPublicKey: string): Promise<string> {
  return (await loadPublicKey(armoredPublicKey)).getFingerprint().toLowerCase();
}

/** A checkpoint before its signature; built once (an `.omit()` per call is a new zod schema, compiled again at its first parse). */
const UnsignedCheckpoint = Checkpoint.omit({ signature: true });

/**
 * Sign a checkpoint of the chain head (the coordinator does this at each round's end).
 * `privateKey` is the decrypted coordinator key (see loadPrivateKey); `at` defaults to now and
 * must not precede the key's creation.
 */
export async function signCheckpoint(head: AuditEntry, privateKey: PrivateKey, at: string = new Date().toISOString(), number?: number): Promise<Checkpoint> {
  AuditEntry.parse(head);
  const body: CheckpointBody = { seq: head.seq, headHash: head.hash, at, coordinatorFingerprint: privateKey.getFingerprint().toLowerCase(), ...(number !== undefined ? { number } : {}) };
  UnsignedCheckpoint.parse(body);
  const signature = await signArtifact(payloadBytes(body), privateKey, { now: new Date(at) });
  return Checkpoint.parse({ ...body, signature });
}

/** True when `c` is signed by `key` (valid at the checkpoint's time): what a node checks before it keeps a checkpoint as a witness. */
export async function verifyCheckpointSignature(c: Checkpoint, key: PublicKey): Promise<boolean> {
  if (!Checkpoint.safeParse(c).success || c.coordinatorFingerprint !== key.getFingerprint().toLowerCase()) return false;
  return verifyArtifact(payloadBytes(c), c.signature, key, { at: new Date(c.at) });
}

/** Why a checkpoint signature did not verify (verifyArtifact only says that it did not). */
async function whyNotVerified(c: Checkpoint, key: PublicKey): Promise<string> {
  const at = new Date(c.at);
  const status = await keyStatus(key, at).catch(() => 'invalid' as const);
  if (status !== 'valid') return `the coordinator key is ${status} at ${c.at}`;
  let issuers: string[];
  try {
    issuers = (await openpgp.readSignature({ armoredSignature: c.signature })).getSigningKeyIDs().map((id) => id.toHex());
  } catch (err) {
    return `unreadable signature: ${err instanceof Error ? err.message : String(err)}`;
  }
  const own = new Set(key.getKeyIDs().map((id) => id.toHex()));
  const foreign = issuers.filter((id) => !own.has(id));
  if (issuers.length === 0) return 'the signature block holds no signature';
  if (foreign.length > 0) return `signed by key ID ${foreign.join(', ')}, which is not the coordinator key`;
  return 'the signature does not match the checkpoint (altered) or was not made while the key was valid';
}

// ---------------------------------------------------------------------------------------------
// Verification.

type Failure = Extract<VerifyResult, { ok: false }>;

const short = (hash: string) => hash.slice(0, 12);
const fail = (problem: VerifyProblem, seq: number | null, message: string): Failure => ({ ok: false, problem, seq, message });
const normalizeFingerprint = (f: string) => f.replace(/[\s:]/g, '').toLowerCase();
const describeIssue = (error: z.ZodError) =>
  error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') + ': ' : ''}${i.message}`).join('; ');

export async function verifyChain(
  entries: readonly AuditEntry[],
  checkpoints: readonly Checkpoint[],
  coordinatorPublicKeyArmored: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  // 1. Shapes.
  const computed: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    const raw = entries[i] as unknown;
    const seqOf = typeof (raw as { seq?: unknown })?.seq === 'number' ? ((raw as { seq: number }).seq) : null;
    const parsed = AuditEntry.safeParse(raw);
    if (!parsed.success) return fail('malformed', seqOf, `entry at position ${i + 1}: ${describeIssue(parsed.error)}`);
    try {
      // Hash what was given, not zod's copy: zod drops a "__proto__" key, JSON.parse keeps it.
      computed.push(entryHash(raw as AuditEntry));
    } catch (err) {
      return fail('malformed', seqOf, `entry at position ${i + 1}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  for (let i = 0; i < checkpoints.length; i++) {
    const parsed = Checkpoint.safeParse(checkpoints[i]);
    if (!parsed.success) {
      const seqOf = typeof (checkpoints[i] as { seq?: unknown })?.seq === 'number' ? checkpoints[i].seq : null;
      return fail('malformed', seqOf, `checkpoint at position ${i + 1}: ${describeIssue(parsed.error)}`);
    }
  }
  let key: PublicKey;
  try {
    key = await loadPublicKey(coordinatorPublicKeyArmored);
  } catch (err) {
    return fail('malformed', null, `coordinator public key: ${err instanceof Error ? err.message : String(err)}`);
  }
  const fingerprint = key.getFingerprint().toLowerCase();

  // 2. The chain.
  const chainFailure = scanChain(entries, computed);
  if (chainFailure) return chainFailure;
  const n = entries.length;
  const head = n > 0 ? entries[n - 1].hash : GENESIS_HASH;

  // 3. Pinned key.
  if (options.expectedFingerprint !== undefined && normalizeFingerprint(options.expectedFingerprint) !== fingerprint) {
    return fail(
      'bad-checkpoint-signature',
      null,
      `the export's coordinator key is ${fingerprint}, not the expected ${normalizeFingerprint(options.expectedFingerprint)}: its checkpoints prove nothing about the coordinator`,
    );
  }

  // 4. Key rotations: the export's key is the coordinator's first; each later key is trusted only
  // from the chained entry that announces it.
  const trusted = await trustedCoordinatorKeys(entries, key);

  // 5. Checkpoint signatures, in seq order (stable for equal seqs).
  const ordered = checkpoints.map((c, i) => ({ c, i })).sort((a, b) => a.c.seq - b.c.seq || a.i - b.i);
  for (const { c, i } of ordered) {
    const signer = trusted.get(c.coordinatorFingerprint);
    if (!signer || signer.fromSeq > c.seq) {
      return fail(
        'bad-checkpoint-signature',
        c.seq,
        `checkpoint at seq ${c.seq} (position ${i + 1}) names coordinator key ${c.coordinatorFingerprint}, which is neither the export's coordinator key ${fingerprint} nor a key it rotated to (by a signed announcement in the log) before seq ${c.seq}`,
      );
    }
    if (!(await verifyArtifact(payloadBytes(c), c.signature, signer.key, { at: new Date(c.at) }))) {
      return fail('bad-checkpoint-signature', c.seq, `checkpoint at seq ${c.seq} (position ${i + 1}): the signature does not verify with the coordinator key ${c.coordinatorFingerprint} (${await whyNotVerified(c, signer.key)})`);
    }
  }

  // 6. Checkpoints against the chain.
  let lastMatching: number | null = null;
  for (const { c } of ordered) {
    if (c.seq > n) {
      return fail(
        'deleted',
        n + 1,
        `the checkpoint signed at ${c.at} covers entries up to seq ${c.seq} (head ${short(c.headHash)}), but the log ends at seq ${n}: ` +
          (c.seq === n + 1 ? `entry ${n + 1} was deleted` : `entries ${n + 1}..${c.seq} were deleted`),
      );
    }
    if (entries[c.seq - 1].hash !== c.headHash) {
      const since = lastMatching === null ? 'the start' : `seq ${lastMatching} (the last checkpoint that matches)`;
      return fail(
        'checkpoint-mismatch',
        c.seq,
        `the checkpoint signed at ${c.at} names head ${short(c.headHash)} for seq ${c.seq}, but entry ${c.seq} hashes to ${short(entries[c.seq - 1].hash)}: ` +
          `the chain after ${since} up to seq ${c.seq} was rewritten (with recomputed hashes)`,
      );
    }
    lastMatching = c.seq;
  }

  // 7. Every checkpoint is there, and the last one covers the head.
  const coverage = checkCheckpointCoverage(ordered.map((o) => o.c), n, options);
  if (coverage) return coverage;

  return {
    ok: true,
    entries: n,
    checkpoints: checkpoints.length,
    head,
    coordinatorFingerprint: fingerprint,
    lastCheckpointSeq: lastMatching,
    lastCheckpointNumber: ordered.at(-1)?.c.number ?? null,
    uncheckpointedEntries: n - (lastMatching ?? 0),
  };
}

/**
 * The coordinator keys an export's checkpoints may be signed with: its first key, then each key
 * it rotated to, trusted only from the chained entry that announces it and only if the
 * announcement is signed by the key trusted just before (an auditor follows the same chain a node does).
 */
export async function trustedCoordinatorKeys(entries: readonly AuditEntry[], firstKey: PublicKey): Promise<Map<string, { key: PublicKey; fromSeq: number }>> {
  const trusted = new Map<string, { key: PublicKey; fromSeq: number }>([[firstKey.getFingerprint().toLowerCase(), { key: firstKey, fromSeq: 0 }]]);
  let latest = firstKey;
  for (const e of entries) {
    const announcement = e.kind === 'coordinator.key-rotated' ? (e.data as { announcement?: unknown }).announcement : undefined;
    if (typeof announcement !== 'string') continue;
    const rotation = await verifyKeyRotation(announcement, latest, { now: new Date(e.at) });
    if (!rotation) continue; // an unverifiable announcement introduces no key: its checkpoints fail
    latest = await loadPublicKey(rotation.newPublicKeyArmored);
    trusted.set(rotation.fingerprint.toLowerCase(), { key: latest, fromSeq: e.seq });
  }
  return trusted;
}

/**
 * Step 7 of verifyChain, on authentic checkpoints in seq order. A numbered checkpoint must stand
 * at the position its number says (older, unnumbered ones count too): a lower position means
 * checkpoints before it were removed. Then the last checkpoint must cover the last entry: the
 * chain cannot tell a cut tail from one never signed, only a checkpoint can.
 */
function checkCheckpointCoverage(ordered: readonly Checkpoint[], n: number, options: VerifyOptions): Failure | null {
  if (n > 0 && ordered.length === 0) {
    return fail('missing-checkpoint', null, `the log has ${n} entries but no signed checkpoint: nothing proves how far it went (the coordinator signs one at each round's end, at start-up and before every export)`);
  }
  for (let p = 0; p < ordered.length; p++) {
    const c = ordered[p];
    if (c.number === undefined) continue;
    if (c.number > p + 1) {
      const missing = c.number - (p + 1) === 1 ? `checkpoint #${p + 1} is missing` : `checkpoints #${p + 1}..#${c.number - 1} are missing`;
      return fail('missing-checkpoint', c.seq, `${missing}: checkpoint #${c.number} (seq ${c.seq}) is the ${ordinal(p + 1)} in the export`);
    }
    if (c.number < p + 1) {
      return fail('missing-checkpoint', c.seq, `checkpoint #${c.number} (seq ${c.seq}) stands at position ${p + 1}: the checkpoints before it are not the coordinator's sequence (duplicated or reordered numbers)`);
    }
  }
  const last = ordered.at(-1);
  const sealed = last?.seq ?? 0;
  if (n > sealed && !options.allowUnsealedTail) {
    const count = n - sealed;
    const lastName = last ? `the last checkpoint${last.number !== undefined ? ` (#${last.number})` : ''} covers up to seq ${sealed}` : 'there is no checkpoint';
    return fail(
      'unsealed-tail',
      sealed + 1,
      `${count} entr${count === 1 ? 'y' : 'ies'} (seq ${sealed + 1}..${n}) after the last signed checkpoint: ${lastName}. ` +
        'A log whose tail was cut together with its checkpoints looks exactly like this; pass --allow-unsealed-tail to accept entries no checkpoint covers',
    );
  }
  return null;
}

const ordinal = (k: number) => `${k}${k % 10 === 1 && k % 100 !== 11 ? 'st' : k % 10 === 2 && k % 100 !== 12 ? 'nd' : k % 10 === 3 && k % 100 !== 13 ? 'rd' : 'th'}`;

/** Step 2 of verifyChain: the first chain problem, classified by the rules at the top of the file. */
function scanChain(entries: readonly AuditEntry[], computed: readonly string[]): Failure | null {
  const n = entries.length;
  const intact = (i: number) => computed[i] === entries[i].hash;

  // Indexes over the whole export.
  const positionsBy = <K>(key: (e: AuditEntry, i: number) => K | K[]) => {
    const map = new Map<K, number[]>();
    entries.forEach((e, i) => {
      const keys = key(e, i);
      for (const k of Array.isArray(keys) ? keys : [keys]) {
        const list = map.get(k);
        if (list) {
          if (list[list.length - 1] !== i) list.push(i);
        } else map.set(k, [i]);
      }
    });
    return map;
  };
  const linkers = positionsBy((e) => e.prevHash); // prevHash -> positions that link to it
  const bySeq = positionsBy((e) => e.seq);
  const byHash = positionsBy((e, i) => [e.hash, computed[i]]); // recorded and recomputed hashes

  const linkedAfter = (hash: string, k: number) => (linkers.get(hash) ?? []).some((p) => p > k);
  const linkedAnywhere = (i: number) => (linkers.get(entries[i].hash) ?? []).some((p) => p !== i) || (linkers.get(computed[i]) ?? []).some((p) => p !== i);

  const accepted = new Map<string, number>(); // hash -> position
  let H = GENESIS_HASH;
  let s = 1;
  for (let k = 0; k < n; k++) {
    const e = entries[k];
    if (intact(k) && e.seq === s && e.prevHash === H) {
      accepted.set(e.hash, k);
      H = e.hash;
      s++;
      continue;
    }

    // The first entry that does not continue the chain.
    const p = k + 1;
    const next = k + 1 < n ? entries[k + 1] : undefined;
    const nextSkipsE = next !== undefined && next.seq === s && next.prevHash === H;
    const at = `entry at position ${p}`;

    // R1: a copy of an accepted entry.
    const copyOf = accepted.get(e.hash);
    if (copyOf !== undefined) {
      return fail('inserted', e.seq, `${at} (seq ${e.seq}) is a second copy of entry ${entries[copyOf].seq} (position ${copyOf + 1})${intact(k) ? '' : ', with altered content'}`);
    }

    // R2: content changed after hashing.
    const tamperedToo = intact(k) ? '' : ` (besides, its content does not match its recorded hash)`;
    if (!intact(k)) {
      if (nextSkipsE && !linkedAnywhere(k)) {
        return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: it does not match its own hash, nothing links to it, and the next entry continues the chain from entry ${s - 1} without it`);
      }
      if (e.seq === s || e.prevHash === H) {
        const claims = e.seq !== s ? ` (it now claims seq ${e.seq})` : '';
        return fail('modified', s, `entry ${s} (position ${p}) was modified${claims}: its content hashes to ${short(computed[k])}, but its recorded hash is ${short(e.hash)}`);
      }
      // Neither its seq nor its link fit slot s: what is wrong here is first of all structural.
    }

    // R3: a fork, e links to an accepted entry other than the last one.
    const forkedFrom = e.prevHash === GENESIS_HASH && k > 0 ? -1 : accepted.get(e.prevHash);
    if (forkedFrom !== undefined && e.prevHash !== H) {
      const branchStart = forkedFrom + 1;
      const predecessor = forkedFrom === -1 ? 'the start of the log' : `entry ${entries[forkedFrom].seq} (position ${forkedFrom + 1})`;
      if (linkedAfter(e.hash, k) && !linkedAfter(H, k)) {
        const first = entries[branchStart];
        const what = branchStart === k - 1 ? `entry ${first.seq} at position ${branchStart + 1} was inserted` : `entries at positions ${branchStart + 1}..${k} were inserted`;
        return fail('inserted', first.seq, `${what}: entry ${e.seq} at position ${p} also follows ${predecessor}, and the rest of the chain continues from it${tamperedToo}`);
      }
      return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: it links back to ${predecessor}, which already has its successor at position ${branchStart + 1}${tamperedToo}`);
    }

    if (e.seq === s) {
      // R4: the right seq, the wrong predecessor.
      if (k === 0) return fail('modified', 1, `entry 1 (position 1) must link to the genesis hash (64 zeros) but links to ${short(e.prevHash)}${tamperedToo}`);
      if (next === undefined || next.prevHash === e.hash) {
        return fail('modified', s - 1, `entry ${s - 1} (position ${k}) was replaced: entry ${s} links to a predecessor hashed ${short(e.prevHash)}, but entry ${s - 1} hashes to ${short(H)} (its content was changed and its hash recomputed)${tamperedToo}`);
      }
      return fail('modified', s, `entry ${s} (position ${p}) was rewritten: it links to ${short(e.prevHash)} instead of entry ${s - 1} (${short(H)}) and the next entry does not link to it${tamperedToo}`);
    }

    if (e.seq < s) {
      // R5
      return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: seq ${e.seq} was already taken at position ${(bySeq.get(e.seq) ?? [k])[0] + 1}${tamperedToo}`);
    }

    // e.seq > s
    if (e.prevHash === H) {
      // R6
      if (nextSkipsE) return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: it claims to follow entry ${s - 1}, which the next entry (seq ${s}) does${tamperedToo}`);
      return fail('modified', s, `entry ${s} (position ${p}) was renumbered to ${e.seq} (its hash recomputed): it links to entry ${s - 1}, so its seq should be ${s}${tamperedToo}`);
    }

    // R7: entries s..e.seq-1 are not here.
    const sameSeq = (bySeq.get(e.seq) ?? []).filter((i) => i !== k);
    if (sameSeq.length > 0) {
      return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: seq ${e.seq} also appears at position ${sameSeq[0] + 1}${tamperedToo}`);
    }
    const sLater = (bySeq.get(s) ?? []).filter((i) => i > k);
    if (sLater.length === 0) {
      const missing = e.seq - 1 === s ? `entry ${s} is missing` : `entries ${s}..${e.seq - 1} are missing`;
      return fail('deleted', s, `${missing}: entry ${e.seq} (position ${p}) follows entry ${s - 1} and links to ${short(e.prevHash)}, which is not in the log${tamperedToo}`);
    }
    const predecessorLater = (byHash.get(e.prevHash) ?? []).some((i) => i > k);
    if (!predecessorLater && nextSkipsE) {
      return fail('inserted', e.seq, `${at} (seq ${e.seq}) was inserted: it links to ${short(e.prevHash)}, which is not in the log, and the next entry continues the chain without it${tamperedToo}`);
    }
    return fail('reordered', s, `entry ${s} is out of order: expected at position ${p}, found at position ${sLater[0] + 1} (position ${p} holds entry ${e.seq})${tamperedToo}`);
  }
  return null;
}
