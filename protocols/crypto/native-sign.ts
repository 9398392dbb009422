/**
 * Native signing of the detached request signatures (request-signing.ts), the node's side of
 * native-verify.ts: the same OpenPGP v4 signature packet OpenPGP.js would make, built here and
 * signed with Node's native Ed25519 (OpenSSL), because `openpgp.sign` costs ~1-1.5 ms of CPU per
 * request (message objects, streams, re-deriving the signing key, a WebCrypto key import per call)
 * for ~0.05 ms of Ed25519, and a node signs every request it sends.
 *
 * The packet (RFC 9580 section 5.2.3, version 4; section 4.2 OpenPGP packet header, tag 2):
 *   04 | 00 (binary document, section 5.2.1.1) | 16 (EdDSALegacy) | 0A (SHA-512)
 *   | hashed subpackets: signature creation time (type 2, section 5.2.3.11) and issuer
 *     fingerprint (type 33, section 5.2.3.35)
 *   | unhashed subpackets: issuer key ID (type 16, section 5.2.3.12)
 *   | left 16 bits of the digest | MPI r | MPI s (section 5.2.3.3)
 * The digest is SHA-512(data || hashed part || 04 FF || four-octet length of the hashed part)
 * (section 5.2.4), and r || s is the Ed25519 signature (RFC 8032 section 5.1.6) of that digest,
 * as OpenPGP.js and GnuPG make and check EdDSALegacy signatures. Unlike OpenPGP.js this adds no
 * random "salt" notation (OpenPGP.js's own hardening of deterministic EdDSA against fault attacks
 * on software in hostile environments; it is not part of the format), so the packet is 49 bytes
 * shorter.
 *
 * Only for our own key shape and inside the window in which OpenPGP.js would let the key sign
 * (native-verify.ts: one user ID, one self-signature, no revocation, not expired at `date`);
 * otherwise `signNatively` returns null and the caller signs with OpenPGP.js (which then also
 * raises the errors, e.g. for an expired key). test/crypto/native-sign.test.ts checks that
 * OpenPGP.js verifies every signature made here.
 */
import { createPrivateKey, createHash, sign as ed25519Sign, type KeyObject } from 'node:crypto';
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { hasSimpleShape, nativeKeyOf, timesOk } from './native-verify.ts';

const { enums } = openpgp;

interface NativeSigner {
  privateKey: KeyObject;
  fingerprint: Buffer;
  keyID: Buffer;
}

const signers = new WeakMap<PrivateKey, NativeSigner | null>();

function nativeSignerOf(key: PrivateKey): NativeSigner | null {
  let signer = signers.get(key);
  if (signer === undefined) {
    const packet = key.keyPacket as unknown as { privateParams?: { seed?: Uint8Array }; publicParams: { Q: Uint8Array } };
    const seed = packet.privateParams?.seed;
    if (!(seed instanceof Uint8Array) || seed.length !== 32 || !hasSimpleShape(key)) {
      signer = null;
    } else {
      const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
      signer = {
        privateKey: createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64(seed), x: b64(packet.publicParams.Q.subarray(1)) }, format: 'jwk' }),
        fingerprint: Buffer.from(key.getFingerprint(), 'hex'),
        keyID: Buffer.from(key.getKeyID().toHex(), 'hex'),
      };
    }
    signers.set(key, signer);
  }
  return signer;
}

/** An MPI (RFC 9580 section 3.2): bit count, then the big-endian value without leading zero octets. */
function mpi(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length && bytes[start] === 0) start++;
  const value = bytes.subarray(start);
  const bits = value.length === 0 ? 0 : (value.length - 1) * 8 + (32 - Math.clz32(value[0]));
  const head = Buffer.alloc(2);
  head.writeUInt16BE(bits);
  return Buffer.concat([head, value]);
}

/** The OpenPGP packet header for a tag-2 packet of `length` octets (RFC 9580 section 4.2.1). */
function signaturePacketHeader(length: number): Buffer {
  if (length < 192) return Buffer.from([0xc2, length]);
  if (length < 8384) return Buffer.from([0xc2, ((length - 192) >> 8) + 192, (length - 192) & 0xff]);
  throw new RangeError('signature packet too long');
}

function hashedPart(signer: NativeSigner, createdSeconds: number): Buffer {
  const subpackets = Buffer.alloc(6 + 23);
  subpackets.set([5, 2], 0); // length 5: type 2 + four-octet time
  subpackets.writeUInt32BE(createdSeconds, 2);
  subpackets.set([22, 33, 4], 6); // length 22: type 33 + version 4 + 20-octet fingerprint
  subpackets.set(signer.fingerprint, 9);
  const head = Buffer.from([4, enums.signature.binary, enums.publicKey.eddsaLegacy, enums.hash.sha512, 0, 0]);
  head.writeUInt16BE(subpackets.length, 4);
  return Buffer.concat([head, subpackets]);
}

/**
 * A binary detached signature by `key` over `data`, created at `date` (to the second), or null
 * when this key or time is not one signed here (then sign with OpenPGP.js).
 */
export async function signNatively(data: Uint8Array, key: PrivateKey, date: Date): Promise<Uint8Array | null> {
  if (!key.isDecrypted()) return null;
  const signer = nativeSignerOf(key);
  const nk = signer === null ? null : await nativeKeyOf(key);
  if (signer === null || nk === null || !hasSimpleShape(key)) return null;
  const createdSeconds = Math.floor(date.getTime() / 1000);
  if (!timesOk(new Date(createdSeconds * 1000), date, nk)) return null;
  const hashed = hashedPart(signer, createdSeconds);
  const trailer = Buffer.from([4, 0xff, 0, 0, 0, 0]);
  trailer.writeUInt32BE(hashed.length, 2);
  const digest = createHash('sha512').update(data).update(hashed).update(trailer).digest();
  const rs = ed25519Sign(null, digest, signer.privateKey);
  const unhashed = Buffer.concat([Buffer.from([0, 10, 9, 16]), signer.keyID]); // area length 10; subpacket length 9, type 16
  const body = Buffer.concat([hashed, unhashed, digest.subarray(0, 2), mpi(rs.subarray(0, 32)), mpi(rs.subarray(32))]);
  return new Uint8Array(Buffer.concat([signaturePacketHeader(body.length), body]));
}
