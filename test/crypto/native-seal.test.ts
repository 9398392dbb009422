/**
 * native-seal.ts against OpenPGP.js: what is sealed natively opens with OpenPGP.js (signature
 * verified), what OpenPGP.js seals opens natively, and no mutated or foreign message opens natively.
 */
import { createHook } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { openNatively, sealNatively } from '../../protocols/crypto/native-seal.ts';
import { verifiesNatively } from '../../protocols/crypto/native-verify.ts';
import { CryptoVerificationError, openUpdate, revokedKey } from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let coordinator: TestIdentity;
let otherCoordinator: TestIdentity;
let node: TestIdentity;
let otherNode: TestIdentity;
let shortLivedCoordinator: TestIdentity;

beforeAll(async () => {
  [coordinator, otherCoordinator, node, otherNode, shortLivedCoordinator] = await Promise.all([
    makeIdentity('coordinator'),
    makeIdentity('other-coordinator'),
    makeIdentity('node-eu-1'),
    makeIdentity('node-us-1'),
    makeIdentity('short-lived-coordinator', { expiresInSeconds: 1 }),
  ]);
});

/** OpenPGP.js's own verdict: decrypted with the coordinator key, signed (only) by `signer`. */
async function openedByOpenPgp(sealed: Uint8Array, signer: TestIdentity = node): Promise<Uint8Array> {
  const result = await openpgp.decrypt({
    message: await openpgp.readMessage({ binaryMessage: sealed }),
    decryptionKeys: coordinator.privateKey,
    verificationKeys: signer.publicKey,
    expectSigned: true,
    format: 'binary',
  });
  return result.data as Uint8Array;
}

async function sealedNatively(bytes: Uint8Array, date = new Date()): Promise<Uint8Array> {
  const sealed = await sealNatively(bytes, coordinator.publicKey, node.privateKey, date);
  if (sealed === null) throw new Error('not sealed natively');
  return sealed;
}

// Packet length encodings change at 192 and 8384 octets (RFC 9580 section 4.2.1); 191 + 6 octets
// of literal header is the first literal packet past the one-octet form.
const SIZES = [0, 1, 185, 186, 191, 192, 8377, 8378, 8383, 8384, 19_000, 1 << 20];

describe('sealNatively', () => {
  it('makes messages OpenPGP.js opens and verifies, at every length encoding', async () => {
    for (const size of SIZES) {
      const bytes = randomBytes(size);
      expect(Buffer.from(await openedByOpenPgp(await sealedNatively(bytes))).equals(bytes), `size ${size}`).toBe(true);
    }
  });

  it('creates no key generation job: its ephemeral X25519 key is made from random bytes (generateKeyPairSync + JWK export deadlocked a node on Node 20)', async () => {
    // Warm: the first seal may load keys lazily.
    await sealedNatively(randomBytes(100));
    const types: string[] = [];
    const hook = createHook({ init: (_id, type) => void types.push(type) }).enable();
    try {
      for (let i = 0; i < 3; i++) await sealedNatively(randomBytes(100));
    } finally {
      hook.disable();
    }
    expect(types.filter((t) => t.includes('KEYPAIRGEN'))).toEqual([]);
  });

  it('random updates round-trip through OpenPGP.js (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), async (bytes) => {
        expect(Buffer.from(await openedByOpenPgp(await sealedNatively(bytes))).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('is encrypted: the plaintext appears nowhere, and two seals of the same bytes differ', async () => {
    const bytes = Buffer.alloc(4096, 'plaintext-marker ');
    const a = Buffer.from(await sealedNatively(bytes));
    const b = Buffer.from(await sealedNatively(bytes));
    expect(a.includes(Buffer.from('plaintext-marker'))).toBe(false);
    expect(a.equals(b)).toBe(false);
  });

  it('leaves an expired or revoked coordinator key to OpenPGP.js (null), which refuses to encrypt to it', async () => {
    const later = secondsAfter(shortLivedCoordinator.createdAt, 5);
    expect(await sealNatively(new Uint8Array(10), shortLivedCoordinator.publicKey, node.privateKey, later)).toBeNull();
    const revoked = await openpgp.readKey({ armoredKey: await revokedKey(coordinator.publicKeyArmored, coordinator.revocationCertificate) });
    expect(await sealNatively(new Uint8Array(10), revoked, node.privateKey, new Date())).toBeNull();
  });

  it('leaves a locked node key to OpenPGP.js (null)', async () => {
    const locked = await openpgp.readPrivateKey({ armoredKey: node.privateKeyArmored });
    expect(await sealNatively(new Uint8Array(10), coordinator.publicKey, locked, new Date())).toBeNull();
  });
});

describe('openNatively', () => {
  it("opens OpenPGP.js's sealed updates at every length encoding (partial lengths included), the signature verifying natively", async () => {
    for (const size of SIZES) {
      const bytes = randomBytes(size);
      const sealed = await openpgp.encrypt({ message: await openpgp.createMessage({ binary: bytes }), encryptionKeys: coordinator.publicKey, signingKeys: node.privateKey, format: 'binary' });
      const opened = await openNatively(sealed, coordinator.privateKey, new Date());
      expect(opened, `size ${size}`).not.toBeNull();
      expect(Buffer.from(opened!.data).equals(bytes)).toBe(true);
      expect(opened!.onePassIssuer.equals(Buffer.from(node.publicKey.getKeyID().toHex(), 'hex'))).toBe(true);
      expect(await verifiesNatively(opened!.data, opened!.signature, node.publicKey, new Date())).toBe(true);
    }
  });

  it('opens no message with one octet changed anywhere (every position of a small update)', async () => {
    const bytes = randomBytes(64);
    const sealed = await sealedNatively(bytes);
    const opened: number[] = [];
    for (let i = 0; i < sealed.length; i++) {
      const mutated = sealed.slice();
      mutated[i] ^= 1 + (i % 255);
      if ((await openNatively(mutated, coordinator.privateKey, new Date())) !== null) opened.push(i);
    }
    expect(opened).toEqual([]);
  });

  it('opens nothing mutated that OpenPGP.js would refuse (fast-check: random flips, truncations, extensions)', async () => {
    const bytes = randomBytes(300);
    const sealed = await sealedNatively(bytes);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ kind: fc.constant('flip' as const), at: fc.nat({ max: sealed.length - 1 }), xor: fc.integer({ min: 1, max: 255 }) }),
          fc.record({ kind: fc.constant('cut' as const), at: fc.nat({ max: sealed.length - 1 }), xor: fc.constant(0) }),
          fc.record({ kind: fc.constant('extend' as const), at: fc.nat({ max: 64 }), xor: fc.integer({ min: 0, max: 255 }) }),
        ),
        async ({ kind, at, xor }) => {
          let mutated: Uint8Array;
          if (kind === 'flip') (mutated = sealed.slice())[at] ^= xor;
          else if (kind === 'cut') mutated = sealed.slice(0, at);
          else mutated = Buffer.concat([sealed, Buffer.alloc(at + 1, xor)]);
          const opened = await openNatively(mutated, coordinator.privateKey, new Date());
          if (opened === null) return;
          // Whatever opens natively must open, the same, with OpenPGP.js.
          expect(Buffer.from(await openedByOpenPgp(mutated)).equals(Buffer.from(opened.data))).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("keeps the coordinator's imported X25519 key per key packet, but never opens with it once the packet's secret changed", async () => {
    const bytes = randomBytes(100);
    const sealed = await sealedNatively(bytes);
    expect(await openNatively(sealed, coordinator.privateKey, new Date())).not.toBeNull(); // imported and kept
    const packet = (await coordinator.privateKey.getDecryptionKeys())[0].keyPacket as unknown as { privateParams: { d: Uint8Array } };
    const other = (await otherCoordinator.privateKey.getDecryptionKeys())[0].keyPacket as unknown as { privateParams: { d: Uint8Array } };
    const original = packet.privateParams.d.slice();
    try {
      packet.privateParams.d.set(other.privateParams.d); // the same packet and array, another secret
      expect(await openNatively(sealed, coordinator.privateKey, new Date())).toBeNull();
    } finally {
      packet.privateParams.d.set(original);
    }
    expect(Buffer.from((await openNatively(sealed, coordinator.privateKey, new Date()))!.data).equals(bytes)).toBe(true);
  });

  it('opens nothing sealed for another coordinator', async () => {
    const sealed = await sealNatively(randomBytes(100), otherCoordinator.publicKey, node.privateKey, new Date());
    expect(sealed).not.toBeNull();
    expect(await openNatively(sealed!, coordinator.privateKey, new Date())).toBeNull();
  });

  it('leaves two signatures, an unsigned message and a compressed one to OpenPGP.js', async () => {
    const bytes = randomBytes(100);
    const message = () => openpgp.createMessage({ binary: bytes });
    const twoSigners = await openpgp.encrypt({ message: await message(), encryptionKeys: coordinator.publicKey, signingKeys: [otherNode.privateKey, node.privateKey], format: 'binary' });
    const unsigned = await openpgp.encrypt({ message: await message(), encryptionKeys: coordinator.publicKey, format: 'binary' });
    const compressed = await openpgp.encrypt({ message: await message(), encryptionKeys: coordinator.publicKey, signingKeys: node.privateKey, format: 'binary', config: { preferredCompressionAlgorithm: openpgp.enums.compression.zip } });
    for (const sealed of [twoSigners, unsigned, compressed]) expect(await openNatively(sealed, coordinator.privateKey, new Date())).toBeNull();
  });

  it('names the one-pass issuer, and openUpdate does not take a message whose one-pass packet names another key natively', async () => {
    const bytes = randomBytes(100);
    const signed = (await openpgp.sign({ message: await openpgp.createMessage({ binary: bytes }), signingKeys: node.privateKey, format: 'object' })) as unknown as openpgp.Message<Uint8Array>;
    const ops = signed.packets.findPacket(openpgp.enums.packet.onePassSignature) as unknown as { issuerKeyID: openpgp.KeyID };
    ops.issuerKeyID = otherNode.publicKey.getKeyID();
    const sealed = await openpgp.encrypt({ message: signed, encryptionKeys: coordinator.publicKey, format: 'binary' });
    const opened = await openNatively(sealed, coordinator.privateKey, new Date());
    expect(opened?.onePassIssuer.equals(Buffer.from(otherNode.publicKey.getKeyID().toHex(), 'hex'))).toBe(true);
    // openUpdate falls back to OpenPGP.js for it (its counter says so); whatever OpenPGP.js decides stands.
    const { openPaths } = await import('../../protocols/crypto/sealed-update.ts');
    const before = { ...openPaths };
    await openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }).catch(() => undefined);
    expect(openPaths.natively - before.natively).toBe(0);
    expect(openPaths.decrypted - before.decrypted).toBeGreaterThan(0);
  });
});

/**
 * A sealed message built here from the RFCs, independently of native-seal.ts (node:crypto for
 * X25519, AES and hashes; OpenPGP.js for the detached signature), with one deviation at a time: the
 * strictness checks that no well-formed message exercises.
 */
interface Deviation {
  checksumDelta?: number;
  /** The PKCS#5 padding of the wrapped session key (five octets of 5, for AES-256). */
  padding?: number[];
  mdcHeader?: number[];
  onePassFlags?: number;
  literalFormat?: number;
  /** This packet's body sent as a one-octet partial chunk, then the rest (RFC 9580 4.2.1.4). */
  partial?: 'one-pass' | 'pkesk';
  sessionCipher?: 'aes192';
  /** The ephemeral X25519 public key, as sent (a low-order point: no shared secret). */
  ephemeral?: Buffer;
}

function header(tag: number, length: number): Buffer {
  if (length < 192) return Buffer.from([0xc0 | tag, length]);
  const h = Buffer.from([0xc0 | tag, 0xff, 0, 0, 0, 0]);
  h.writeUInt32BE(length, 2);
  return h;
}
const pkt = (tag: number, ...parts: Uint8Array[]) => { const body = Buffer.concat(parts); return Buffer.concat([header(tag, body.length), body]); };
const partialPkt = (tag: number, ...parts: Uint8Array[]) => { const body = Buffer.concat(parts); return Buffer.concat([Buffer.from([0xc0 | tag, 0xe0]), body.subarray(0, 1), header(tag, body.length - 1).subarray(1), body.subarray(1)]); };

async function crafted(bytes: Uint8Array, d: Deviation = {}): Promise<Uint8Array> {
  const { createCipheriv, createHash, createPublicKey, diffieHellman, generateKeyPairSync } = await import('node:crypto');
  const sub = (await coordinator.publicKey.getEncryptionKey()).keyPacket as unknown as {
    publicParams: { oid: { write(): Uint8Array }; Q: Uint8Array; kdfParams: { hash: number; cipher: number; write(): Uint8Array } };
    getFingerprintBytes(): Uint8Array;
    getKeyID(): { write(): Uint8Array };
  };
  expect([sub.publicParams.kdfParams.hash, sub.publicParams.kdfParams.cipher]).toEqual([openpgp.enums.hash.sha256, openpgp.enums.symmetric.aes128]);
  const signature = (await openpgp.sign({ message: await openpgp.createMessage({ binary: bytes }), signingKeys: node.privateKey, detached: true, format: 'binary' })) as Uint8Array;
  const keyID = Buffer.from(node.publicKey.getKeyID().toHex(), 'hex');
  const ops = (d.partial === 'one-pass' ? partialPkt : pkt)(4, Buffer.from([3, 0, signature[5], signature[4]]), keyID, Buffer.from([d.onePassFlags ?? 1]));
  const literal = pkt(11, Buffer.from([d.literalFormat ?? 0x62, 0, 0, 0, 0, 0]), bytes);
  const inner = Buffer.concat([ops, literal, signature]);
  const [cipherId, keySize, cfb] = d.sessionCipher === 'aes192' ? [8, 24, 'aes-192-cfb'] : [9, 32, 'aes-256-cfb'];
  const sessionKey = randomBytes(keySize);
  const prefix = randomBytes(18);
  prefix.copy(prefix, 16, 14, 16);
  const toHash = Buffer.concat([prefix, inner, Buffer.from(d.mdcHeader ?? [0xd3, 0x14])]);
  const c = createCipheriv(cfb, sessionKey, Buffer.alloc(16));
  const seipd = pkt(18, Buffer.from([1]), c.update(Buffer.concat([toHash, createHash('sha1').update(toHash).digest()])), c.final());
  const eph = generateKeyPairSync('x25519');
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(sub.publicParams.Q.subarray(1)).toString('base64url') }, format: 'jwk' }) });
  const param = Buffer.concat([sub.publicParams.oid.write(), Buffer.from([18]), sub.publicParams.kdfParams.write(), Buffer.from('Anonymous Sender    '), sub.getFingerprintBytes()]);
  const kek = createHash('sha256').update(Buffer.from([0, 0, 0, 1])).update(shared).update(param).digest().subarray(0, 16);
  const sum = (sessionKey.reduce((a, b) => a + b, 0) + (d.checksumDelta ?? 0)) & 0xffff;
  const pad = 8 - ((1 + keySize + 2) % 8);
  const m = Buffer.concat([Buffer.from([cipherId]), sessionKey, Buffer.from([sum >> 8, sum & 0xff]), Buffer.from(d.padding ?? new Array<number>(pad).fill(pad))]);
  const w = createCipheriv('id-aes128-wrap', kek, Buffer.from('a6a6a6a6a6a6a6a6', 'hex'));
  const wrapped = Buffer.concat([w.update(m), w.final()]);
  const ephU = d.ephemeral ?? Buffer.from(eph.publicKey.export({ format: 'jwk' }).x as string, 'base64url');
  const pkesk = (d.partial === 'pkesk' ? partialPkt : pkt)(1, Buffer.from([3]), Buffer.from(sub.getKeyID().write()), Buffer.from([18, 1, 7, 0x40]), ephU, Buffer.from([wrapped.length]), wrapped);
  return new Uint8Array(Buffer.concat([pkesk, seipd]));
}

describe('openNatively on messages built from the RFCs', () => {
  it('opens the well-formed one (and so does OpenPGP.js): the builder is right', async () => {
    const bytes = randomBytes(500);
    const sealed = await crafted(bytes);
    expect(Buffer.from((await openNatively(sealed, coordinator.privateKey, new Date()))!.data).equals(bytes)).toBe(true);
    expect(Buffer.from(await openedByOpenPgp(sealed)).equals(bytes)).toBe(true);
  });

  it('refuses a wrong session-key checksum or padding, as OpenPGP.js does', async () => {
    for (const d of [{ checksumDelta: 1 }, { padding: [4, 5, 5, 5, 5] }] satisfies Deviation[]) {
      const sealed = await crafted(randomBytes(500), d);
      expect(await openNatively(sealed, coordinator.privateKey, new Date()), JSON.stringify(d)).toBeNull();
      await expect(openedByOpenPgp(sealed), JSON.stringify(d)).rejects.toThrow();
    }
  });

  it('leaves a wrong MDC packet header to OpenPGP.js (which takes the hash over it as it stands)', async () => {
    const sealed = await crafted(randomBytes(500), { mdcHeader: [0xd3, 0x15] });
    expect(await openNatively(sealed, coordinator.privateKey, new Date())).toBeNull();
  });

  it('leaves to OpenPGP.js, which refuses them, partial lengths where they are not allowed, a session cipher the key does not prefer, a low-order ephemeral key (review of 12-03)', async () => {
    const bytes = randomBytes(300);
    for (const d of [{ partial: 'one-pass' }, { partial: 'pkesk' }, { sessionCipher: 'aes192' }, { ephemeral: Buffer.alloc(32) }, { ephemeral: Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]) }] satisfies Deviation[]) {
      const sealed = await crafted(bytes, d);
      expect(await openNatively(sealed, coordinator.privateKey, new Date()), JSON.stringify(d)).toBeNull();
      await expect(openedByOpenPgp(sealed), JSON.stringify(d)).rejects.toThrow();
      // openUpdate refuses it as OpenPGP.js does (a CryptoVerificationError), never a bare Error (a 500).
      await expect(openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }), JSON.stringify(d)).rejects.toBeInstanceOf(CryptoVerificationError);
    }
  });

  it('leaves a one-pass packet that is not the last, and text literal data, to OpenPGP.js', async () => {
    const bytes = Buffer.from('line one\r\nline two\n');
    for (const d of [{ onePassFlags: 0 }, { literalFormat: 0x75 /* 'u' */ }, { literalFormat: 0x74 /* 't' */ }] satisfies Deviation[]) {
      expect(await openNatively(await crafted(bytes, d), coordinator.privateKey, new Date()), JSON.stringify(d)).toBeNull();
    }
  });
});
