/**
 * The native Ed25519 fast path (native-verify.ts) against OpenPGP.js's own verification: every
 * signature OpenPGP.js makes with our key type verifies natively, and nothing verifies natively
 * that OpenPGP.js refuses (mutated signatures and data, wrong key, wrong times, other shapes).
 */
import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PrivateKey, PublicKey } from '../../protocols/crypto/index.ts';
import { signNatively } from '../../protocols/crypto/native-sign.ts';
import { packetReads, parseSignaturePacket, verifiesNatively } from '../../protocols/crypto/native-verify.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let alice: TestIdentity;
let mallory: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [alice, mallory, shortLived] = await Promise.all([
    makeIdentity('native-alice'),
    makeIdentity('native-mallory'),
    makeIdentity('native-short', { expiresInSeconds: 60 }),
  ]);
});

async function sign(data: Uint8Array, key: PrivateKey, date?: Date, extra: Partial<Parameters<typeof openpgp.sign>[0]> = {}): Promise<Uint8Array> {
  return openpgp.sign({ message: await openpgp.createMessage({ binary: data }), signingKeys: key, detached: true, format: "binary", date, ...extra } as Parameters<typeof openpgp.sign>[0]) as unknown as Promise<Uint8Array>;
}

/** OpenPGP.js's verdict, the reference. */
async function openpgpVerifies(data: Uint8Array, signature: Uint8Array, key: PublicKey, date: Date): Promise<boolean> {
  try {
    const { signatures } = await openpgp.verify({
      message: await openpgp.createMessage({ binary: data }),
      signature: await openpgp.readSignature({ binarySignature: signature }),
      verificationKeys: key,
      date,
      format: 'binary',
    });
    if (signatures.length !== 1) return false;
    await signatures[0].verified;
    return true;
  } catch {
    return false;
  }
}

const bytes = fc.uint8Array({ minLength: 0, maxLength: 300 });

describe('native Ed25519 verification of OpenPGP signatures', () => {
  it('verifies every signature OpenPGP.js makes with our key type, as OpenPGP.js does', async () => {
    await fc.assert(
      fc.asyncProperty(bytes, fc.integer({ min: 0, max: 3600 }), async (data, laterSeconds) => {
        const signature = await sign(data, alice.privateKey);
        const at = secondsAfter(new Date(), laterSeconds);
        expect(await openpgpVerifies(data, signature, alice.publicKey, at)).toBe(true);
        expect(await verifiesNatively(data, signature, alice.publicKey, at)).toBe(true);
      }),
      { numRuns: 60 },
    );
  }, 120_000);

  it('verifies nothing that OpenPGP.js refuses: any one-byte change to the signature or the data', async () => {
    const data = new TextEncoder().encode('FEDMARK-SIG-V1\nPOST\n/v1/x\nr\n2026-01-01T00:00:00.000Z\n00\nff');
    const signature = await sign(data, alice.privateKey);
    const now = new Date();
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.nat(), fc.integer({ min: 1, max: 255 }), async (inSignature, position, xor) => {
        const target = inSignature ? signature : data;
        const mutated = Uint8Array.from(target);
        mutated[position % mutated.length] ^= xor;
        const [sig, msg] = inSignature ? [mutated, data] : [signature, mutated];
        const native = await verifiesNatively(msg, sig, alice.publicKey, now);
        if (native) expect(await openpgpVerifies(msg, sig, alice.publicKey, now)).toBe(true);
        if (!inSignature) expect(native).toBe(false); // the data is covered by the hash
      }),
      { numRuns: 400 },
    );
  }, 120_000);

  it('refuses a signature by another key, and one checked against another key', async () => {
    const data = new Uint8Array([1, 2, 3]);
    expect(await verifiesNatively(data, await sign(data, mallory.privateKey), alice.publicKey, new Date())).toBe(false);
    expect(await verifiesNatively(data, await sign(data, alice.privateKey), mallory.publicKey, new Date())).toBe(false);
  });

  it('applies OpenPGP.js time rules: a signature is not valid before its creation time', async () => {
    const data = new Uint8Array([4, 5, 6]);
    const created = shortLived.createdAt;
    const signedAt = secondsAfter(created, 10);
    const signature = await sign(data, shortLived.privateKey, signedAt);
    for (const at of [secondsAfter(created, 9), secondsAfter(created, 10), secondsAfter(created, 30)]) {
      expect(await verifiesNatively(data, signature, shortLived.publicKey, at)).toBe(await openpgpVerifies(data, signature, shortLived.publicKey, at));
    }
    expect(await verifiesNatively(data, signature, shortLived.publicKey, secondsAfter(created, 9))).toBe(false);
    // A signature dated after the time it is checked at (a clock ahead, or a back-dated check).
    const late = await sign(data, alice.privateKey, secondsAfter(new Date(), 5));
    expect(await verifiesNatively(data, late, alice.publicKey, new Date())).toBe(false); // created after `date`
  });

  it('leaves other shapes to OpenPGP.js: two signatures, a text signature, a critical notation, a key with two user IDs', async () => {
    const data = new Uint8Array([7, 8, 9]);
    const now = () => secondsAfter(new Date(), 1); // after every signature made below
    const two = await sign(data, [alice.privateKey, mallory.privateKey] as unknown as PrivateKey);
    expect(await verifiesNatively(data, two, alice.publicKey, now())).toBe(false);
    const text = (await openpgp.sign({ message: await openpgp.createMessage({ text: 'abc' }), signingKeys: alice.privateKey, detached: true, format: 'binary' })) as Uint8Array;
    expect(await verifiesNatively(new TextEncoder().encode('abc'), text, alice.publicKey, now())).toBe(false);
    const critical = await sign(data, alice.privateKey, undefined, {
      signatureNotations: [{ name: 'x@example.org', value: new Uint8Array([1]), humanReadable: false, critical: true }],
    } as never);
    expect(await verifiesNatively(data, critical, alice.publicKey, now())).toBe(false);
    expect(await openpgpVerifies(data, critical, alice.publicKey, now())).toBe(false);
    const { privateKey: twoIdsArmored } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'a' }, { name: 'b' }], format: 'armored' });
    const twoIds = await openpgp.readPrivateKey({ armoredKey: twoIdsArmored });
    const byTwoIds = await sign(data, twoIds);
    expect(await openpgpVerifies(data, byTwoIds, twoIds.toPublic(), now())).toBe(true);
    expect(await verifiesNatively(data, byTwoIds, twoIds.toPublic(), now())).toBe(false);
  });

  it('accepts an already parsed (armored) signature, as verifyArtifact passes it', async () => {
    const data = new Uint8Array(1000).fill(7);
    const armored = (await openpgp.sign({ message: await openpgp.createMessage({ binary: data }), signingKeys: alice.privateKey, detached: true })) as string;
    const parsed = await openpgp.readSignature({ armoredSignature: armored });
    expect(await verifiesNatively(data, parsed, alice.publicKey, new Date())).toBe(true);
    data[0] ^= 1;
    expect(await verifiesNatively(data, parsed, alice.publicKey, new Date())).toBe(false);
  });

  describe("the fixed layout of native-sign.ts's signatures, read without OpenPGP.js's packet reader", () => {
    /** The body of a one-packet signature (header c2 + one or two length octets). */
    const bodyOf = (sig: Uint8Array) => sig.subarray(sig[1] < 192 ? 2 : 3);

    it('gives exactly the fields OpenPGP.js reads from the same bytes (fast-check over data and times)', async () => {
      await fc.assert(
        fc.asyncProperty(bytes, fc.integer({ min: 0, max: 3600 }), async (data, laterSeconds) => {
          const at = secondsAfter(new Date(), laterSeconds);
          const signature = (await signNatively(data, alice.privateKey, at))!;
          const before = packetReads.layout;
          const ours = parseSignaturePacket(signature)!;
          expect(packetReads.layout - before).toBe(1);
          const theirs = new openpgp.SignaturePacket() as unknown as Record<string, unknown> & { read(b: Uint8Array): void; issuerKeyID: { toHex(): string }; params: unknown };
          theirs.read(bodyOf(signature));
          for (const field of ['version', 'signatureType', 'publicKeyAlgorithm', 'hashAlgorithm', 'signatureNeverExpires', 'revocationKeyClass'] as const) expect(ours[field], field).toEqual(theirs[field]);
          expect((ours.created as Date).getTime()).toBe((theirs.created as Date).getTime());
          expect(Buffer.from(ours.signatureData).equals(Buffer.from(theirs.signatureData as Uint8Array))).toBe(true);
          expect(Buffer.from(ours.signedHashValue).equals(Buffer.from(theirs.signedHashValue as Uint8Array))).toBe(true);
          const [r, s] = [(await ours.params).r!, (await ours.params).s!];
          const p = (await theirs.params) as { r: Uint8Array; s: Uint8Array };
          expect(Buffer.from(r).equals(Buffer.from(p.r)) && Buffer.from(s).equals(Buffer.from(p.s))).toBe(true);
          expect(ours.issuerKeyID.equals(theirs.issuerKeyID)).toBe(true);
          expect(ours.issuerKeyID.equals(mallory.publicKey.getKeyID())).toBe(false);
          expect(ours.unknownSubpackets).toEqual(theirs.unknownSubpackets);
          expect(ours.rawNotations).toEqual(theirs.rawNotations);
          expect(await verifiesNatively(data, signature, alice.publicKey, at)).toBe(true);
          expect(await openpgpVerifies(data, signature, alice.publicKey, at)).toBe(true);
        }),
        { numRuns: 60 },
      );
    }, 120_000);

    it('verifies nothing that OpenPGP.js refuses: any one-byte change to a native signature', async () => {
      const data = new TextEncoder().encode('FEDMARK-SIG-V1\nPOST\n/v1/x\nr\n2026-01-01T00:00:00.000Z\n00\nff');
      const signature = (await signNatively(data, alice.privateKey, new Date()))!;
      const now = secondsAfter(new Date(), 1);
      const before = { ...packetReads };
      await fc.assert(
        fc.asyncProperty(fc.nat(), fc.integer({ min: 1, max: 255 }), async (position, xor) => {
          const mutated = Uint8Array.from(signature);
          mutated[position % mutated.length] ^= xor;
          if (await verifiesNatively(data, mutated, alice.publicKey, now)) expect(await openpgpVerifies(data, mutated, alice.publicKey, now)).toBe(true);
        }),
        { numRuns: 400 },
      );
      // Both readers were exercised: changes inside r, s, the time or the hash bits keep the layout.
      expect(packetReads.layout - before.layout).toBeGreaterThan(50);
      expect(packetReads.openpgp - before.openpgp).toBeGreaterThan(50);
    }, 120_000);

    it("leaves OpenPGP.js's own signatures (a salt notation) and a key ID that is not the fingerprint's to OpenPGP.js's reader", async () => {
      const data = new Uint8Array([1, 2, 3]);
      const before = { ...packetReads };
      parseSignaturePacket(await sign(data, alice.privateKey));
      expect(packetReads.openpgp - before.openpgp).toBe(1);
      expect(packetReads.layout - before.layout).toBe(0);
      const native = Uint8Array.from((await signNatively(data, alice.privateKey, new Date()))!);
      const body = bodyOf(native);
      body[39] ^= 0xff; // the unhashed issuer key ID, no longer the fingerprint's low 64 bits
      parseSignaturePacket(native);
      expect(packetReads.openpgp - before.openpgp).toBe(2);
      expect(await verifiesNatively(data, native, alice.publicKey, new Date())).toBe(false);
      // The unsigned area otherwise unchanged but its subpacket marked critical, and an octet after s:
      // both outside the layout, whatever OpenPGP.js then makes of them.
      const critical = Uint8Array.from((await signNatively(data, alice.privateKey, new Date()))!);
      bodyOf(critical)[38] = 0x90;
      parseSignaturePacket(critical);
      expect(packetReads.openpgp - before.openpgp).toBe(4); // 3: verifiesNatively read the one above again
      const plain = (await signNatively(data, alice.privateKey, new Date()))!;
      const longer = Uint8Array.from([0xc2, plain[1] + 1, ...plain.subarray(2), 0]);
      expect(() => parseSignaturePacket(longer)).toThrow(/MPI/); // OpenPGP.js refuses an octet after s
      expect(packetReads.openpgp - before.openpgp).toBe(5);
      expect(await verifiesNatively(data, longer, alice.publicKey, new Date())).toBe(false);
      expect(await openpgpVerifies(data, longer, alice.publicKey, new Date())).toBe(false);
      expect(packetReads.layout - before.layout).toBe(0);
    });
  });
});
