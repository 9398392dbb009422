import { randomBytes } from 'node:crypto';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CryptoKeyError,
  CryptoVerificationError,
  openPaths,
  openUpdate,
  revokedKey,
  sealUpdate,
  type VerificationFailure,
} from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let coordinator: TestIdentity;
let otherCoordinator: TestIdentity;
let node: TestIdentity;
let otherNode: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [coordinator, otherCoordinator, node, otherNode, shortLived] = await Promise.all([
    makeIdentity('coordinator'),
    makeIdentity('other-coordinator'),
    makeIdentity('node-eu-1'),
    makeIdentity('node-us-1'),
    makeIdentity('short-lived-node', { expiresInSeconds: 1 }),
  ]);
});

/** Every byte value, CR LF pairs included: a text-mode round trip would mangle these. */
function awkwardBytes(): Uint8Array {
  const bytes = new Uint8Array(13 * 1024);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 256;
  bytes.set([0x0d, 0x0a, 0x0d, 0x0a, 0x0a, 0x0d], 100);
  return bytes;
}

async function expectRefused(promise: Promise<unknown>, reason: VerificationFailure): Promise<void> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CryptoVerificationError);
  expect((err as CryptoVerificationError).reason).toBe(reason);
}

describe('sealUpdate / openUpdate', () => {
  it('round-trips binary bytes exactly', async () => {
    const bytes = awkwardBytes();
    const sealed = await sealUpdate({ bytes, coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: node.privateKey });
    expect(sealed).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(sealed).includes(Buffer.from(bytes.subarray(0, 256)))).toBe(false); // not in the clear
    const opened = await openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey });
    expect(Buffer.from(opened).equals(Buffer.from(bytes))).toBe(true);
  });

  it('round-trips an empty and a 4 MB update, with armored public keys', async () => {
    for (const bytes of [new Uint8Array(0), new Uint8Array(randomBytes(4 * 1024 * 1024))]) {
      const sealed = await sealUpdate({ bytes, coordinatorPublicKey: coordinator.publicKeyArmored, nodePrivateKey: node.privateKey });
      const opened = await openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKeyArmored });
      expect(opened.length).toBe(bytes.length);
      expect(Buffer.from(opened).equals(Buffer.from(bytes))).toBe(true);
    }
  });

  it('a tampered ciphertext is refused with CryptoVerificationError', async () => {
    const sealed = await sealUpdate({ bytes: awkwardBytes(), coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: node.privateKey });
    // a byte in the session-key packet, in the middle of the encrypted data, and at the very end
    for (const position of [20, Math.floor(sealed.length / 2), sealed.length - 1]) {
      const tampered = sealed.slice();
      tampered[position] ^= 0x01;
      await expect(
        openUpdate({ sealed: tampered, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
      ).rejects.toBeInstanceOf(CryptoVerificationError);
    }
    await expect(
      openUpdate({ sealed: sealed.subarray(0, sealed.length - 10), coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
    ).rejects.toBeInstanceOf(CryptoVerificationError);
    // Random bytes are refused, but now and then they happen to parse as an OpenPGP packet stream and
    // fail later, at decryption: only the class of the error is certain.
    for (let i = 0; i < 20; i++) {
      await expect(
        openUpdate({ sealed: new Uint8Array(randomBytes(64)), coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
      ).rejects.toBeInstanceOf(CryptoVerificationError);
    }
    // Text is never an OpenPGP packet stream (a packet header byte always has its high bit set): 'malformed'.
    await expectRefused(
      openUpdate({
        sealed: new TextEncoder().encode('customer_id,state,churn\n1,CA,yes\n'),
        coordinatorPrivateKey: coordinator.privateKey,
        nodePublicKey: node.publicKey,
      }),
      'malformed',
    );
  });

  it('an update signed by a different node key is refused', async () => {
    const sealed = await sealUpdate({ bytes: awkwardBytes(), coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: otherNode.privateKey });
    await expectRefused(
      openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
      'bad-signature',
    );
    // ...and accepted for the node that did sign it
    await expect(
      openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: otherNode.publicKey }),
    ).resolves.toBeInstanceOf(Uint8Array);
  });

  it('an extra signature next to the node\'s is refused (OpenPGP.js alone would accept any one valid)', async () => {
    const sealed = await openpgp.encrypt({
      message: await openpgp.createMessage({ binary: awkwardBytes() }),
      encryptionKeys: coordinator.publicKey,
      signingKeys: [otherNode.privateKey, node.privateKey],
      format: 'binary',
    });
    await expectRefused(
      openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
      'bad-signature',
    );
  });

  it('a sealed update, ours or OpenPGP.js\'s, is opened natively (native-seal.ts), OpenPGP.js not involved', async () => {
    const bytes = awkwardBytes();
    const ours = await sealUpdate({ bytes, coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: node.privateKey });
    const theirs = await openpgp.encrypt({ message: await openpgp.createMessage({ binary: bytes }), encryptionKeys: coordinator.publicKey, signingKeys: node.privateKey, format: 'binary' });
    for (const sealed of [ours, theirs]) {
      const before = { ...openPaths };
      expect(await openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey })).toEqual(bytes);
      expect(openPaths.natively - before.natively).toBe(1);
      expect(openPaths.decrypted - before.decrypted).toBe(0);
    }
  });

  it("a message the native opener leaves alone (compressed) is decrypted by OpenPGP.js once, the node's signature still established natively", async () => {
    const bytes = awkwardBytes();
    const sealed = await openpgp.encrypt({
      message: await openpgp.createMessage({ binary: bytes }),
      encryptionKeys: coordinator.publicKey,
      signingKeys: node.privateKey,
      format: 'binary',
      config: { preferredCompressionAlgorithm: openpgp.enums.compression.zlib },
    });
    const before = { ...openPaths };
    expect(await openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey })).toEqual(bytes);
    expect(openPaths.natively - before.natively).toBe(0);
    expect(openPaths.decrypted - before.decrypted).toBe(1);
    expect(openPaths.native - before.native).toBe(1);
  });

  it("the node's genuine signature over other bytes is refused, natively and by OpenPGP.js (a swapped literal)", async () => {
    // A message signed by the node over `signed`, its literal data then replaced by `swapped`
    // (same length), and encrypted to the coordinator: the signature packet itself is genuine.
    const signed = awkwardBytes();
    const swapped = signed.map((b) => b ^ 0x5a);
    const message = (await openpgp.sign({ message: await openpgp.createMessage({ binary: signed }), signingKeys: node.privateKey, format: 'object' })) as unknown as openpgp.Message<Uint8Array>;
    const literal = message.packets.findPacket(openpgp.enums.packet.literalData) as unknown as { setBytes(bytes: Uint8Array, format: openpgp.enums.literal): void };
    literal.setBytes(swapped, openpgp.enums.literal.binary);
    const sealed = await openpgp.encrypt({ message, encryptionKeys: coordinator.publicKey, format: 'binary' });
    const before = { ...openPaths };
    await expectRefused(openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }), 'bad-signature');
    expect(openPaths.native - before.native).toBe(0);
    expect(openPaths.natively - before.natively).toBe(0);
    // The same construction with the bytes left alone opens: the refusal is the swap's.
    const intact = (await openpgp.sign({ message: await openpgp.createMessage({ binary: signed }), signingKeys: node.privateKey, format: 'object' })) as unknown as openpgp.Message<Uint8Array>;
    const sealedIntact = await openpgp.encrypt({ message: intact, encryptionKeys: coordinator.publicKey, format: 'binary' });
    expect(await openUpdate({ sealed: sealedIntact, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey })).toEqual(signed);
  });

  it('an unsigned update is refused', async () => {
    const sealed = await openpgp.encrypt({
      message: await openpgp.createMessage({ binary: awkwardBytes() }),
      encryptionKeys: coordinator.publicKey,
      format: 'binary',
    });
    await expectRefused(openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }), 'unsigned');
  });

  it('an update sealed for another coordinator cannot be opened', async () => {
    const sealed = await sealUpdate({ bytes: awkwardBytes(), coordinatorPublicKey: otherCoordinator.publicKey, nodePrivateKey: node.privateKey });
    await expectRefused(
      openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: node.publicKey }),
      'decryption-failed',
    );
  });

  it('an expired or revoked node key is refused, even for an update signed while it was valid', async () => {
    const signedAt = shortLived.createdAt;
    const sealed = await sealUpdate({
      bytes: awkwardBytes(),
      coordinatorPublicKey: coordinator.publicKey,
      nodePrivateKey: shortLived.privateKey,
      now: signedAt,
    });
    const open = (now: Date) =>
      openUpdate({ sealed, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: shortLived.publicKey, now });
    await expect(open(signedAt)).resolves.toBeInstanceOf(Uint8Array);
    await expectRefused(open(secondsAfter(signedAt, 10)), 'expired-key');

    const fresh = await sealUpdate({ bytes: awkwardBytes(), coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: node.privateKey });
    const revoked = await revokedKey(node.publicKeyArmored, node.revocationCertificate);
    await expectRefused(
      openUpdate({ sealed: fresh, coordinatorPrivateKey: coordinator.privateKey, nodePublicKey: revoked }),
      'revoked-key',
    );
  });

  it('refuses to seal with a locked key or to a revoked coordinator key', async () => {
    const locked = await openpgp.readPrivateKey({ armoredKey: node.privateKeyArmored });
    await expect(
      sealUpdate({ bytes: new Uint8Array([1]), coordinatorPublicKey: coordinator.publicKey, nodePrivateKey: locked }),
    ).rejects.toBeInstanceOf(CryptoKeyError);
    const revokedCoordinator = await revokedKey(coordinator.publicKeyArmored, coordinator.revocationCertificate);
    await expect(
      sealUpdate({ bytes: new Uint8Array([1]), coordinatorPublicKey: revokedCoordinator, nodePrivateKey: node.privateKey }),
    ).rejects.toThrow(/revoked/);
  });
});
