import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from '../protocols/audit/audit-chain.ts';
import { verifyArtifact, type PublicKeyInput } from '../protocols/crypto/index.ts';

/**
 * The coordinator's signed statement about a published model: which study, version and round the
 * weights are, and the sha256 of the study's configuration (features, encoding, task, model,
 * privacy). The weights' own signature (over FMW1 bytes, what nodes check) says nothing about
 * these, so without the statement an export's lineage.json and preprocessing.json could be
 * edited together and still verify. Signed as the canonical JSON's exact bytes (audit-chain's
 * canonicalJson), served in the model response's headers (MODEL_STATEMENT_HEADERS) and kept in
 * an export folder. Participants, metrics and epsilon are not in it: they are printed by verify as
 * reported by the coordinator's API, unsigned.
 */
export const ModelStatement = z.strictObject({
  format: z.literal('fedmark-model-statement'),
  version: z.literal(1),
  studyId: z.string().min(1),
  modelVersion: z.number().int().nonnegative(),
  round: z.number().int().nonnegative(),
  modelSha256: z.string().regex(/^[0-9a-f]{64}$/),
  configSha256: z.string().regex(/^[0-9a-f]{64}$/),
  publishedAt: z.string().optional(),
  signedBy: z.string().min(1),
});
export type ModelStatement = z.infer<typeof ModelStatement>;

/** Response headers of GET /v1/studies/:studyId/model(s/:version): both base64 (armor and JSON have newlines). */
export const MODEL_STATEMENT_HEADERS = { statement: 'fedmark-model-statement', signature: 'fedmark-model-statement-signature' } as const;

/** sha256 (hex) of a study configuration's canonical JSON: what a statement's configSha256 holds. */
export function configSha256(config: unknown): string {
  // Through JSON first: the coordinator hashes its parsed object (where an optional field may be
  // undefined), the client what came over the wire; both must give the same bytes.
  return createHash('sha256').update(canonicalJson(JSON.parse(JSON.stringify(config))), 'utf8').digest('hex');
}

/** The exact bytes the coordinator signs for a statement. */
export function statementBytes(statement: ModelStatement): Uint8Array {
  return new TextEncoder().encode(canonicalJson(statement));
}

/** What the verifier expects a statement to say; a field left out is not compared. */
export interface StatementExpectation {
  studyId: string;
  modelVersion?: number;
  round?: number;
  modelSha256: string;
  config: unknown;
  fingerprint: string;
  /** Where the compared values come from, for messages (default "the lineage"). */
  source?: string;
}

/**
 * The statement in `bytes` if `signature` over them verifies with `publicKey` and every field
 * matches `expected`; otherwise an Error naming the field that differs (the caller wraps it in
 * its own error type).
 */
export async function checkStatement(bytes: Uint8Array, signature: string, publicKey: PublicKeyInput, expected: StatementExpectation): Promise<ModelStatement> {
  if (!(await verifyArtifact(bytes, signature, publicKey))) throw new Error(`the model statement's signature does not verify with coordinator key ${expected.fingerprint}`);
  let statement: ModelStatement;
  try {
    statement = ModelStatement.parse(JSON.parse(new TextDecoder().decode(bytes)));
  } catch (err) {
    throw new Error(`the model statement is not a fedmark-model-statement: ${(err as Error).message}`);
  }
  const source = expected.source ?? 'the lineage';
  const differs = (field: string, signed: unknown, claimed: unknown) => new Error(`the signed model statement says ${field} ${JSON.stringify(signed)}, but ${source} says ${JSON.stringify(claimed)}`);
  if (statement.signedBy !== expected.fingerprint) throw differs('signedBy', statement.signedBy, expected.fingerprint);
  if (statement.studyId !== expected.studyId) throw differs('studyId', statement.studyId, expected.studyId);
  if (expected.modelVersion !== undefined && statement.modelVersion !== expected.modelVersion) throw differs('modelVersion', statement.modelVersion, expected.modelVersion);
  if (expected.round !== undefined && statement.round !== expected.round) throw differs('round', statement.round, expected.round);
  if (statement.modelSha256 !== expected.modelSha256) throw differs('modelSha256', statement.modelSha256, expected.modelSha256);
  const sha = configSha256(expected.config);
  if (statement.configSha256 !== sha) throw new Error(`the signed model statement says configSha256 ${statement.configSha256}, but the study configuration in ${source} hashes to ${sha}: the configuration (features, encoding, task or model) was changed`);
  return statement;
}
