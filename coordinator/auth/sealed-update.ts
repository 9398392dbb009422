import { CryptoVerificationError, openUpdate } from '../../protocols/crypto/index.ts';
import { BadRequestError } from '../errors.ts';
import type { CoordinatorKeyring } from '../identity.ts';

/**
 * Opens a sealed update: encrypted to the coordinator and signed by the node's pinned key. The
 * current key is tried first, then retired ones (a node that sealed before it followed a rotation).
 * A sealed update that does not open and verify is a 400 (INVALID_SEALED_UPDATE).
 *
 * @example
 *   const weights = await openSealedUpdate(keyring, sealed, node.publicKey!);
 */
export async function openSealedUpdate(keyring: Pick<CoordinatorKeyring, 'decryptionKeys'>, sealed: Uint8Array, nodePublicKey: string): Promise<Uint8Array> {
  let failure: CryptoVerificationError | undefined;
  for (const key of keyring.decryptionKeys) {
    try {
      return await openUpdate({ sealed, coordinatorPrivateKey: key.privateKey, nodePublicKey });
    } catch (err) {
      if (!(err instanceof CryptoVerificationError)) throw err;
      failure ??= err;
      if (err.reason !== 'decryption-failed') break; // it opened, but the signature is wrong: no other key will help
    }
  }
  throw new BadRequestError(`update refused: the sealed update does not open and verify (${failure?.reason}): ${failure?.message}`, 'body', 'INVALID_SEALED_UPDATE');
}
