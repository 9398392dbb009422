/**
 * The audit export: a folder an auditor can verify offline with nothing else.
 *
 *   entries.jsonl        one entry per line, canonical JSON (line N holds seq N)
 *   checkpoints.jsonl    one signed checkpoint per line, canonical JSON, in seq order
 *   coordinator.pub.asc  the coordinator's armored OpenPGP public key
 *   manifest.json        format/version, counts, head hash, sha256 and size of the three files
 *                        above, the key fingerprint, and a README for verifying by hand
 *
 * Lines must be in canonical form (what you read is exactly what was hashed: no duplicate keys,
 * no reformatting). The manifest is not signed: its file hashes catch accidents and clumsy edits;
 * the proof is the chain plus the signed checkpoints. Files are written to temporary names and
 * renamed, the manifest last, so a crashed export never looks complete.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  AuditEntry,
  Checkpoint,
  GENESIS_HASH,
  canonicalJson,
  keyFingerprint,
  sha256Hex,
  verifyChain,
  type VerifyOptions,
  type VerifyResult,
} from './audit-chain.ts';

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

export const AuditExportManifest = z.strictObject({
  format: z.literal(AUDIT_EXPORT_FORMAT),
  version: z.literal(AUDIT_EXPORT_VERSION),
  exportedAt: z.iso.datetime({ offset: true }),
  /** Where the export came from, e.g. the coordinator URL or "database". */
  source: z.string(),
  entries: z.strictObject({ count: z.number().int().min(0), lastSeq: z.number().int().min(0), headHash: Hex64 }),
  checkpoints: z.strictObject({ count: z.number().int().min(0), lastSeq: z.number().int().min(0).nullable() }),
  coordinatorFingerprint: z.string(),
  files: z.strictObject({
    'entries.jsonl': FileDigest,
    'checkpoints.jsonl': FileDigest,
    'coordinator.pub.asc': FileDigest,
  }),
  readme: z.array(z.string()),
});
export type AuditExportManifest = z.infer<typeof AuditExportManifest>;

export interface AuditExportInput {
  entries: readonly AuditEntry[];
  checkpoints: readonly Checkpoint[];
  coordinatorPublicKeyArmored: string;
  exportedAt: string;
  source: string;
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
    '   canonical JSON of {seq, headHash, at, coordinatorFingerprint}, without a trailing newline. For the checkpoint at seq',
    `   ${n} (likewise for the others):`,
    '   mkdir -m 700 gnupg && gpg --homedir gnupg --import coordinator.pub.asc',
    `   jq -r 'select(.seq==${n}) | .signature' checkpoints.jsonl > cp.asc`,
    `   jq -jcS 'select(.seq==${n}) | {seq, headHash, at, coordinatorFingerprint}' checkpoints.jsonl > cp.json`,
    '   gpg --homedir gnupg --verify cp.asc cp.json      (must report a good signature by the fingerprint above)',
    `   jq -r 'select(.seq==${n}) | .hash' entries.jsonl    (must equal the checkpoint\'s headHash)`,
    '3. What this proves: no entry up to the last checkpoint was modified, deleted, inserted or reordered, and the log',
    '   reached at least that checkpoint. Entries after the last checkpoint are protected by the chain only: deleting them',
    '   is not detectable.',
    '4. manifest.json is not signed; its sha256 values only detect accidental damage to the other files.',
  ];
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { encoding: 'utf8', flag: 'w' });
  renameSync(tmp, path);
}

const toJsonl = (values: readonly unknown[]) => values.map((v) => canonicalJson(v) + '\n').join('');
const digest = (text: string) => ({ sha256: sha256Hex(Buffer.from(text, 'utf8')), bytes: Buffer.byteLength(text, 'utf8') });

/**
 * Write an export folder (created if needed). Refuses a folder that already holds an export.
 * Entries and checkpoints are schema-checked but the chain is written as it is, broken or not:
 * judging it is the verifier's job.
 */
export async function writeAuditExport(dir: string, input: AuditExportInput): Promise<AuditExportManifest> {
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

  mkdirSync(dir, { recursive: true });
  if (existsSync(join(dir, EXPORT_FILES.manifest))) throw new Error(`audit export: ${dir} already holds an export (manifest.json exists)`);

  const entriesText = toJsonl(entries);
  const checkpointsText = toJsonl(checkpoints);
  const keyText = input.coordinatorPublicKeyArmored.endsWith('\n') ? input.coordinatorPublicKeyArmored : input.coordinatorPublicKeyArmored + '\n';
  const last = entries.at(-1);
  const lastCheckpointSeq = checkpoints.at(-1)?.seq ?? null;
  const manifest: AuditExportManifest = AuditExportManifest.parse({
    format: AUDIT_EXPORT_FORMAT,
    version: AUDIT_EXPORT_VERSION,
    exportedAt: input.exportedAt,
    source: input.source,
    entries: { count: entries.length, lastSeq: last?.seq ?? 0, headHash: last?.hash ?? GENESIS_HASH },
    checkpoints: { count: checkpoints.length, lastSeq: lastCheckpointSeq },
    coordinatorFingerprint: fingerprint,
    files: {
      [EXPORT_FILES.entries]: digest(entriesText),
      [EXPORT_FILES.checkpoints]: digest(checkpointsText),
      [EXPORT_FILES.publicKey]: digest(keyText),
    },
    readme: readme(fingerprint, lastCheckpointSeq),
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

/**
 * Read + verifyChain, then check the (unsigned) manifest against what was read. A file that cannot
 * be parsed is a 'malformed' failure naming the file and line.
 */
export async function verifyAuditExport(dir: string, options: VerifyOptions = {}): Promise<VerifyResult> {
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

  const m = data.manifest;
  const unsigned = 'manifest.json is not signed, so this is evidence only if the manifest itself was not altered';
  if (m.entries.count > result.entries) {
    return {
      ok: false,
      problem: 'deleted',
      seq: result.entries + 1,
      message: `manifest.json lists ${m.entries.count} entries (head ${m.entries.headHash.slice(0, 12)}), entries.jsonl has ${result.entries}: the last ${m.entries.count - result.entries} were removed (${unsigned})`,
    };
  }
  if (m.entries.count < result.entries) {
    return {
      ok: false,
      problem: 'inserted',
      seq: m.entries.count + 1,
      message: `manifest.json lists ${m.entries.count} entries, entries.jsonl has ${result.entries}: entries from seq ${m.entries.count + 1} on were appended after the export (${unsigned})`,
    };
  }
  if (m.entries.headHash !== result.head) {
    return {
      ok: false,
      problem: 'modified',
      seq: null,
      message: `manifest.json names head ${m.entries.headHash.slice(0, 12)}, the chain ends at ${result.head.slice(0, 12)}: entries after the last checkpoint were rewritten (${unsigned})`,
    };
  }
  if (m.checkpoints.count !== result.checkpoints) {
    return {
      ok: false,
      problem: m.checkpoints.count > result.checkpoints ? 'deleted' : 'inserted',
      seq: null,
      message: `manifest.json lists ${m.checkpoints.count} checkpoints, checkpoints.jsonl has ${result.checkpoints} (${unsigned})`,
    };
  }
  for (const file of [EXPORT_FILES.entries, EXPORT_FILES.checkpoints, EXPORT_FILES.publicKey] as const) {
    const actual = sha256Hex(readFileSync(join(dir, file)));
    if (actual !== m.files[file].sha256) {
      return { ok: false, problem: 'malformed', seq: null, file, message: `${file} does not match the sha256 recorded in manifest.json (${m.files[file].sha256.slice(0, 12)}, file has ${actual.slice(0, 12)}): it was changed after the export` };
    }
  }
  return result;
}
