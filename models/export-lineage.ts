import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { loadPublicKey, verifyArtifact } from '../protocols/crypto/index.ts';
import { describeInitFrom, StudyConfig } from '../protocols/messages.ts';
import { sha256Hex } from '../protocols/weights-codec.ts';
import { buildTfjsExport, EXPORT_FILES } from './export-tfjs.ts';
import { checkStatement, type ModelStatement } from './export-statement.ts';

/**
 * lineage.json of an export folder, and the offline check of a folder against it (`fedmark model
 * verify --model DIR`). The coordinator signs the model's FMW1 bytes only (model.fmw): the check
 * recomputes model.json, weights.bin and preprocessing.json from those bytes and the study's
 * configuration, so a changed weight, layer or encoding is caught even though tfjs's files carry
 * no signature of their own. lineage.json itself is not signed, but the coordinator's signed model
 * statement (model-statement.json, models/export-statement.ts) binds its study id, version, round
 * and configuration (by hash) to the model: preprocessing.json is rebuilt from that verified
 * configuration. Participants, rounds and privacy figures stay as the coordinator's API reported
 * them at export time (verify prints them as not signed).
 */

const RoundLineage = z.object({
  round: z.number().int(),
  participants: z.array(z.string()),
  /** null: hidden from an analyst when node sampling is on (coordinator/auth/visibility.ts). */
  updatesReceived: z.number().int().nullable(),
  validationMetrics: z.record(z.string(), z.number().nullable()).nullable(),
});

/** The privacy mechanisms a model went through, and the epsilon spent up to its round. */
export const PrivacyLineage = z.object({
  mechanisms: z.array(z.string()),
  accountant: z.string().nullable(),
  delta: z.number().nullable(),
  budgetEpsilon: z.number().nullable(),
  /** Client-level epsilon spent by the rounds up to this model's (null: not readable with the token, or no central DP). */
  epsilon: z.number().nullable(),
  /** The largest record-level (DP-SGD) epsilon a node reported up to this round, if visible. */
  dpSgdEpsilon: z.number().nullable(),
});
export type PrivacyLineage = z.infer<typeof PrivacyLineage>;

export const Lineage = z.object({
  format: z.literal('fedmark-lineage'),
  version: z.literal(1),
  study: z.object({ id: z.string(), name: z.string() }),
  modelVersion: z.number().int().nonnegative(),
  /** The round whose aggregation produced the model (0: the seeded initial model). */
  round: z.number().int().nonnegative(),
  modelSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** The coordinator's armored detached signature over model.fmw (also in model.fmw.asc). */
  signature: z.string().min(1),
  coordinator: z.object({ url: z.string().nullable(), fingerprint: z.string() }),
  task: z.unknown(),
  model: z.unknown(),
  strategy: z.unknown(),
  privacy: PrivacyLineage,
  /** Nodes that were selected in some round up to this model's (ids; names where the token may see them). */
  participants: z.array(z.object({ id: z.string(), name: z.string().nullable(), region: z.string().nullable() })),
  rounds: z.array(RoundLineage),
  exportedAt: z.string(),
  /** The study's configuration as the coordinator holds it: preprocessing.json and the network are rebuilt from it. */
  config: StudyConfig,
  /** initialModelLine(config): where round 0 came from (a warm start's source study, version, sha256). Absent in older exports. */
  initializedFrom: z.string().optional(),
});
export type Lineage = z.infer<typeof Lineage>;

/** One line per mechanism, from the study's configuration. */
export function privacyMechanisms(config: StudyConfig): string[] {
  const p = config.privacy;
  const out: string[] = [];
  if (p?.central) out.push(`central DP (client-level): noise multiplier ${p.central.noiseMultiplier}, ${p.central.clipping.kind} clipping, node sampling rate ${p.central.nodeSamplingRate}`);
  if (p?.dpSgd) out.push(`DP-SGD (record-level, on every node): noise multiplier ${p.dpSgd.noiseMultiplier}, clip norm ${p.dpSgd.clipNorm}, sampling rate ${p.dpSgd.samplingRate}`);
  if (out.length === 0) out.push('none (no differential privacy)');
  return out;
}

/**
 * Where the model's round 0 came from, from the (signed) configuration: a warm start names its
 * source study, version and weights' sha256 (initFrom, issue 9), so an auditor can follow the
 * lineage back through `fedmark model verify --study SOURCE --version V`.
 */
export function initialModelLine(config: StudyConfig): string {
  return `round-0 model: ${config.initFrom ? describeInitFrom(config.initFrom) : `seeded (seed ${config.seed})`}`;
}

/** Why an export folder does not check out, in one sentence naming the file. */
export class ExportVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportVerificationError';
  }
}

/** What the caller trusts: the coordinator's public key (armored) and/or its fingerprint. */
export interface ExportTrust {
  publicKey?: string;
  fingerprint?: string;
}

/** The result of a successful check. */
export interface VerifiedExport {
  lineage: Lineage;
  /** The key the signature was checked with, and whether it came from the caller (not the folder). */
  fingerprint: string;
  pinned: boolean;
  /** The verified statement; null only for a folder from before signed statements, read with allowUnsignedLineage. */
  statement: ModelStatement | null;
}

/** The field of the first schema problem of a lineage, for "field rounds.0.updatesReceived: ..." messages. */
export function lineageProblem(value: unknown): string | null {
  const parsed = Lineage.safeParse(value);
  if (parsed.success) return null;
  const issue = parsed.error.issues[0];
  return `field ${issue.path.join('.') || '(root)'}: ${issue.message}`;
}

function readIn(dir: string, file: string): Buffer {
  const path = join(dir, file);
  if (!existsSync(path)) throw new ExportVerificationError(`${path} is missing: not a complete \`fedmark model export\` folder`);
  return readFileSync(path);
}

/** lineage.json of an export folder, checked field by field. */
export function readLineage(dir: string): Lineage {
  let raw: unknown;
  try {
    raw = JSON.parse(readIn(dir, EXPORT_FILES.lineage).toString('utf8'));
  } catch (err) {
    if (err instanceof ExportVerificationError) throw err;
    throw new ExportVerificationError(`${join(dir, EXPORT_FILES.lineage)} is not JSON: ${(err as Error).message}`);
  }
  const problem = lineageProblem(raw);
  if (problem !== null) throw new ExportVerificationError(`${join(dir, EXPORT_FILES.lineage)}: ${problem}`);
  return Lineage.parse(raw);
}

/**
 * Checks an export folder offline: model.fmw's hash against lineage.json, the coordinator's
 * signature over it with the trusted key (the caller's, else the folder's own key, which only
 * proves the folder is self-consistent), and model.json, weights.bin and preprocessing.json
 * against what the signed bytes and the configuration give. Throws ExportVerificationError.
 */
export async function verifyExportFolder(dir: string, trust: ExportTrust = {}, options: { allowUnsignedLineage?: boolean } = {}): Promise<VerifiedExport> {
  const lineage = readLineage(dir);
  const bytes = new Uint8Array(readIn(dir, EXPORT_FILES.signedModel));
  const sha = sha256Hex(bytes);
  if (sha !== lineage.modelSha256) throw new ExportVerificationError(`${EXPORT_FILES.signedModel} hashes to ${sha}, but lineage.json records ${lineage.modelSha256}: the model is not the one exported`);
  const signature = readIn(dir, EXPORT_FILES.signature).toString('utf8');
  if (signature.trim() !== lineage.signature.trim()) throw new ExportVerificationError(`${EXPORT_FILES.signature} differs from the signature in lineage.json`);
  const armored = trust.publicKey ?? readIn(dir, EXPORT_FILES.coordinatorKey).toString('utf8');
  let fingerprint: string;
  try {
    fingerprint = (await loadPublicKey(armored)).getFingerprint();
  } catch (err) {
    throw new ExportVerificationError(`the coordinator key is not a readable OpenPGP public key: ${(err as Error).message}`);
  }
  if (trust.fingerprint !== undefined && trust.fingerprint.toLowerCase() !== fingerprint) {
    throw new ExportVerificationError(`the coordinator key's fingerprint is ${fingerprint}, not the pinned ${trust.fingerprint}`);
  }
  if (!(await verifyArtifact(bytes, signature, armored))) {
    throw new ExportVerificationError(`the signature over ${EXPORT_FILES.signedModel} does not verify with coordinator key ${fingerprint} (lineage.json names ${lineage.coordinator.fingerprint}): wrong key, or the model or signature was changed`);
  }
  const statement = await checkFolderStatement(dir, lineage, armored, fingerprint, options.allowUnsignedLineage === true);
  if (statement) checkConfigCopies(lineage);
  await checkDerivedFiles(dir, lineage, bytes);
  return { lineage, fingerprint, pinned: trust.publicKey !== undefined || trust.fingerprint !== undefined, statement };
}

/**
 * lineage.json repeats parts of the configuration for readers (study name, task, model, strategy,
 * privacy mechanisms) and verify prints them as signed: they must be what the signed
 * configuration says.
 */
function checkConfigCopies(lineage: Lineage): void {
  const c = lineage.config;
  const copies: Array<[string, unknown, unknown]> = [
    ['study.name', lineage.study.name, c.name],
    ['task', lineage.task, c.task],
    ['model', lineage.model, c.model],
    ['strategy', lineage.strategy, c.strategy],
    ['privacy.mechanisms', lineage.privacy.mechanisms, privacyMechanisms(c)],
    ...(lineage.initializedFrom === undefined ? [] : [['initializedFrom', lineage.initializedFrom, initialModelLine(c)] as [string, unknown, unknown]]),
  ];
  for (const [field, copy, signed] of copies) {
    if (!isDeepStrictEqual(JSON.parse(JSON.stringify(copy ?? null)), JSON.parse(JSON.stringify(signed ?? null)))) {
      throw new ExportVerificationError(`${EXPORT_FILES.lineage}: field ${field} is ${JSON.stringify(copy)}, but the signed configuration says ${JSON.stringify(signed)}`);
    }
  }
}

/** The folder's signed statement, checked against lineage.json (the model's hash there was checked against model.fmw already). */
async function checkFolderStatement(dir: string, lineage: Lineage, armored: string, fingerprint: string, allowUnsigned: boolean): Promise<ModelStatement | null> {
  if (!existsSync(join(dir, EXPORT_FILES.statement)) && !existsSync(join(dir, EXPORT_FILES.statementSignature))) {
    if (allowUnsigned) return null;
    throw new ExportVerificationError(`${dir} has no ${EXPORT_FILES.statement}: the export predates signed model statements, so its study id, version, round and configuration (hence preprocessing.json) are not signed; export it again, or pass --allow-unsigned-lineage to read its lineage as unverified`);
  }
  const bytes = new Uint8Array(readIn(dir, EXPORT_FILES.statement));
  const signature = readIn(dir, EXPORT_FILES.statementSignature).toString('utf8');
  try {
    return await checkStatement(bytes, signature, armored, { studyId: lineage.study.id, modelVersion: lineage.modelVersion, round: lineage.round, modelSha256: lineage.modelSha256, config: lineage.config, fingerprint });
  } catch (err) {
    throw new ExportVerificationError(`${EXPORT_FILES.statement}: ${(err as Error).message}`);
  }
}

/** model.json, weights.bin and preprocessing.json must be what the signed bytes give. */
async function checkDerivedFiles(dir: string, lineage: Lineage, bytes: Uint8Array): Promise<void> {
  let expected;
  try {
    expected = await buildTfjsExport(lineage.config, bytes);
  } catch (err) {
    throw new ExportVerificationError(`the signed model does not fit the configuration in lineage.json: ${(err as Error).message}`);
  }
  const weights = new Uint8Array(readIn(dir, EXPORT_FILES.weights));
  const offset = firstDifference(weights, expected.weights);
  if (offset !== -1) {
    throw new ExportVerificationError(`${EXPORT_FILES.weights} differs from the signed model at byte ${offset}${weights.length !== expected.weights.length ? ` (${weights.length} bytes, expected ${expected.weights.length})` : ` (${tensorAt(expected.modelJson, offset)})`}`);
  }
  const modelJson = JSON.parse(readIn(dir, EXPORT_FILES.modelJson).toString('utf8')) as Record<string, unknown>;
  for (const key of ['modelTopology', 'weightsManifest'] as const) {
    if (!isDeepStrictEqual(modelJson[key], expected.modelJson[key])) throw new ExportVerificationError(`${EXPORT_FILES.modelJson}: ${key} is not the study's network (${lineage.config.model.kind}, ${lineage.config.task.kind})`);
  }
  const preprocessing = JSON.parse(readIn(dir, EXPORT_FILES.preprocessing).toString('utf8')) as unknown;
  if (!isDeepStrictEqual(preprocessing, JSON.parse(JSON.stringify(expected.preprocessing)))) {
    throw new ExportVerificationError(`${EXPORT_FILES.preprocessing} is not the encoding of the study's feature spec and task in lineage.json`);
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** "tensor dense_0/kernel, value 7" for a byte offset of weights.bin (float32 tensors, in manifest order). */
function tensorAt(modelJson: Record<string, unknown>, offset: number): string {
  const manifest = modelJson.weightsManifest as Array<{ weights: Array<{ name: string; shape: number[] }> }>;
  let start = 0;
  for (const w of manifest.flatMap((g) => g.weights)) {
    const size = w.shape.reduce((a, b) => a * b, 1) * 4;
    if (offset < start + size) return `tensor ${w.name}, value ${Math.floor((offset - start) / 4)}`;
    start += size;
  }
  return 'past the last tensor';
}
