/**
 * Detached signatures over what the coordinator publishes (global models, audit checkpoints) and
 * key-rotation announcements.
 *
 * Artifacts are signed as binary data (signature type 0x00): the exact bytes, no newline
 * canonicalisation. The armored detached signature is what `gpg --verify model.asc model.bin`
 * checks, so a compliance officer can verify with their own tool, given the coordinator's public
 * key (checked with GnuPG 2.2.40: artifacts, rotation announcements and sealed updates all verify,
 * and a one-byte change gives "BAD signature"). Artifacts should be self-describing (FMW1 magic, JSON with a "type" field), so that a
 * signature over one kind of artifact cannot pass for another kind.
 *
 * Verification is done at a point in time (default now) and fails when the key is revoked or
 * expired at that time, even if the signature itself was made while the key was valid: OpenPGP.js
 * would accept it, but a signature's creation time is a claim by the signer, and whoever holds
 * an old key can back-date. Consequence: after an expiry, re-sign what must stay verifiable, or
 * verify an archived artifact `at` a trusted time (e.g. the audit log's).
 *
 * Key rotation announcement: an OpenPGP cleartext-signed message (RFC 9580 section 7) whose text
 * is this JSON, signed with the OLD key:
 *
 *   { "type": "fedmark-key-rotation", "version": 1,
 *     "oldFingerprint": "<hex>", "newFingerprint": "<hex>",
 *     "at": "<ISO 8601 time from which the new key is in force>",
 *     "newPublicKey": "<armored public key>" }
 *
 * Cleartext-signed so that it is readable as is and checkable with `gpg --verify`.
 */
import * as openpgp from 'openpgp';
import type { PrivateKey, PublicKey } from 'openpgp';
import { z } from 'zod';
import { CryptoKeyError, errorMessage } from './errors.ts';
import { keyStatus, loadPublicKey, toPublicKey, type PublicKeyInput } from './keys.ts';
import { signNatively } from './native-sign.ts';
import { dearmoredSignature, nativelyValidAt, verifiesNatively } from './native-verify.ts';

/** How artifact signatures were checked (tests, benchmarks): all natively, or the OpenPGP.js way. */
export const artifactPaths = { native: 0, openpgp: 0 };

function requireDecrypted(key: PrivateKey, what: string): void {
  if (!key.isPrivate() || !key.isDecrypted()) {
    throw new CryptoKeyError(`${what} needs a decrypted private key (see loadPrivateKey)`);
  }
}

/** How artifacts were signed (tests, benchmarks): natively, or by OpenPGP.js. */
export const artifactSignPaths = { native: 0, openpgp: 0 };

/**
 * Armored detached signature over the exact bytes (signed at `options.now`, default now).
 *
 * Made natively for our key shape (native-sign.ts: the same v4 EdDSALegacy packet, without
 * OpenPGP.js's salt notation) and armored by OpenPGP.js's own `armor`, with the CRC-24 line its
 * `sign` writes for a v4 signature; any other key, or a time outside the key's signing window, is
 * signed by OpenPGP.js, which also raises the errors. Issue 13: `openpgp.sign` took 1.0-1.3 ms of
 * CPU per 13 KB model against 0.08-0.2 ms (`node bin/run-ts.js bench/crypto-request-bench.ts`),
 * and the coordinator signs a model (between a round's last update and the next round's tasks)
 * and an audit checkpoint every round. GnuPG checks both kinds (test/crypto/gnupg-interop.test.ts).
 */
export async function signArtifact(bytes: Uint8Array, privateKey: PrivateKey, options: { now?: Date } = {}): Promise<string> {
  requireDecrypted(privateKey, 'signArtifact');
  const native = await signNatively(bytes, privateKey, options.now ?? new Date()); // null: not our key shape or time
  if (native !== null) {
    artifactSignPaths.native++;
    return openpgp.armor(openpgp.enums.armor.signature, native, undefined, undefined, undefined, true);
  }
  artifactSignPaths.openpgp++;
  try {
    return await openpgp.sign({
      message: await openpgp.createMessage({ binary: bytes }),
      signingKeys: privateKey,
      detached: true,
      format: 'armored',
      date: options.now, // undefined = now
    });
  } catch (err) {
    throw new CryptoKeyError(`cannot sign with key ${privateKey.getFingerprint()}: ${errorMessage(err)}`, { cause: err });
  }
}

export interface VerifyAtOptions {
  /** Time at which the key must be valid (default now). */
  at?: Date;
}

/** Whether every signature in `signatures` verifies (and there is at least one). */
async function allVerified(signatures: { verified: Promise<unknown> }[]): Promise<boolean> {
  const outcomes = await Promise.allSettled(signatures.map((s) => s.verified));
  return outcomes.length > 0 && outcomes.every((o) => o.status === 'fulfilled');
}

async function usableAt(key: PublicKey, at: Date): Promise<boolean> {
  return (await keyStatus(key, at)) === 'valid';
}

/**
 * True only if `armoredSignature` is a valid detached signature over `bytes` by `publicKey`,
 * with no signature by any other key next to it, and the key is neither revoked nor expired at
 * `at`. Never throws for bad input: a malformed signature or key is just `false`.
 */
export async function verifyArtifact(
  bytes: Uint8Array,
  armoredSignature: string,
  publicKey: PublicKeyInput,
  { at = new Date() }: VerifyAtOptions = {},
): Promise<boolean> {
  try {
    const key = await toPublicKey(publicKey);
    // Natively when the key, the armor and the signature are all ours (native-verify.ts): no
    // OpenPGP.js stream reading the armor, no key status re-derived per call. Anything else, and
    // every signature that does not verify here, goes the full way below.
    const binary = dearmoredSignature(armoredSignature);
    if (binary !== null && (await nativelyValidAt(key, at)) && (await verifiesNatively(bytes, binary, key, at))) {
      artifactPaths.native++;
      return true;
    }
    artifactPaths.openpgp++;
    if (!(await usableAt(key, at))) return false;
    const signature = await openpgp.readSignature({ armoredSignature });
    // Fast path for our own key and signature shape (native-verify.ts); OpenPGP.js decides the rest.
    if (await verifiesNatively(bytes, signature, key, at)) return true;
    const { signatures } = await openpgp.verify({
      message: await openpgp.createMessage({ binary: bytes }),
      signature,
      verificationKeys: key,
      date: at,
      format: 'binary',
    });
    return await allVerified(signatures);
  } catch {
    return false;
  }
}

export const KEY_ROTATION_TYPE = 'fedmark-key-rotation';

const Fingerprint = z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/);
const RotationPayload = z.strictObject({
  type: z.literal(KEY_ROTATION_TYPE),
  version: z.literal(1),
  oldFingerprint: Fingerprint,
  newFingerprint: Fingerprint,
  at: z.iso.datetime(),
  newPublicKey: z.string().min(1),
});
type RotationPayload = z.infer<typeof RotationPayload>;

export interface AnnounceKeyRotationOptions {
  /** The current (old) key, decrypted: it vouches for its successor. */
  oldPrivateKey: PrivateKey;
  /** The successor's PUBLIC key (a private key is refused, so it cannot be published by mistake). */
  newPublicKeyArmored: string;
  /** When the new key takes over. */
  at: Date;
}

/** A cleartext-signed announcement, by the old key, that `newPublicKeyArmored` succeeds it. */
export async function announceKeyRotation({ oldPrivateKey, newPublicKeyArmored, at }: AnnounceKeyRotationOptions): Promise<string> {
  requireDecrypted(oldPrivateKey, 'announceKeyRotation');
  if (Number.isNaN(at.getTime())) throw new CryptoKeyError('announceKeyRotation: `at` is not a valid date');
  const newKey = await loadPublicKey(newPublicKeyArmored);
  const oldFingerprint = oldPrivateKey.getFingerprint();
  const newFingerprint = newKey.getFingerprint();
  if (newFingerprint === oldFingerprint) throw new CryptoKeyError('announceKeyRotation: the new key is the old key');
  const newStatus = await keyStatus(newKey, at);
  if (newStatus === 'revoked' || newStatus === 'expired' || newStatus === 'invalid') {
    throw new CryptoKeyError(`announceKeyRotation: the new key ${newFingerprint} is ${newStatus} at ${at.toISOString()}`);
  }
  const payload: RotationPayload = {
    type: KEY_ROTATION_TYPE,
    version: 1,
    oldFingerprint,
    newFingerprint,
    at: at.toISOString(),
    newPublicKey: newKey.armor(),
  };
  try {
    return await openpgp.sign({
      message: await openpgp.createCleartextMessage({ text: JSON.stringify(payload, null, 2) }),
      signingKeys: oldPrivateKey,
      format: 'armored',
    });
  } catch (err) {
    throw new CryptoKeyError(`cannot sign rotation with key ${oldFingerprint}: ${errorMessage(err)}`, { cause: err });
  }
}

export interface VerifiedKeyRotation {
  newPublicKeyArmored: string;
  /** Fingerprint of the new key. */
  fingerprint: string;
  oldFingerprint: string;
  /** When the new key takes over. */
  at: Date;
}

/**
 * The new key announced by `announcement`, if it is a valid rotation signed by `oldPublicKey`
 * (valid, i.e. neither revoked nor expired, at `options.now`, default the current time); null
 * otherwise, never throws for bad input.
 */
export async function verifyKeyRotation(
  announcement: string,
  oldPublicKey: PublicKeyInput,
  { now: at = new Date() }: { now?: Date } = {},
): Promise<VerifiedKeyRotation | null> {
  try {
    const oldKey = await toPublicKey(oldPublicKey);
    if (!(await usableAt(oldKey, at))) return null;
    const { data, signatures } = await openpgp.verify({
      message: await openpgp.readCleartextMessage({ cleartextMessage: announcement }),
      verificationKeys: oldKey,
      date: at,
    });
    if (!(await allVerified(signatures))) return null;
    // Parse only the text the signature covers (what verify returns), never the raw armor.
    const parsed = RotationPayload.safeParse(JSON.parse(data));
    if (!parsed.success) return null;
    const payload = parsed.data;
    if (payload.oldFingerprint !== oldKey.getFingerprint()) return null;
    const newKey = await loadPublicKey(payload.newPublicKey);
    if (newKey.getFingerprint() !== payload.newFingerprint || payload.newFingerprint === payload.oldFingerprint) return null;
    return {
      newPublicKeyArmored: newKey.armor(),
      fingerprint: payload.newFingerprint,
      oldFingerprint: payload.oldFingerprint,
      at: new Date(payload.at),
    };
  } catch {
    return null;
  }
}
