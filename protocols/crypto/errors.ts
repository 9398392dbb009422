/**
 * Error classes of the cryptographic identity layer.
 *
 * Messages never contain a passphrase or private key material; they may contain fingerprints
 * (public information) and OpenPGP.js's own error text.
 */

/** Base class: anything this layer refuses or fails to do. */
export class CryptoError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CryptoError';
  }
}

/** A key could not be generated, parsed, decrypted or used (bad input, not a caller's attack). */
export class CryptoKeyError extends CryptoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CryptoKeyError';
  }
}

/** The passphrase does not decrypt the private key. */
export class WrongPassphraseError extends CryptoKeyError {
  readonly fingerprint: string;
  constructor(fingerprint: string, options?: { cause?: unknown }) {
    super(`wrong passphrase for private key ${fingerprint}`, options);
    this.name = 'WrongPassphraseError';
    this.fingerprint = fingerprint;
  }
}

/**
 * Why a sealed update was refused:
 * - `malformed`: not an OpenPGP message at all;
 * - `decryption-failed`: not encrypted to this coordinator key, or the ciphertext was modified
 *   (the integrity check failed);
 * - `unsigned`: decrypts, but carries no signature;
 * - `bad-signature`: a signature is invalid or was made by another key than the node's;
 * - `expired-key` / `revoked-key`: the node's key is no longer valid at verification time.
 */
export type VerificationFailure =
  | 'malformed'
  | 'decryption-failed'
  | 'unsigned'
  | 'bad-signature'
  | 'expired-key'
  | 'revoked-key';

/** Data failed authentication: do not use it. */
export class CryptoVerificationError extends CryptoError {
  readonly reason: VerificationFailure;
  constructor(reason: VerificationFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CryptoVerificationError';
    this.reason = reason;
  }
}

/** The message of an unknown thrown value, for wrapping. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
