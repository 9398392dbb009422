import type { Response } from 'express';
import type { CoordinatorKeyring } from '../identity.ts';
import type { StoredModel } from '../studies/study-service.ts';

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

  return async function sendModel(res: Response, stored: StoredModel) {
    const { signature, fingerprint } = await currentSignature(stored);
    const model = { ...stored, signature, signerFingerprint: fingerprint };
    res.set({
      'content-type': 'application/octet-stream',
      'fedmark-sha256': model.sha256,
      'fedmark-model-version': String(model.version),
      ...(model.signature ? { 'fedmark-model-signature': Buffer.from(model.signature).toString('base64'), 'fedmark-signer': model.signerFingerprint ?? '' } : {}),
    });
    res.end(Buffer.from(model.bytes.buffer, model.bytes.byteOffset, model.bytes.byteLength));
  };
}
export type ModelSender = ReturnType<typeof createModelSender>;
