/**
 * Sealed model updates: a node's update, signed with the node's key and then encrypted to the
 * coordinator's key, as one binary OpenPGP message (sign-then-encrypt: the signature is inside
 * the encryption, so only the coordinator learns which node signed, and the coordinator can
 * prove to an auditor that the update came from that node).
 *
 * Only the coordinator can open an update; a relay, proxy or storage bucket in between sees
 * ciphertext. Encryption is OpenPGP.js's default for v4 keys: AES-256 in a SEIPD v1 packet
 * (integrity-protected with an MDC), no compression; this is what GnuPG reads too. A modified
 * ciphertext fails the integrity check before any plaintext is released (the whole message is in
 * memory, no streaming), and a decrypted update is only returned once every signature on it has
 * verified against the node's key.
 *
 * Both ends are native for our key type (native-seal.ts: the same message, built and read with
 * Node's X25519, AES and hashes), OpenPGP.js otherwise. CPU per operation on the 2-core dev VM
 * (Node 20, `node bin/run-ts.js bench/crypto-request-bench.ts`): a 13 KB update seals in ~0.45 ms
 * (openpgp.encrypt ~2.2 ms) and opens, signature checked, in ~0.45 ms (openpgp.decrypt and verify
 * ~2.3 ms); a 4 MB one seals in ~18 ms (~31 ms) and opens in ~15 ms (~34 ms). The hashes over the
 * payload (SHA-512 for the signature, SHA-1 for the MDC) and AES-256 are then what a large update
 * costs.
 *
 * The signature covers the update bytes only. The round an update belongs to is bound by the
 * signed request that carries it (request-signing.ts hashes the sealed bytes into the request
 * signature together with the round id).
 */
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { CryptoKeyError, CryptoVerificationError, errorMessage } from './errors.ts';
import { keyStatus, toPublicKey, type PublicKeyInput } from './keys.ts';
import { openNatively, sealNatively } from './native-seal.ts';
import { verifiesNatively } from './native-verify.ts';

export interface SealUpdateOptions {
  bytes: Uint8Array;
  coordinatorPublicKey: PublicKeyInput;
  /** The node's decrypted private key. */
  nodePrivateKey: PrivateKey;
  /** Signing time (default now). */
  now?: Date;
}

/** Signs `bytes` with the node key and encrypts them to the coordinator key. */
export async function sealUpdate({ bytes, coordinatorPublicKey, nodePrivateKey, now }: SealUpdateOptions): Promise<Uint8Array> {
  if (!nodePrivateKey.isPrivate() || !nodePrivateKey.isDecrypted()) {
    throw new CryptoKeyError('sealUpdate needs the node\'s decrypted private key (see loadPrivateKey)');
  }
  const encryptionKey = await toPublicKey(coordinatorPublicKey);
  // Natively for our key type (native-seal.ts: ~0.3 ms for a 19 KB update instead of ~2.2 ms);
  // OpenPGP.js for anything else, and to raise the errors (an expired coordinator key...).
  const native = await sealNatively(bytes, encryptionKey, nodePrivateKey, now ?? new Date());
  if (native !== null) return native;
  try {
    return await openpgp.encrypt({
      message: await openpgp.createMessage({ binary: bytes }),
      encryptionKeys: encryptionKey,
      signingKeys: nodePrivateKey,
      format: 'binary',
      date: now, // undefined = now
    });
  } catch (err) {
    // e.g. the coordinator key is expired or revoked: OpenPGP.js refuses to encrypt to it.
    throw new CryptoKeyError(`cannot seal update for coordinator key ${encryptionKey.getFingerprint()}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/**
 * How updates were opened (tests, benchmarks): `natively`, decrypted and verified without
 * OpenPGP.js (native-seal.ts); `decrypted`, by OpenPGP.js, then `native` of those whose signature
 * was established natively (native-verify.ts), the rest left to OpenPGP.js's verification.
 */
export const openPaths = { natively: 0, decrypted: 0, native: 0 };

export interface OpenUpdateOptions {
  sealed: Uint8Array;
  /** The coordinator's decrypted private key. */
  coordinatorPrivateKey: PrivateKey;
  /** The key on record for the node that is supposed to have sent the update. */
  nodePublicKey: PublicKeyInput;
  now?: Date;
}

/**
 * Decrypts a sealed update and checks it was signed by `nodePublicKey`. Throws
 * `CryptoVerificationError` (with a `reason`) for anything that is not a valid update from that
 * node: malformed, not for this coordinator, modified, unsigned, signed by another key (also when
 * another signature sits next to the node's), or the node's key expired/revoked now.
 */
export async function openUpdate({ sealed, coordinatorPrivateKey, nodePublicKey, now = new Date() }: OpenUpdateOptions): Promise<Uint8Array> {
  const nodeKey = await toPublicKey(nodePublicKey);
  const nodeFingerprint = nodeKey.getFingerprint();

  // OpenPGP.js accepts a signature by a key that has expired since, when the signature claims an
  // older creation time; a node's time claim is not evidence, so judge the key now.
  const status = await keyStatus(nodeKey, now);
  if (status === 'revoked') throw new CryptoVerificationError('revoked-key', `node key ${nodeFingerprint} is revoked`);
  if (status === 'expired' || status === 'invalid') {
    throw new CryptoVerificationError('expired-key', `node key ${nodeFingerprint} is ${status === 'expired' ? 'expired' : 'invalid'}`);
  }

  // Natively (native-seal.ts), when the message has exactly the shape a node seals and the
  // signature checks out natively: a 19 KB update opened in ~0.3 ms instead of ~1.7 ms, a 4 MB one
  // in ~10 ms instead of ~20 ms. Anything else is left to OpenPGP.js below, whose verdict stands.
  // Never an error of its own: whatever the native reader cannot take, OpenPGP.js judges below.
  const natively = await openNatively(sealed, coordinatorPrivateKey, now).catch(() => null);
  if (natively !== null && natively.onePassIssuer.equals(Buffer.from(nodeKey.getKeyID().toHex(), 'hex')) && (await verifiesNatively(natively.data, natively.signature, nodeKey, now))) {
    openPaths.natively++;
    return natively.data;
  }

  // Decrypted once, the signatures checked natively (native-verify.ts: Node's Ed25519, for our key
  // shape, with the checks OpenPGP.js makes); OpenPGP.js's own verification inside decrypt cost
  // ~0.8-1 ms of an open (issue 13: a 19 KB update opened in 2.6-3.7 ms before, 2.4-3.1 ms after,
  // idle machine, alternated). Only when a signature is not established natively does OpenPGP.js
  // decide, with its own verdict and error.
  const opened = await decryptSealed(sealed, coordinatorPrivateKey, undefined, now);
  openPaths.decrypted++;
  const signatures = await Promise.allSettled(opened.signatures.map((s) => s.signature));
  if (signatures.length > 0 && signatures.every((s) => s.status === 'fulfilled')) {
    const natively = await Promise.all(signatures.map((s) => verifiesNatively(opened.data, (s as PromiseFulfilledResult<openpgp.Signature>).value, nodeKey, now)));
    if (natively.every(Boolean)) {
      openPaths.native++;
      return opened.data;
    }
  }
  const result = await decryptSealed(sealed, coordinatorPrivateKey, nodeKey, now);
  // Settle every verification promise, so that none is left to reject unhandled.
  const outcomes = await Promise.allSettled(result.signatures.map((s) => s.verified));
  if (outcomes.length === 0) throw new CryptoVerificationError('unsigned', 'sealed update carries no signature');
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed !== undefined) {
    throw new CryptoVerificationError(
      'bad-signature',
      `sealed update is not signed (only) by node key ${nodeFingerprint}: ${errorMessage(failed.reason)}`,
      { cause: failed.reason },
    );
  }
  return result.data;
}

/**
 * The decrypted bytes and their signatures, verified against `verificationKey` by OpenPGP.js when
 * one is given; without one every `verified` is settled here (each rejects: no key to check with).
 */
async function decryptSealed(sealed: Uint8Array, coordinatorPrivateKey: PrivateKey, verificationKey: openpgp.PublicKey | undefined, now: Date) {
  let message;
  try {
    message = await openpgp.readMessage({ binaryMessage: sealed });
  } catch (err) {
    throw new CryptoVerificationError('malformed', `sealed update is not an OpenPGP message: ${errorMessage(err)}`, { cause: err });
  }
  let result;
  try {
    result = await openpgp.decrypt({
      message,
      decryptionKeys: coordinatorPrivateKey,
      ...(verificationKey ? { verificationKeys: verificationKey } : {}),
      // Signatures are checked by the caller, one by one, to tell "unsigned" from "wrong signer".
      expectSigned: false,
      // NOT the default 'utf8', which returns a string and rewrites "\r\n" to "\n": corrupts binary.
      format: 'binary',
      date: now,
    });
  } catch (err) {
    throw new CryptoVerificationError('decryption-failed', `cannot decrypt sealed update: ${errorMessage(err)}`, { cause: err });
  }
  if (!verificationKey) await Promise.allSettled(result.signatures.map((s) => s.verified));
  return result;
}
