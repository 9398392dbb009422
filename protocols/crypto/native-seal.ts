/**
 * Native sealing and opening of model updates (sealed-update.ts): the same OpenPGP message
 * OpenPGP.js makes for `encrypt({ encryptionKeys, signingKeys, format: 'binary' })` to our key type,
 * built and read here with Node's native X25519, AES and hashes (OpenSSL) instead of OpenPGP.js's
 * generic path. Same wire format: OpenPGP.js and GnuPG open what is sealed here, and what they seal
 * opens here.
 *
 * Why (issue 13, churn demo): a node sealed its 19 KB update in ~2.2 ms of CPU with OpenPGP.js
 * (message objects, streams, a WebCrypto key import, the one-pass signature machinery) for
 * ~0.3 ms of cryptography, once per round and node; the coordinator spent ~1.7 ms opening each. A
 * 4 MB update (1M parameters) took ~20-30 ms to open, half the coordinator path's budget (0.05 s).
 * Figures: bench/crypto-request-bench.ts.
 *
 * The message (RFC 9580; our keys are v4, see keys.ts):
 *   PKESK v3 (tag 1, section 5.1.1), algorithm 18 ECDH over Curve25519Legacy (RFC 6637 as amended
 *     by RFC 9580 section 5.1.6): an ephemeral X25519 key V; KEK = KDF-hash(00 00 00 01 || X25519
 *     shared secret || param)[: KEK size], param = curve OID || 18 || KDF params || "Anonymous
 *     Sender    " || recipient subkey fingerprint (section 11.5); C = AES key wrap (RFC 3394) of
 *     the PKCS#5-padded (section 11.5) m = cipher id || session key || two-octet checksum;
 *   SEIPD v1 (tag 18, section 5.13.1): AES-CFB with an all-zero IV over a random block-size prefix
 *     with its last two octets repeated || the packets || the MDC packet D3 14 || SHA-1 of all
 *     that precedes the hash (section 5.13.1);
 *   inside: one-pass signature (tag 4, section 5.4), literal data (tag 11, format 'b', section
 *     5.9), signature (tag 2; native-sign.ts makes it, native-verify.ts checks it).
 * Session keys are AES-256, as OpenPGP.js chooses for our keys (their preferred-cipher lists start
 * with AES-256).
 *
 * Exactness by construction, as native-verify.ts: each side handles only our key shape and this
 * message shape; anything else, and every failure (a bad MDC, a key wrap that does not unwrap, a
 * key not valid at `date`), returns null, and the caller leaves it to OpenPGP.js, whose verdict
 * and error then stand. The recipient's key is the one OpenPGP.js picks, validity checked by
 * OpenPGP.js (`getEncryptionKey` / `getDecryptionKeys`) on every call. test/crypto/native-seal.test.ts
 * checks both directions against OpenPGP.js, and that no mutated message opens here that
 * OpenPGP.js refuses.
 */
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import * as openpgp from 'openpgp';
import type { PrivateKey, PublicKey } from 'openpgp';
import { signNatively } from './native-sign.ts';

const { enums } = openpgp;

/** The AES ciphers (RFC 9580 section 9.3): Node's names for CFB and key wrap, key size in octets. */
const AES = new Map<number, { cfb: string; wrap: string; keySize: number }>([
  [enums.symmetric.aes128, { cfb: 'aes-128-cfb', wrap: 'id-aes128-wrap', keySize: 16 }],
  [enums.symmetric.aes192, { cfb: 'aes-192-cfb', wrap: 'id-aes192-wrap', keySize: 24 }],
  [enums.symmetric.aes256, { cfb: 'aes-256-cfb', wrap: 'id-aes256-wrap', keySize: 32 }],
]);
const KDF_HASHES = new Map<number, string>([
  [enums.hash.sha256, 'sha256'],
  [enums.hash.sha384, 'sha384'],
  [enums.hash.sha512, 'sha512'],
]);
const SESSION_CIPHER = enums.symmetric.aes256;
/**
 * Session ciphers opened here: those OpenPGP.js accepts whatever the recipient key prefers
 * (AES-256 and AES-128 of them; it takes others only when the key lists them).
 */
const OPENED_SESSION_CIPHERS = new Set<number>([enums.symmetric.aes256, enums.symmetric.aes128]);
const KEY_WRAP_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex'); // RFC 3394 section 2.2.3.1
const ANONYMOUS_SENDER = Buffer.from('Anonymous Sender    ', 'latin1');
const MDC_HEADER = Buffer.from([0xd3, 0x14]);
const BLOCK = 16;

/** What ECDH needs of the recipient's encryption subkey (RFC 6637 section 8, RFC 9580 section 11.5). */
interface EcdhKey {
  keyID: Buffer;
  /** The subkey's X25519 public key (native, little-endian u-coordinate). */
  q: Buffer;
  kdfHash: string;
  kek: { wrap: string; keySize: number };
  param: Buffer;
}

interface EcdhKeyPacket {
  algorithm: number;
  version: number;
  publicParams: { oid?: { getName(): string; write(): Uint8Array }; Q?: Uint8Array; kdfParams?: { hash: number; cipher: number; write(): Uint8Array } };
  privateParams?: { d?: Uint8Array } | null;
  getKeyID(): { write(): Uint8Array };
  getFingerprintBytes(): Uint8Array | null;
}

/** The subkey packet's ECDH material when it is Curve25519Legacy with parameters handled here, else null. */
function ecdhKeyOf(packet: EcdhKeyPacket): EcdhKey | null {
  const { oid, Q, kdfParams } = packet.publicParams;
  const fingerprint = packet.getFingerprintBytes();
  if (packet.algorithm !== enums.publicKey.ecdh || packet.version !== 4 || oid?.getName() !== enums.curve.curve25519Legacy) return null;
  if (!(Q instanceof Uint8Array) || Q.length !== 33 || Q[0] !== 0x40 || kdfParams === undefined || fingerprint === null) return null;
  const kdfHash = KDF_HASHES.get(kdfParams.hash);
  const kek = AES.get(kdfParams.cipher);
  if (kdfHash === undefined || kek === undefined) return null;
  return {
    keyID: Buffer.from(packet.getKeyID().write()),
    q: Buffer.from(Q.subarray(1)),
    kdfHash,
    kek,
    param: Buffer.concat([oid.write(), Buffer.from([enums.publicKey.ecdh]), kdfParams.write(), ANONYMOUS_SENDER, fingerprint]),
  };
}

function keyEncryptionKey(key: EcdhKey, shared: Buffer): Buffer {
  return createHash(key.kdfHash).update(Buffer.from([0, 0, 0, 1])).update(shared).update(key.param).digest().subarray(0, key.kek.keySize);
}

function x25519Public(u: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: u.toString('base64url') }, format: 'jwk' });
}

/** An OpenPGP-format packet header with a definite length (RFC 9580 section 4.2.1). */
function packetHeaderFor(tag: number, length: number): Buffer {
  if (length < 192) return Buffer.from([0xc0 | tag, length]);
  if (length < 8384) return Buffer.from([0xc0 | tag, ((length - 192) >> 8) + 192, (length - 192) & 0xff]);
  const header = Buffer.from([0xc0 | tag, 0xff, 0, 0, 0, 0]);
  header.writeUInt32BE(length, 2);
  return header;
}

/** An OpenPGP packet: tag and body. */
function packet(tag: number, ...body: Uint8Array[]): Buffer {
  return Buffer.concat([packetHeaderFor(tag, body.reduce((n, part) => n + part.length, 0)), ...body]);
}

function sessionKeyChecksum(key: Uint8Array): number {
  let sum = 0;
  for (const b of key) sum = (sum + b) & 0xffff;
  return sum;
}

/** The u of X25519's base point (RFC 7748 section 4.1), base64url: the placeholder `x` of an imported private key. */
const X25519_BASE_X = Buffer.concat([Buffer.from([9]), Buffer.alloc(31)]).toString('base64url');

/**
 * A fresh X25519 key pair: 32 random bytes imported as the private key (JWK: Node 20 reads `d`
 * alone for a private OKP key, and requires an `x`, here the base point's), its public u derived
 * from it by OpenSSL. Not generateKeyPairSync + a JWK export: on Node 20 that deadlocked a node
 * process in the demo (2026-12-04, gdb: KeyObjectHandle::ExportJWK holds the key's mutex while it
 * allocates the JWK strings; the allocation ran a GC, whose weak callback destroyed the finished
 * KeyGenJob of that same key, whose destructor waits for that mutex: the process hung in
 * futex_wait for good, and the study waited for its round deadlines). No key generation job exists
 * here, so there is none to destroy. Any 32 bytes are an X25519 private key (RFC 7748 section 5
 * clamps them when used). 0.06 ms, as the generation was (a PKCS #8 DER import took 0.5 ms).
 */
function ephemeralX25519(): { privateKey: KeyObject; u: Buffer } {
  const privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: randomBytes(32).toString('base64url'), x: X25519_BASE_X }, format: 'jwk' });
  return { privateKey, u: Buffer.from(createPublicKey(privateKey).export({ format: 'jwk' }).x as string, 'base64url') };
}

/** PKESK v3 to `recipient` carrying the AES-256 `sessionKey`. */
function publicKeyEncryptedSessionKey(recipient: EcdhKey, sessionKey: Buffer): Buffer {
  const ephemeral = ephemeralX25519();
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519Public(recipient.q) }); // throws for a low-order key: sealNatively says null
  const ephemeralU = ephemeral.u;
  const checksum = sessionKeyChecksum(sessionKey);
  const m = Buffer.concat([Buffer.from([SESSION_CIPHER]), sessionKey, Buffer.from([checksum >> 8, checksum & 0xff])]);
  const pad = 8 - (m.length % 8);
  const padded = Buffer.concat([m, Buffer.alloc(pad, pad)]);
  const wrapper = createCipheriv(recipient.kek.wrap, keyEncryptionKey(recipient, shared), KEY_WRAP_IV);
  const wrapped = Buffer.concat([wrapper.update(padded), wrapper.final()]);
  // MPI of V = 0x40 || u: 33 octets, the first 0x40, so 32 * 8 + 7 = 263 bits (RFC 9580 section 3.2).
  return packet(enums.packet.publicKeyEncryptedSessionKey, Buffer.from([3]), recipient.keyID, Buffer.from([enums.publicKey.ecdh, 0x01, 0x07, 0x40]), ephemeralU, Buffer.from([wrapped.length]), wrapped);
}

/** The one-pass signature packet announcing `signature` (a v4 binary signature by `keyID`). */
function onePassSignature(signature: Uint8Array, keyID: Buffer): Buffer {
  const body = signatureBody(signature);
  if (body === null) throw new Error('native seal: unexpected signature packet');
  // version 3 | signature type | hash algorithm | public-key algorithm | issuer key ID | 1 = last (section 5.4)
  return packet(enums.packet.onePassSignature, Buffer.from([3, body[1], body[3], body[2]]), keyID, Buffer.from([1]));
}

/** The literal data packet, as its header and the bytes themselves (not copied: a 1M update is 4 MB). */
function literalData(bytes: Uint8Array, date: Date): Uint8Array[] {
  const header = Buffer.from([0x62 /* 'b' */, 0, 0, 0, 0, 0]);
  header.writeUInt32BE(Math.floor(date.getTime() / 1000), 2);
  return [packetHeaderFor(enums.packet.literalData, header.length + bytes.length), header, bytes];
}

/**
 * The sealed message for `bytes`: signed by `nodeKey`, encrypted to `coordinatorKey`'s encryption
 * subkey, as OpenPGP.js would seal it at `date`; null when either key is not one handled here or
 * not valid at `date` (then seal with OpenPGP.js, which also raises the errors).
 */
export async function sealNatively(bytes: Uint8Array, coordinatorKey: PublicKey, nodeKey: PrivateKey, date: Date): Promise<Uint8Array | null> {
  let encryptionKey;
  try {
    encryptionKey = await coordinatorKey.getEncryptionKey(undefined, date);
  } catch {
    return null; // expired, revoked, no encryption subkey: OpenPGP.js says which
  }
  const recipient = ecdhKeyOf(encryptionKey.keyPacket as unknown as EcdhKeyPacket);
  if (recipient === null) return null;
  const signature = await signNatively(bytes, nodeKey, date);
  if (signature === null) return null;
  const inner = [onePassSignature(signature, Buffer.from(nodeKey.getKeyID().toHex(), 'hex')), ...literalData(bytes, date), signature];

  let pkesk: Buffer;
  const sessionKey = randomBytes(32);
  try {
    pkesk = publicKeyEncryptedSessionKey(recipient, sessionKey);
  } catch {
    return null; // a coordinator key OpenSSL will not agree with: OpenPGP.js says why
  }
  const prefix = randomBytes(BLOCK + 2);
  prefix[BLOCK] = prefix[BLOCK - 2];
  prefix[BLOCK + 1] = prefix[BLOCK - 1];
  const mdc = createHash('sha1').update(prefix);
  for (const part of inner) mdc.update(part);
  const hash = mdc.update(MDC_HEADER).digest();
  const cipher = createCipheriv('aes-256-cfb', sessionKey, Buffer.alloc(BLOCK));
  const encrypted = [cipher.update(prefix), ...inner.map((part) => cipher.update(part)), cipher.update(MDC_HEADER), cipher.update(hash), cipher.final()];
  return new Uint8Array(Buffer.concat([pkesk, packet(enums.packet.symEncryptedIntegrityProtectedData, Buffer.from([1]), ...encrypted)]));
}

/** A packet read from `bytes` at `offset`: OpenPGP-format header, definite or partial lengths. */
interface ReadPacket {
  tag: number;
  body: Buffer;
  /** The whole packet, header included. */
  raw: Buffer;
  next: number;
}

/** The packets that may use partial body lengths (RFC 9580 section 4.2.1.4; OpenPGP.js's list). */
const STREAMABLE = new Set<number>([enums.packet.literalData, enums.packet.symEncryptedIntegrityProtectedData]);

/**
 * Reads one OpenPGP-format packet (RFC 9580 section 4.2.1), or null (legacy format, truncated, or
 * partial lengths on a packet that may not use them: OpenPGP.js refuses those messages).
 */
function readPacket(bytes: Buffer, offset: number): ReadPacket | null {
  const tagByte = bytes[offset];
  if (tagByte === undefined || (tagByte & 0xc0) !== 0xc0) return null;
  const streamable = STREAMABLE.has(tagByte & 0x3f);
  const chunks: Buffer[] = [];
  let at = offset + 1;
  for (;;) {
    const b1 = bytes[at];
    if (b1 === undefined) return null;
    let length: number;
    let partial = false;
    if (b1 < 192) [length, at] = [b1, at + 1];
    else if (b1 < 224) {
      if (at + 1 >= bytes.length) return null;
      [length, at] = [((b1 - 192) << 8) + bytes[at + 1] + 192, at + 2];
    } else if (b1 === 255) {
      if (at + 5 > bytes.length) return null;
      [length, at] = [bytes.readUInt32BE(at + 1), at + 5];
    } else if (streamable) [length, at, partial] = [1 << (b1 & 0x1f), at + 1, true];
    else return null;
    if (at + length > bytes.length) return null;
    chunks.push(bytes.subarray(at, at + length));
    at += length;
    if (!partial) break;
  }
  return { tag: tagByte & 0x3f, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), raw: bytes.subarray(offset, at), next: at };
}

/** All packets of `bytes`, or null when any is not read here. */
function readPackets(bytes: Buffer): ReadPacket[] | null {
  const packets: ReadPacket[] = [];
  for (let at = 0; at < bytes.length;) {
    const p = readPacket(bytes, at);
    if (p === null) return null;
    packets.push(p);
    at = p.next;
  }
  return packets;
}

/** The body of a lone tag-2 packet with a definite length, or null. */
function signatureBody(signature: Uint8Array): Buffer | null {
  const p = readPacket(Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength), 0);
  return p !== null && p.tag === enums.packet.signature && p.next === signature.length && p.body.length >= 4 && p.body[0] === 4 ? p.body : null;
}

/** The coordinator's ECDH private key for a PKESK's key ID, with OpenPGP.js's verdict on it at `date`. */
async function decryptionKeyOf(key: PrivateKey, keyID: Buffer, date: Date): Promise<{ ecdh: EcdhKey; privateKey: KeyObject } | null> {
  let candidates;
  try {
    // Every key OpenPGP.js would decrypt with at `date`, then the one the PKESK names.
    candidates = (await key.getDecryptionKeys(undefined, date)).filter((k) => Buffer.from(k.getKeyID().toHex(), 'hex').equals(keyID));
  } catch {
    return null;
  }
  if (candidates.length !== 1) return null;
  const p = candidates[0].keyPacket as unknown as EcdhKeyPacket;
  const ecdh = ecdhKeyOf(p);
  const d = p.privateParams?.d;
  if (ecdh === null || !(d instanceof Uint8Array) || d.length > 32) return null;
  return { ecdh, privateKey: x25519PrivateKeyOf(p, d, ecdh.q) };
}

/**
 * The native X25519 key of a decrypted ECDH key packet, imported once per packet and scalar
 * (issue 13: importing it from a JWK at every opened update was ~1% of the coordinator's CPU in
 * the demo). The scalar is compared at every use, so a packet whose secret changed since (or
 * was cleared: `d` no longer a Uint8Array, refused above) is never opened with the old key.
 */
const x25519Keys = new WeakMap<object, { d: Buffer; q: Buffer; key: KeyObject }>();

function x25519PrivateKeyOf(packet: EcdhKeyPacket, d: Uint8Array, q: Buffer): KeyObject {
  const kept = x25519Keys.get(packet);
  if (kept !== undefined && kept.d.equals(d) && kept.q.equals(q)) return kept.key;
  // Curve25519Legacy stores the scalar big-endian (RFC 9580 section 11.5): native X25519 wants it reversed.
  const scalar = Buffer.alloc(32);
  scalar.set(d, 32 - d.length);
  scalar.reverse();
  const key = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: scalar.toString('base64url'), x: q.toString('base64url') }, format: 'jwk' });
  x25519Keys.set(packet, { d: Buffer.from(d), q: Buffer.from(q), key });
  return key;
}

/** The session key of a PKESK v3 (ECDH) to `key`, or null. */
async function sessionKeyOf(pkesk: Buffer, key: PrivateKey, date: Date): Promise<{ cipher: number; key: Buffer } | null> {
  // 3 | key ID (8) | 18 | MPI V: 01 07 40 u(32) | length of C | C
  if (pkesk.length < 47 || pkesk[0] !== 3 || pkesk[9] !== enums.publicKey.ecdh || pkesk[10] !== 0x01 || pkesk[11] !== 0x07 || pkesk[12] !== 0x40) return null;
  const wrapped = pkesk.subarray(46);
  if (pkesk[45] !== wrapped.length) return null;
  const recipient = await decryptionKeyOf(key, pkesk.subarray(1, 9), date);
  if (recipient === null) return null;
  let m: Buffer;
  try {
    // OpenSSL refuses a low-order ephemeral point (an all-zero shared secret): not ours to open.
    const shared = diffieHellman({ privateKey: recipient.privateKey, publicKey: x25519Public(pkesk.subarray(13, 45)) });
    const unwrapper = createDecipheriv(recipient.ecdh.kek.wrap, keyEncryptionKey(recipient.ecdh, shared), KEY_WRAP_IV);
    m = Buffer.concat([unwrapper.update(wrapped), unwrapper.final()]);
  } catch {
    return null; // no shared secret, or the wrap's integrity check failed
  }
  const pad = m[m.length - 1];
  if (pad < 1 || pad > 8 || pad > m.length || !m.subarray(m.length - pad).every((b) => b === pad)) return null;
  m = m.subarray(0, m.length - pad);
  const cipher = OPENED_SESSION_CIPHERS.has(m[0]) ? AES.get(m[0]) : undefined;
  if (cipher === undefined || m.length !== 1 + cipher.keySize + 2) return null;
  const sessionKey = m.subarray(1, 1 + cipher.keySize);
  if (sessionKeyChecksum(sessionKey) !== m.readUInt16BE(1 + cipher.keySize)) return null;
  return { cipher: m[0], key: sessionKey };
}

/** The packets inside a SEIPD v1 body, once its MDC has checked out, or null. */
function decryptIntegrityProtected(seipd: Buffer, session: { cipher: number; key: Buffer }): Buffer | null {
  if (seipd[0] !== 1 || seipd.length < 1 + BLOCK + 2 + 22) return null;
  const decipher = createDecipheriv(AES.get(session.cipher)!.cfb, session.key, Buffer.alloc(BLOCK));
  const body = decipher.update(seipd.subarray(1));
  const rest = decipher.final(); // CFB is a stream mode: nothing is held back
  const plain = rest.length === 0 ? body : Buffer.concat([body, rest]);
  const hashed = plain.subarray(0, plain.length - 20);
  const mdc = createHash('sha1').update(hashed).digest();
  if (!timingSafeEqual(mdc, plain.subarray(plain.length - 20))) return null;
  if (!hashed.subarray(hashed.length - 2).equals(MDC_HEADER)) return null;
  return hashed.subarray(BLOCK + 2, hashed.length - 2);
}

/** A sealed update opened natively: the literal data and the node's signature packet, not yet checked. */
export interface NativelyOpened {
  data: Uint8Array;
  signature: Uint8Array;
  /** The key ID the one-pass signature packet names: the caller checks it is the node's. */
  onePassIssuer: Buffer;
}

/**
 * Decrypts a sealed update natively: exactly PKESK v3 (ECDH) to `coordinatorKey`, then SEIPD v1
 * whose MDC checks out, holding exactly one-pass signature, binary literal data and one signature
 * that the one-pass packet announces. Null for anything else; the signature is the caller's to
 * check (native-verify.ts).
 */
export async function openNatively(sealed: Uint8Array, coordinatorKey: PrivateKey, date: Date): Promise<NativelyOpened | null> {
  const outer = readPackets(Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength));
  if (outer === null || outer.length !== 2 || outer[0].tag !== enums.packet.publicKeyEncryptedSessionKey || outer[1].tag !== enums.packet.symEncryptedIntegrityProtectedData) return null;
  const session = await sessionKeyOf(outer[0].body, coordinatorKey, date);
  if (session === null) return null;
  const plain = decryptIntegrityProtected(outer[1].body, session);
  const inner = plain === null ? null : readPackets(plain);
  if (inner === null || inner.length !== 3) return null;
  const [ops, literal, signature] = inner;
  if (ops.tag !== enums.packet.onePassSignature || literal.tag !== enums.packet.literalData || signature.tag !== enums.packet.signature) return null;
  const sig = signatureBody(signature.raw);
  // The one-pass packet must announce this signature: version 3, same type, hash and public-key
  // algorithms, last; its issuer key ID is the caller's to check against the node's key (as
  // native-verify.ts checks the signature's own).
  if (sig === null || ops.body.length !== 13 || ops.body[0] !== 3 || ops.body[1] !== sig[1] || ops.body[2] !== sig[3] || ops.body[3] !== sig[2] || ops.body[12] !== 1) return null;
  const l = literal.body;
  if (l.length < 6 || l[0] !== 0x62 || l.length < 6 + l[1]) return null;
  return { data: new Uint8Array(l.buffer, l.byteOffset + 6 + l[1], l.length - 6 - l[1]), signature: new Uint8Array(signature.raw), onePassIssuer: ops.body.subarray(4, 12) };
}
