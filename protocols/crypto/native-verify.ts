/**
 * A fast path for verifying OpenPGP detached signatures made by our own key type (v4 keys, primary
 * key EdDSALegacy over Ed25519, see keys.ts), with Node's native Ed25519 (OpenSSL) instead of
 * OpenPGP.js's generic path. Same signatures, same wire format: nothing changes for a signer or
 * for `gpg --verify`; only how fast the coordinator (request signatures) and a node (the global
 * model's signature) check them.
 *
 * Why (issue 13, measured on the churn demo): `openpgp.verify` on an already parsed key costs
 * ~1.1 ms of CPU per request signature, of which the Ed25519 check is ~0.1 ms; the rest is
 * message objects, streams, re-deriving the signing key at the signature's time (primary user,
 * self-signature, expiry) and a WebCrypto key import per call. The coordinator verifies one
 * request signature per request, tens per round.
 *
 * What is checked, per RFC 9580:
 * - the signature packet body is parsed by OpenPGP.js itself (`SignaturePacket.read`: subpackets,
 *   critical bits, MPIs), so parsing is OpenPGP.js's; only the packet header (RFC 9580 section 4.2)
 *   is read here, and anything but exactly one signature packet goes to OpenPGP.js;
 * - v4 signature packet (section 5.2.3) of type 0x00 (binary document, section 5.2.1.1), public-key
 *   algorithm 22 EdDSALegacy with a hash of at least 256 bits (section 5.2.3.3: SHA-256/384/512),
 *   exactly one signature packet, issued (issuer key ID) by the primary key;
 * - the hashed value (section 5.2.4): hash(data || hashed part of the packet (version .. hashed
 *   subpackets) || 0x04 0xFF || four-octet big-endian length of that hashed part), its left 16
 *   bits equal to the packet's, and the EdDSA signature (r || s, each MPI left-padded to 32
 *   octets, section 5.2.3.3) valid over that digest under the key's Ed25519 point (RFC 8032
 *   section 5.1.7, done by OpenSSL through node:crypto);
 * - the same time rules as OpenPGP.js: signature not created after `date` (to the second), key
 *   created no later than the signature, and the key valid for signing at the signature's time.
 *
 * Exactness by construction: this path only ever says "valid" or "not established". Anything it
 * does not handle in full (another key shape: subkeys that sign, several user IDs or
 * self-signatures, direct-key or revocation signatures; another signature shape: critical
 * unknown subpackets or notations, a signature expiry, v6 packets) and every signature that fails here goes to
 * OpenPGP.js, which gives the final verdict and the error message. For the key, validity for
 * signing at time t is established once per key object by OpenPGP.js (`getSigningKey` at the self-
 * signature's time): with one user ID, one self-signature and no revocation or direct-key
 * signature, OpenPGP.js's answer is the same for every t from that self-signature's creation up to
 * the key's expiration time, which is the window checked here.
 * test/crypto/native-verify.test.ts checks against OpenPGP.js (fast-check): every signature it
 * makes verifies here, and no mutated signature verifies here that OpenPGP.js refuses.
 */
import { createHash, createPublicKey, verify as ed25519Verify, type KeyObject } from 'node:crypto';
import * as openpgp from 'openpgp';
import type { PublicKey } from 'openpgp';

const { enums } = openpgp;
const HASHES = new Map<number, string>([
  [enums.hash.sha256, 'sha256'],
  [enums.hash.sha384, 'sha384'],
  [enums.hash.sha512, 'sha512'],
]);

/** What the native path needs from a key, established once per key object. */
export interface NativeKey {
  keyObject: KeyObject;
  /** Key creation and the window in which OpenPGP.js lets the primary key sign, in ms. */
  createdMs: number;
  signingFromMs: number;
  signingUntilMs: number;
}

const nativeKeys = new WeakMap<PublicKey, Promise<NativeKey | null>>();

/** The structure for which OpenPGP.js's signing-key verdict is constant in time (see header). */
export function hasSimpleShape(key: PublicKey): boolean {
  const packet = key.keyPacket as unknown as { version: number; algorithm: number; publicParams: { oid?: { getName(): string }; Q?: Uint8Array } };
  const q = packet.publicParams.Q;
  const user = key.users.length === 1 ? key.users[0] : undefined;
  return (
    packet.version === 4 &&
    packet.algorithm === enums.publicKey.eddsaLegacy &&
    packet.publicParams.oid?.getName() === enums.curve.ed25519Legacy &&
    q instanceof Uint8Array && q.length === 33 && q[0] === 0x40 &&
    key.revocationSignatures.length === 0 &&
    (key as unknown as { directSignatures: unknown[] }).directSignatures.length === 0 &&
    user !== undefined && user.userID !== null &&
    user.selfCertifications.length === 1 &&
    user.revocationSignatures.length === 0
  );
}

async function establishNativeKey(key: PublicKey): Promise<NativeKey | null> {
  if (!hasSimpleShape(key)) return null;
  const selfSignedAt = key.users[0].selfCertifications[0].created;
  if (selfSignedAt === null) return null;
  try {
    // OpenPGP.js's own verdict at the start of the window (self-signature checked, key flags allow signing).
    if ((await key.getSigningKey(key.getKeyID(), selfSignedAt)) !== key) return null;
  } catch {
    return null;
  }
  const expiry = await key.getExpirationTime();
  if (expiry === null) return null;
  const q = (key.keyPacket as unknown as { publicParams: { Q: Uint8Array } }).publicParams.Q;
  const keyObject = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(q.subarray(1)).toString('base64url') }, format: 'jwk' });
  return {
    keyObject,
    createdMs: key.getCreationTime().getTime(),
    signingFromMs: selfSignedAt.getTime(),
    signingUntilMs: expiry === Infinity ? Infinity : (expiry as Date).getTime(),
  };
}

export function nativeKeyOf(key: PublicKey): Promise<NativeKey | null> {
  let entry = nativeKeys.get(key);
  if (entry === undefined) {
    entry = establishNativeKey(key);
    nativeKeys.set(key, entry);
  }
  return entry;
}

/** The fields of OpenPGP.js's SignaturePacket read here (not all are in its type declarations). */
export interface SignaturePacketFields {
  version: number;
  signatureType: number;
  publicKeyAlgorithm: number;
  hashAlgorithm: number;
  signatureData: Uint8Array;
  signedHashValue: Uint8Array;
  params: { r?: Uint8Array; s?: Uint8Array } | Promise<{ r?: Uint8Array; s?: Uint8Array }>;
  created: Date | null;
  issuerKeyID: { equals(other: unknown): boolean };
  signatureNeverExpires: boolean;
  unknownSubpackets: { critical: boolean }[];
  rawNotations: { name: string; critical: boolean }[];
  revocationKeyClass: number | null;
}

/** Whether the packet is one this path handles in full (else OpenPGP.js decides). */
function isPlainBinarySignature(p: SignaturePacketFields, key: PublicKey): boolean {
  return (
    p.version === 4 &&
    p.signatureType === enums.signature.binary &&
    p.publicKeyAlgorithm === enums.publicKey.eddsaLegacy &&
    HASHES.has(p.hashAlgorithm) &&
    !openpgp.config.rejectHashAlgorithms.has(p.hashAlgorithm) &&
    !openpgp.config.rejectMessageHashAlgorithms.has(p.hashAlgorithm) &&
    p.issuerKeyID.equals(key.getKeyID()) &&
    p.signatureNeverExpires &&
    // As OpenPGP.js: refuse critical unknown subpackets and critical unknown notations (its own
    // signatures carry a non-critical salt notation, salt@notations.openpgpjs.org).
    !p.unknownSubpackets.some((sp) => sp.critical) &&
    !p.rawNotations.some((nt) => nt.critical && !openpgp.config.knownNotations.includes(nt.name)) &&
    p.revocationKeyClass === null &&
    p.created !== null
  );
}

/** Time rules, as OpenPGP.js applies them (dates compared to the second). */
export function timesOk(created: Date, date: Date, nk: NativeKey): boolean {
  const t = created.getTime();
  const dateSeconds = Math.floor(date.getTime() / 1000) * 1000;
  return t <= dateSeconds && nk.createdMs <= t && nk.signingFromMs <= t && t < nk.signingUntilMs;
}

/** RFC 9580 section 5.2.4: the digest that a v4 signature signs. */
function signedDigest(p: SignaturePacketFields, data: Uint8Array): Buffer {
  const trailer = Buffer.alloc(6);
  trailer[0] = 0x04;
  trailer[1] = 0xff;
  trailer.writeUInt32BE(p.signatureData.length, 2);
  return createHash(HASHES.get(p.hashAlgorithm)!).update(data).update(p.signatureData).update(trailer).digest();
}

/**
 * The body of a binary signature that is exactly one signature packet with a definite length
 * (RFC 9580 section 4.2: OpenPGP or legacy packet header, tag 2), or null for anything else
 * (several packets, partial lengths, another tag), which then goes to OpenPGP.js's `readSignature`.
 * Only the header is read here; the body is parsed by OpenPGP.js's own `SignaturePacket.read`
 * (its stream-based `readSignature` costs ~8x more for the same result).
 */
function singleSignaturePacketBody(bytes: Uint8Array): Uint8Array | null {
  if (bytes.length < 2) return null;
  const tagByte = bytes[0];
  let offset: number;
  let length: number;
  if (tagByte === 0xc2) { // OpenPGP format, tag 2
    const b1 = bytes[1];
    if (b1 < 192) [offset, length] = [2, b1];
    else if (b1 < 224) [offset, length] = [3, ((b1 - 192) << 8) + (bytes[2] ?? 0) + 192];
    else if (b1 === 255 && bytes.length >= 6) [offset, length] = [6, Buffer.from(bytes.buffer, bytes.byteOffset + 2, 4).readUInt32BE(0)];
    else return null; // partial body length: never used for signatures
  } else if ((tagByte & 0xfc) === 0x88) { // legacy format, tag 2
    const lengthType = tagByte & 0x03;
    if (lengthType === 0) [offset, length] = [2, bytes[1]];
    else if (lengthType === 1 && bytes.length >= 3) [offset, length] = [3, (bytes[1] << 8) | bytes[2]];
    else if (lengthType === 2 && bytes.length >= 5) [offset, length] = [5, Buffer.from(bytes.buffer, bytes.byteOffset + 1, 4).readUInt32BE(0)];
    else return null;
  } else {
    return null;
  }
  return offset + length === bytes.length ? bytes.subarray(offset) : null;
}

/** How signature packet bodies were read (tests): by the fixed layout below, or by OpenPGP.js. */
export const packetReads = { layout: 0, openpgp: 0 };

/**
 * The fixed layout of the signatures native-sign.ts makes (the node's request signatures and
 * sealed updates, the coordinator's models and audit checkpoints), matched byte for byte:
 *   04 | 00 binary | 16 EdDSALegacy | 0A SHA-512 | hashed area 00 1D:
 *     05 02 <creation time, 4 octets> | 16 21 04 <issuer fingerprint, 20 octets>
 *   | unhashed area 00 0A: 09 10 <issuer key ID, 8 octets> | left 16 bits | MPI r | MPI s.
 * Every field OpenPGP.js would read from these bytes is fixed by the match, so the fields given
 * here are the ones its `SignaturePacket.read` gives (test/crypto/native-verify.test.ts compares
 * them); the key ID must be the fingerprint's low 64 bits (RFC 9580 section 5.5.4.2). Anything
 * else, by a single octet, goes to OpenPGP.js's reader as before. Issue 13: that reader (subpacket
 * objects, a stream-based UTF-8 decoder) was ~4% of a demo node's CPU, and the coordinator reads
 * ~30 signatures a round.
 */
const LAYOUT_HEAD = Buffer.from([4, 0x00, 0x16, 0x0a, 0x00, 0x1d, 0x05, 0x02]);
const LAYOUT_HASHED_END = 35; // version .. end of the hashed area: what the digest covers
function fixedLayoutFields(body: Uint8Array): SignaturePacketFields | null {
  const b = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (b.length < 53 || !b.subarray(0, 8).equals(LAYOUT_HEAD) || b[12] !== 0x16 || b[13] !== 0x21 || b[14] !== 4) return null;
  if (b[35] !== 0x00 || b[36] !== 0x0a || b[37] !== 0x09 || b[38] !== 0x10 || !b.subarray(27, 35).equals(b.subarray(39, 47))) return null;
  const r = readMpi(b, 49);
  const s = r === null ? null : readMpi(b, 49 + 2 + r.length);
  if (r === null || s === null || 49 + 4 + r.length + s.length !== b.length) return null;
  const keyIdHex = b.subarray(39, 47).toString('hex');
  return {
    version: 4,
    signatureType: enums.signature.binary,
    publicKeyAlgorithm: enums.publicKey.eddsaLegacy,
    hashAlgorithm: enums.hash.sha512,
    signatureData: b.subarray(0, LAYOUT_HASHED_END),
    signedHashValue: b.subarray(47, 49),
    params: { r, s },
    created: new Date(b.readUInt32BE(8) * 1000),
    issuerKeyID: { equals: (other: unknown) => (other as { toHex(): string }).toHex() === keyIdHex },
    signatureNeverExpires: true,
    unknownSubpackets: [],
    rawNotations: [],
    revocationKeyClass: null,
  };
}

/** An MPI of at most 32 octets at `at` (RFC 9580 section 3.2: bit count, then the octets), or null. */
function readMpi(b: Buffer, at: number): Buffer | null {
  if (at + 2 > b.length) return null;
  const length = (b.readUInt16BE(at) + 7) >>> 3;
  return length <= 32 && at + 2 + length <= b.length ? b.subarray(at + 2, at + 2 + length) : null;
}

/** A binary signature's one packet, read by its fixed layout or by OpenPGP.js's packet class; null: see `singleSignaturePacketBody`. */
export function parseSignaturePacket(bytes: Uint8Array): SignaturePacketFields | null {
  const body = singleSignaturePacketBody(bytes);
  if (body === null) return null;
  const fixed = fixedLayoutFields(body);
  if (fixed !== null) {
    packetReads.layout++;
    return fixed;
  }
  packetReads.openpgp++;
  const packet = new openpgp.SignaturePacket();
  packet.read(body);
  return packet as unknown as SignaturePacketFields;
}

/** The one signature packet of a parsed signature, or null when there is not exactly one. */
function onlyPacket(signature: openpgp.Signature): SignaturePacketFields | null {
  return signature.packets.length === 1 ? (signature.packets[0] as unknown as SignaturePacketFields) : null;
}

function leftPad32(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  out.set(bytes, 32 - bytes.length);
  return out;
}

/**
 * True when the detached signature (binary packet bytes, or an already parsed `openpgp.Signature`)
 * is a valid signature by `key` over `data`, as OpenPGP.js would find at `date`; false means "not
 * established here" (invalid, or a shape this path leaves to OpenPGP.js). Never throws.
 */
export async function verifiesNatively(data: Uint8Array, signature: Uint8Array | openpgp.Signature, key: PublicKey, date: Date): Promise<boolean> {
  try {
    const nk = await nativeKeyOf(key);
    if (nk === null || !hasSimpleShape(key)) return false; // re-checked: a key object could have been changed since
    const p = signature instanceof Uint8Array ? parseSignaturePacket(signature) : onlyPacket(signature);
    if (p === null || !isPlainBinarySignature(p, key) || !timesOk(p.created!, date, nk)) return false;
    const digest = signedDigest(p, data);
    if (digest[0] !== p.signedHashValue[0] || digest[1] !== p.signedHashValue[1]) return false;
    const { r, s } = await p.params;
    if (!(r instanceof Uint8Array) || !(s instanceof Uint8Array) || r.length > 32 || s.length > 32) return false;
    return ed25519Verify(null, digest, nk.keyObject, Buffer.concat([leftPad32(r), leftPad32(s)]));
  } catch {
    return false;
  }
}

/**
 * The bytes of an ASCII-armored signature (RFC 9580 section 6.2): "-----BEGIN PGP SIGNATURE-----",
 * optional "Key: Value" armor headers, an empty line, base64 lines, an optional CRC-24 line
 * ("=" and four base64 characters, section 6.1: checked when present), "-----END PGP SIGNATURE-----".
 * Null for anything else (then OpenPGP.js reads it and decides): OpenPGP.js's stream-based
 * `readSignature` cost a node ~8% of its CPU reading the model's and the audit checkpoint's
 * signatures every round (issue 13).
 */
export function dearmoredSignature(armored: string): Uint8Array | null {
  const lines = armored.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length < 3 || lines[0] !== '-----BEGIN PGP SIGNATURE-----' || lines[lines.length - 1] !== '-----END PGP SIGNATURE-----') return null;
  let at = 1;
  while (at < lines.length - 1 && lines[at] !== '') {
    if (!/^[^:\s][^:]*: /.test(lines[at])) return null;
    at++;
  }
  if (lines[at] !== '') return null;
  const body = lines.slice(at + 1, lines.length - 1);
  const checksum = body.length > 0 && /^=[A-Za-z0-9+/]{4}$/.test(body[body.length - 1]) ? body.pop()!.slice(1) : undefined;
  const base64 = body.join('');
  if (base64.length === 0 || base64.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return null;
  const bytes = Buffer.from(base64, 'base64');
  if (checksum !== undefined && Buffer.from(checksum, 'base64').readUIntBE(0, 3) !== crc24(bytes)) return null;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** CRC-24 of RFC 9580 section 6.1 (init 0xB704CE, generator 0x1864CFB). */
function crc24(bytes: Uint8Array): number {
  let crc = 0xb704ce;
  for (const b of bytes) {
    crc ^= b << 16;
    for (let i = 0; i < 8; i++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

/**
 * True when `key` is one this path handles and OpenPGP.js's `keyStatus` would call it valid at
 * `at`: our key shape has no revocation signature (hasSimpleShape), so valid means created by
 * `at` (to the second) and not expired at `at`. False means "not established here": ask keyStatus.
 */
export async function nativelyValidAt(key: PublicKey, at: Date): Promise<boolean> {
  const nk = await nativeKeyOf(key);
  if (nk === null || !hasSimpleShape(key)) return false;
  const t = at.getTime();
  return nk.createdMs <= Math.floor(t / 1000) * 1000 && t < nk.signingUntilMs;
}
