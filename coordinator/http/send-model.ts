import type { Response } from 'express';
import type { CoordinatorKeyring } from '../identity.ts';
import type { StoredModel } from '../studies/study-service.ts';
import { configSha256, MODEL_STATEMENT_HEADERS, statementBytes, type ModelStatement } from '../../models/export-statement.ts';

/** What a study model's statement needs beyond the model: whose it is and the study's configuration. */
export interface ModelContext {
  studyId: string;
  config: unknown;
}

/**
 * Sends a model as the binary codec's bytes (never JSON), with its hash, version and the
 * coordinator's signature in headers. Models signed by a retired key are re-signed by the current
 * one when served (once per model and key), so a node that trusts only the current key (enrolled
 * after a rotation) can verify models made before it.
 *
 * @example
 *   const sendModel = createModelSender(keyring);
 *   await sendModel(res, await studies.getModel(studyId));
 */
export function createModelSender(keyring: Pick<CoordinatorKeyring, 'current' | 'sign'>) {
  const resigned = new Map<string, { signature: string; fingerprint: string }>();

  async function currentSignature(model: StoredModel) {
    if (!model.signature || model.signerFingerprint === keyring.current.fingerprint) return { signature: model.signature, fingerprint: model.signerFingerprint };
    const key = `${model.sha256}/${keyring.current.fingerprint}`;
    let s = resigned.get(key);
    if (!s) {
      s = await keyring.sign(model.bytes);
      resigned.set(key, s);
    }
    return s;
  }

  const statements = new Map<string, Record<string, string>>();
  /** The statement's headers, signed once per model and key (a published model never changes). */
  async function statementHeaders(model: StoredModel, context: ModelContext): Promise<Record<string, string>> {
    const key = `${context.studyId}/${model.version}/${model.sha256}/${keyring.current.fingerprint}`;
    let headers = statements.get(key);
    if (!headers) {
      // A model version is the round that aggregated it (0: the seeded initial model).
      const statement: ModelStatement = { format: 'fedmark-model-statement', version: 1, studyId: context.studyId, modelVersion: model.version, round: model.version, modelSha256: model.sha256, configSha256: configSha256(context.config), signedBy: keyring.current.fingerprint };
      const bytes = statementBytes(statement);
      const { signature } = await keyring.sign(bytes);
      headers = { [MODEL_STATEMENT_HEADERS.statement]: Buffer.from(bytes).toString('base64'), [MODEL_STATEMENT_HEADERS.signature]: Buffer.from(signature).toString('base64') };
      if (statements.size >= 256) statements.delete(statements.keys().next().value!);
      statements.set(key, headers);
    }
    return headers;
  }

  async function sendModel(res: Response, stored: StoredModel, context?: ModelContext) {
    const { signature, fingerprint } = await currentSignature(stored);
    const model = { ...stored, signature, signerFingerprint: fingerprint };
    if (context && model.signature) res.set(await statementHeaders(model, context));
    res.set({
      'content-type': 'application/octet-stream',
      'fedmark-sha256': model.sha256,
      'fedmark-model-version': String(model.version),
      ...(model.signature ? { 'fedmark-model-signature': Buffer.from(model.signature).toString('base64'), 'fedmark-signer': model.signerFingerprint ?? '' } : {}),
    });
    res.end(Buffer.from(model.bytes.buffer, model.bytes.byteOffset, model.bytes.byteLength));
  }
  /** `currentSignature`: the signature a download carries, for a task that carries its model (rounds/task-model.ts). */
  return Object.assign(sendModel, { currentSignature });
}
export type ModelSender = ReturnType<typeof createModelSender>;
