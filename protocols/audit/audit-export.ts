/**
 * The audit export: a folder an auditor can verify offline with nothing else.
 *
 *   entries.jsonl        one entry per line, canonical JSON (line N holds seq N)
 *   checkpoints.jsonl    one signed checkpoint per line, canonical JSON, in seq order
 *   coordinator.pub.asc  the coordinator's armored OpenPGP public key
 *   manifest.json        format/version, counts, head hash, last checkpoint (seq and number),
 *                        sha256 and size of the three files above, the key fingerprint, a README
 *                        for verifying by hand, and the coordinator's signature over all of it
 *
 * Lines must be in canonical form (what you read is exactly what was hashed: no duplicate keys,
 * no reformatting). The coordinator signs the manifest when it makes the export (the export
 * files are canonical, so it can hash them before any file exists): the chain and checkpoints
 * prove what is inside the export, the signed manifest proves that the coordinator said, at
 * `exportedAt`, that this was all of it. A manifest regenerated after cutting the tail (and its
 * checkpoints) no longer verifies. Files are written to temporary names and renamed, the
 * manifest last, so a crashed export never looks complete.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { loadPublicKey, type PrivateKey } from '../crypto/keys.ts';
import { signArtifact, verifyArtifact } from '../crypto/signed-artifact.ts';
import {
  AuditEntry,
  Checkpoint,
  GENESIS_HASH,
  canonicalJson,
  keyFingerprint,
  sha256Hex,
  trustedCoordinatorKeys,
  verifyChain,
  type VerifyOptions,
  type VerifyResult,
} from './audit-chain.ts';
import { checkWitnesses, type WitnessReport } from './witness.ts';

export const AUDIT_EXPORT_FORMAT = 'fedmark-audit-export';
export const AUDIT_EXPORT_VERSION = 1;
export const EXPORT_FILES = {
  entries: 'entries.jsonl',
  checkpoints: 'checkpoints.jsonl',
  publicKey: 'coordinator.pub.asc',
  manifest: 'manifest.json',
} as const;

const Hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const FileDigest = z.strictObject({ sha256: Hex64, bytes: z.number().int().min(0) });
const Fingerprint = z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/, 'expected a lowercase hex OpenPGP fingerprint');

/** The coordinator's signature over manifestPayload(manifest): made by the key in force at the export. */
export const ManifestSignature = z.strictObject({
  signedBy: Fingerprint,
  signature: z.string().includes('-----BEGIN PGP SIGNATURE-----', { message: 'expected an armored OpenPGP signature' }),
});
export type ManifestSignature = z.infer<typeof ManifestSignature>;

export const AuditExportManifest = z.strictObject({
  format: z.literal(AUDIT_EXPORT_FORMAT),
  version: z.literal(AUDIT_EXPORT_VERSION),
  exportedAt: z.iso.datetime({ offset: true }),
  /** Where the export came from, e.g. the coordinator URL or "database". */
  source: z.string(),
  entries: z.strictObject({ count: z.number().int().min(0), lastSeq: z.number().int().min(0), headHash: Hex64 }),
  checkpoints: z.strictObject({
    count: z.number().int().min(0),
    lastSeq: z.number().int().min(0).nullable(),
    /** The last checkpoint's number (absent in exports made before checkpoints were numbered). */
    lastNumber: z.number().int().min(1).nullable().optional(),
  }),
  coordinatorFingerprint: z.string(),
  files: z.strictObject({
    'entries.jsonl': FileDigest,
    'checkpoints.jsonl': FileDigest,
    'coordinator.pub.asc': FileDigest,
  }),
  readme: z.array(z.string()),
  /** Absent only in exports made without the coordinator key (straight from a database) or before manifests were signed. */
  signature: ManifestSignature.optional(),
});
export type AuditExportManifest = z.infer<typeof AuditExportManifest>;

export interface AuditExportInput {
  entries: readonly AuditEntry[];
  checkpoints: readonly Checkpoint[];
  coordinatorPublicKeyArmored: string;
  exportedAt: string;
  source: string;
  /** The coordinator's signature over this export (signAuditExport), as its API hands it out. */
  manifestSignature?: ManifestSignature;
  /** Or the coordinator key itself, to sign here. */
  signingKey?: PrivateKey;
}

export interface AuditExport {
  manifest: AuditExportManifest;
  entries: AuditEntry[];
  checkpoints: Checkpoint[];
  coordinatorPublicKeyArmored: string;
}

/** A file of the export that cannot be read or parsed; `line` is 1-based. */
export class AuditExportFormatError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | null,
    readonly seq: number | null,
    detail: string,
  ) {
    super(`${file}${line !== null ? ` line ${line}` : ''}: ${detail}`);
    this.name = 'AuditExportFormatError';
  }
}

function readme(fingerprint: string, lastCheckpointSeq: number | null): string[] {
  const n = lastCheckpointSeq ?? 'N';
  return [
    "Read this text with: jq -r '.readme[]' manifest.json",
    'Verify this export with: fedmark audit verify <this folder> --fingerprint <the coordinator fingerprint the operator published>',
    `The coordinator key in coordinator.pub.asc has fingerprint ${fingerprint}. Compare it with the one the operator published elsewhere: whoever holds that key can sign any log.`,
    '',
    'To verify by hand, in this folder:',
    '1. Entries. Line N of entries.jsonl is entry seq N. Its hash is the sha256 (hex) of "FEDMARK-AUDIT-V1\\n" followed by the',
    '   canonical JSON of the entry without its "hash" field (keys sorted, no whitespace, strings and numbers as JavaScript\'s',
    '   JSON.stringify prints them: RFC 8785). Entry 1 has prevHash = 64 zeros; every other entry has prevHash = the hash of',
    '   the entry before it. With Python 3 (the functions reproduce JavaScript\'s number and key order exactly):',
    "   python3 - <<'PY'",
    '   import json, hashlib',
    '   from decimal import Decimal',
    '   def num(x):  # JavaScript Number.prototype.toString',
    '       if isinstance(x, int): return str(x)',
    "       if x == 0: return '0'",
    '       sign, ds, e = Decimal(repr(x)).normalize().as_tuple()',
    "       d = ''.join(map(str, ds)); k = len(d); n = e + k; s = '-' if sign else ''",
    "       if k <= n <= 21: return s + d + '0' * (n - k)",
    "       if 0 < n <= 21: return s + d[:n] + '.' + d[n:]",
    "       if -6 < n <= 0: return s + '0.' + '0' * -n + d",
    "       return s + d[0] + ('.' + d[1:] if k > 1 else '') + 'e' + ('+' if n > 0 else '-') + str(abs(n - 1))",
    '   def canon(v):',
    "       if isinstance(v, dict): return '{' + ','.join(json.dumps(k, ensure_ascii=False) + ':' + canon(v[k]) for k in sorted(v, key=lambda k: k.encode('utf-16-be'))) + '}'",
    "       if isinstance(v, list): return '[' + ','.join(map(canon, v)) + ']'",
    '       if isinstance(v, float): return num(v)',
    '       return json.dumps(v, ensure_ascii=False)',
    "   prev = '0' * 64",
    "   for n, line in enumerate(open('entries.jsonl', encoding='utf-8'), 1):",
    "       e = json.loads(line); h = e.pop('hash')",
    "       ok = hashlib.sha256(('FEDMARK-AUDIT-V1\\n' + canon(e)).encode()).hexdigest() == h and e['prevHash'] == prev and e['seq'] == n",
    "       print(n, 'ok' if ok else 'BROKEN'); prev = h",
    '   PY',
    '2. Checkpoints. Each line of checkpoints.jsonl is signed by the coordinator key: the detached signature covers the',
    '   canonical JSON of {seq, headHash, at, coordinatorFingerprint, number} (number only when present), without a trailing',
    '   newline. For the checkpoint at seq',
    `   ${n} (likewise for the others):`,
    '   mkdir -m 700 gnupg && gpg --homedir gnupg --import coordinator.pub.asc',
    `   jq -r 'select(.seq==${n}) | .signature' checkpoints.jsonl > cp.asc`,
    `   jq -jcS 'select(.seq==${n}) | {seq, headHash, at, coordinatorFingerprint} + (if has("number") then {number} else {} end)' checkpoints.jsonl > cp.json`,
    '   gpg --homedir gnupg --verify cp.asc cp.json      (must report a good signature by the fingerprint above)',
    `   jq -r 'select(.seq==${n}) | .hash' entries.jsonl    (must equal the checkpoint\'s headHash)`,
    '3. What this proves: no entry up to the last checkpoint was modified, deleted, inserted or reordered, and the log',
    '   reached at least that checkpoint. Checkpoints are numbered 1, 2, 3, ... (the "number" field, inside the signed',
    '   payload; older ones have none): a gap means a checkpoint was removed. Entries after the last checkpoint are',
    '   protected by the chain only (deleting them is not detectable from the chain): `fedmark audit verify` fails on them',
    '   unless given --allow-unsealed-tail.',
    '4. manifest.json is signed by the coordinator key named in signature.signedBy (the one above, or a key it rotated to',
    '   by a signed coordinator.key-rotated entry). The signature covers the canonical JSON of the manifest without',
    '   source, readme and signature, plus type and signedBy:',
    "   jq -r '.signature.signature' manifest.json > manifest.asc",
    '   jq -jcS \'{type: "fedmark-audit-export-manifest", format, version, exportedAt, entries, checkpoints, coordinatorFingerprint, files, signedBy: .signature.signedBy}\' manifest.json > manifest.payload',
    '   gpg --homedir gnupg --verify manifest.asc manifest.payload',
    '   Then compare the sha256 values in "files" with sha256sum of the three files, and entries.headHash with the last line',
    '   of entries.jsonl. A manifest without a signature was made without the coordinator key and proves nothing.',
  ];
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { encoding: 'utf8', flag: 'w' });
  renameSync(tmp, path);
}

const toJsonl = (values: readonly unknown[]) => values.map((v) => canonicalJson(v) + '\n').join('');
const digest = (text: string) => ({ sha256: sha256Hex(Buffer.from(text, 'utf8')), bytes: Buffer.byteLength(text, 'utf8') });

/** What the coordinator signs: the manifest without `source`, `readme` and the signature itself. */
export type ExportStatement = Omit<AuditExportManifest, 'source' | 'readme' | 'signature'>;

interface RenderedExport {
  statement: ExportStatement;
  entriesText: string;
  checkpointsText: string;
  keyText: string;
}

/**
 * The export's files and statement, as both the coordinator (to sign) and the writer (to write)
 * compute them: canonical lines, so the same entries give the same bytes on either side.
 * Entries and checkpoints are schema-checked but the chain is taken as it is, broken or not:
 * judging it is the verifier's job.
 */
async function renderExport(input: Pick<AuditExportInput, 'entries' | 'checkpoints' | 'coordinatorPublicKeyArmored' | 'exportedAt'>): Promise<RenderedExport> {
  const entries = input.entries.map((e, i) => {
    const parsed = AuditEntry.safeParse(e);
    if (!parsed.success) throw new Error(`audit export: entry at position ${i + 1} is invalid: ${parsed.error.issues[0]?.message}`);
    return e;
  });
  const checkpoints = input.checkpoints
    .map((c, i) => {
      const parsed = Checkpoint.safeParse(c);
      if (!parsed.success) throw new Error(`audit export: checkpoint at position ${i + 1} is invalid: ${parsed.error.issues[0]?.message}`);
      return c;
    })
    .sort((a, b) => a.seq - b.seq);
  const fingerprint = await keyFingerprint(input.coordinatorPublicKeyArmored); // refuses a private key
  const entriesText = toJsonl(entries);
  const checkpointsText = toJsonl(checkpoints);
  const keyText = input.coordinatorPublicKeyArmored.endsWith('\n') ? input.coordinatorPublicKeyArmored : input.coordinatorPublicKeyArmored + '\n';
  const last = entries.at(-1);
  const statement: ExportStatement = {
    format: AUDIT_EXPORT_FORMAT,
    version: AUDIT_EXPORT_VERSION,
    exportedAt: input.exportedAt,
    entries: { count: entries.length, lastSeq: last?.seq ?? 0, headHash: last?.hash ?? GENESIS_HASH },
    checkpoints: { count: checkpoints.length, lastSeq: checkpoints.at(-1)?.seq ?? null, lastNumber: checkpoints.at(-1)?.number ?? null },
    coordinatorFingerprint: fingerprint,
    files: {
      [EXPORT_FILES.entries]: digest(entriesText),
      [EXPORT_FILES.checkpoints]: digest(checkpointsText),
      [EXPORT_FILES.publicKey]: digest(keyText),
    },
  };
  return { statement, entriesText, checkpointsText, keyText };
}

/** The exact text a manifest signature covers (its UTF-8 bytes), typed so it cannot pass for another artifact. */
export function manifestPayload(statement: ExportStatement, signedBy: string): string {
  const { format, version, exportedAt, entries, checkpoints, coordinatorFingerprint, files } = statement;
  return canonicalJson({ type: 'fedmark-audit-export-manifest', format, version, exportedAt, entries, checkpoints, coordinatorFingerprint, files, signedBy });
}

/** The coordinator's signature over an export it is handing out (its API returns it beside the log). */
export async function signAuditExport(input: Pick<AuditExportInput, 'entries' | 'checkpoints' | 'coordinatorPublicKeyArmored' | 'exportedAt'>, privateKey: PrivateKey): Promise<ManifestSignature> {
  const { statement } = await renderExport(input);
  const signedBy = privateKey.getFingerprint().toLowerCase();
  const signature = await signArtifact(new TextEncoder().encode(manifestPayload(statement, signedBy)), privateKey, { now: new Date(input.exportedAt) });
  return { signedBy, signature };
}

/** Write an export folder (created if needed). Refuses a folder that already holds an export. */
export async function writeAuditExport(dir: string, input: AuditExportInput): Promise<AuditExportManifest> {
  const { statement, entriesText, checkpointsText, keyText } = await renderExport(input);
  const signature = input.manifestSignature ?? (input.signingKey ? await signAuditExport(input, input.signingKey) : undefined);
  mkdirSync(dir, { recursive: true });
  if (existsSync(join(dir, EXPORT_FILES.manifest))) throw new Error(`audit export: ${dir} already holds an export (manifest.json exists)`);
  const manifest: AuditExportManifest = AuditExportManifest.parse({
    ...statement,
    source: input.source,
    readme: readme(statement.coordinatorFingerprint, statement.checkpoints.lastSeq),
    ...(signature ? { signature } : {}),
  });
  writeAtomically(join(dir, EXPORT_FILES.entries), entriesText);
  writeAtomically(join(dir, EXPORT_FILES.checkpoints), checkpointsText);
  writeAtomically(join(dir, EXPORT_FILES.publicKey), keyText);
  writeAtomically(join(dir, EXPORT_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

function readText(dir: string, file: string): string {
  try {
    return readFileSync(join(dir, file), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AuditExportFormatError(file, null, null, code === 'ENOENT' ? 'missing from the export' : `cannot be read (${code ?? String(err)})`);
  }
}

function parseJsonl<T>(file: string, text: string, schema: z.ZodType<T>): T[] {
  if (text.length === 0) return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop(); // the final newline
  return lines.map((line, i) => {
    const lineNo = i + 1;
    if (line.trim() === '') throw new AuditExportFormatError(file, lineNo, null, 'empty line');
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new AuditExportFormatError(file, lineNo, null, `not valid JSON (${err instanceof Error ? err.message : String(err)}); truncated?`);
    }
    const seq = typeof (value as { seq?: unknown })?.seq === 'number' ? (value as { seq: number }).seq : null;
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new AuditExportFormatError(file, lineNo, seq, `${issue.path.length > 0 ? issue.path.join('.') + ': ' : ''}${issue.message}`);
    }
    let canonical: string;
    try {
      canonical = canonicalJson(value);
    } catch (err) {
      throw new AuditExportFormatError(file, lineNo, seq, err instanceof Error ? err.message : String(err));
    }
    if (canonical !== line) {
      throw new AuditExportFormatError(file, lineNo, seq, 'not in canonical form (keys sorted, no whitespace, no duplicate keys): the line is not exactly what was hashed');
    }
    return value as T; // validated; not zod's copy, which would drop a "__proto__" key of data
  });
}

/** Read and parse an export folder; throws AuditExportFormatError naming the file and line. */
export function readAuditExport(dir: string): AuditExport {
  const manifestText = readText(dir, EXPORT_FILES.manifest);
  let manifestJson: unknown;
  try {
    manifestJson = JSON.parse(manifestText);
  } catch (err) {
    throw new AuditExportFormatError(EXPORT_FILES.manifest, null, null, `not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const format = (manifestJson as { format?: unknown; version?: unknown }) ?? {};
  if (format.format !== AUDIT_EXPORT_FORMAT) throw new AuditExportFormatError(EXPORT_FILES.manifest, null, null, `not a fedmark audit export (format ${JSON.stringify(format.format)})`);
  if (format.version !== AUDIT_EXPORT_VERSION) throw new AuditExportFormatError(EXPORT_FILES.manifest, null, null, `export format version ${JSON.stringify(format.version)} is not supported (this fedmark reads version ${AUDIT_EXPORT_VERSION})`);
  const manifest = AuditExportManifest.safeParse(manifestJson);
  if (!manifest.success) {
    const issue = manifest.error.issues[0];
    throw new AuditExportFormatError(EXPORT_FILES.manifest, null, null, `${issue.path.join('.')}: ${issue.message}`);
  }
  return {
    manifest: manifest.data,
    entries: parseJsonl(EXPORT_FILES.entries, readText(dir, EXPORT_FILES.entries), AuditEntry),
    checkpoints: parseJsonl(EXPORT_FILES.checkpoints, readText(dir, EXPORT_FILES.checkpoints), Checkpoint),
    coordinatorPublicKeyArmored: readText(dir, EXPORT_FILES.publicKey),
  };
}

export interface ExportVerifyOptions extends VerifyOptions {
  /** Accept a manifest without a signature (an export made straight from the database, without the coordinator key). */
  allowUnsignedManifest?: boolean;
  /** Node state folders whose witnessed checkpoints the export must agree with (see witness.ts). */
  witnesses?: readonly string[];
}

type Failure = Extract<VerifyResult, { ok: false }>;
export type ExportVerifyResult =
  | Failure
  | (Extract<VerifyResult, { ok: true }> & {
      exportedAt: string;
      /** The key that signed the manifest; null when accepted unsigned (allowUnsignedManifest). */
      manifestSignedBy: string | null;
      witnesses: WitnessReport[];
    });

/**
 * Read + verifyChain, then the manifest (what it states, the files' hashes, the coordinator's
 * signature), then any witnesses. A file that cannot be parsed is a 'malformed' failure naming
 * the file and line.
 */
export async function verifyAuditExport(dir: string, options: ExportVerifyOptions = {}): Promise<ExportVerifyResult> {
  let data: AuditExport;
  try {
    data = readAuditExport(dir);
  } catch (err) {
    if (err instanceof AuditExportFormatError) {
      return { ok: false, problem: 'malformed', seq: err.seq, message: err.message, file: err.file, ...(err.line !== null ? { line: err.line } : {}) };
    }
    throw err;
  }
  const result = await verifyChain(data.entries, data.checkpoints, data.coordinatorPublicKeyArmored, options);
  if (!result.ok) {
    // Positions in entries are line numbers of entries.jsonl; say so for malformed ones.
    return result.problem === 'malformed' && result.seq === null && /^coordinator public key/.test(result.message)
      ? { ...result, file: EXPORT_FILES.publicKey }
      : result;
  }
  const stated = checkManifestStatements(dir, data.manifest, result);
  if (stated) return stated;
  const trusted = await trustedCoordinatorKeys(data.entries, await loadPublicKey(data.coordinatorPublicKeyArmored));
  const signed = await checkManifestSignature(data.manifest, trusted, options);
  if (typeof signed !== 'string' && signed !== null) return signed;
  const witnesses: WitnessReport[] = [];
  for (const stateDir of options.witnesses ?? []) {
    const report = await checkWitnesses(stateDir, data, trusted);
    if (!report.ok) return report.failure;
    witnesses.push(report.report);
  }
  return { ...result, exportedAt: data.manifest.exportedAt, manifestSignedBy: signed, witnesses };
}

/** The manifest's statements against what was read: counts, head, last checkpoint, file hashes. */
function checkManifestStatements(dir: string, m: AuditExportManifest, result: Extract<VerifyResult, { ok: true }>): Failure | null {
  const said = 'manifest.json says so';
  if (m.entries.count > result.entries) {
    return { ok: false, problem: 'deleted', seq: result.entries + 1, message: `manifest.json lists ${m.entries.count} entries (head ${m.entries.headHash.slice(0, 12)}), entries.jsonl has ${result.entries}: the last ${m.entries.count - result.entries} were removed (${said})` };
  }
  if (m.entries.count < result.entries) {
    return { ok: false, problem: 'inserted', seq: m.entries.count + 1, message: `manifest.json lists ${m.entries.count} entries, entries.jsonl has ${result.entries}: entries from seq ${m.entries.count + 1} on were appended after the export (${said})` };
  }
  if (m.entries.headHash !== result.head) {
    return { ok: false, problem: 'modified', seq: null, message: `manifest.json names head ${m.entries.headHash.slice(0, 12)}, the chain ends at ${result.head.slice(0, 12)}: entries after the last checkpoint were rewritten (${said})` };
  }
  if (m.checkpoints.count !== result.checkpoints || (m.checkpoints.lastNumber != null && m.checkpoints.lastNumber !== result.lastCheckpointNumber)) {
    const missing = m.checkpoints.count > result.checkpoints || (m.checkpoints.lastNumber ?? 0) > (result.lastCheckpointNumber ?? 0);
    const last = m.checkpoints.lastNumber != null ? ` (the last #${m.checkpoints.lastNumber})` : '';
    return { ok: false, problem: missing ? 'missing-checkpoint' : 'inserted', seq: null, message: `manifest.json lists ${m.checkpoints.count} checkpoints${last}, checkpoints.jsonl has ${result.checkpoints}${result.lastCheckpointNumber !== null ? ` (the last #${result.lastCheckpointNumber})` : ''}` };
  }
  for (const file of [EXPORT_FILES.entries, EXPORT_FILES.checkpoints, EXPORT_FILES.publicKey] as const) {
    const actual = sha256Hex(readFileSync(join(dir, file)));
    if (actual !== m.files[file].sha256) {
      return { ok: false, problem: 'malformed', seq: null, file, message: `${file} does not match the sha256 recorded in manifest.json (${m.files[file].sha256.slice(0, 12)}, file has ${actual.slice(0, 12)}): it was changed after the export` };
    }
  }
  return null;
}

/**
 * The coordinator's signature over the manifest, by a key the export's chain trusts, valid at
 * `exportedAt`. Returns the signer's fingerprint, null for an unsigned manifest the caller
 * accepts, or the failure. A manifest regenerated after an edit fails here: only the key holder
 * can sign a new one.
 */
async function checkManifestSignature(m: AuditExportManifest, trusted: Awaited<ReturnType<typeof trustedCoordinatorKeys>>, options: ExportVerifyOptions): Promise<string | null | Failure> {
  const bad = (message: string): Failure => ({ ok: false, problem: 'bad-manifest', seq: null, file: EXPORT_FILES.manifest, message });
  if (!m.signature) {
    if (options.allowUnsignedManifest) return null;
    return bad('manifest.json is not signed by the coordinator, so nothing proves the export is complete (its tail and last checkpoints could have been cut and the manifest rewritten). Export through the coordinator (fedmark audit export --coordinator), or pass --allow-unsigned-manifest to check the chain and checkpoints alone');
  }
  const signer = trusted.get(m.signature.signedBy);
  if (!signer) return bad(`manifest.json is signed by ${m.signature.signedBy}, which is neither the export's coordinator key nor a key it rotated to by a signed entry in the log`);
  const { source: _source, readme: _readme, signature, ...statement } = m;
  const payload = new TextEncoder().encode(manifestPayload(statement, signature.signedBy));
  if (!(await verifyArtifact(payload, signature.signature, signer.key, { at: new Date(m.exportedAt) }))) {
    return bad(`the signature of manifest.json does not verify with the coordinator key ${signature.signedBy}: the manifest (counts, head ${m.entries.headHash.slice(0, 12)}, last checkpoint ${m.checkpoints.lastSeq ?? 'none'}, exportedAt ${m.exportedAt}, file hashes) is not the one the coordinator signed`);
  }
  return signature.signedBy;
}
