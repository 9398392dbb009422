import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { artifactPaths, artifactSignPaths, signArtifact, verifyArtifact } from '../../protocols/crypto/signed-artifact.ts';
import { dearmoredSignature, nativelyValidAt } from '../../protocols/crypto/native-verify.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

/**
 * verifyArtifact's native path (armor read here, key validity from native-verify.ts's window):
 * the same bytes as OpenPGP.js reads, the same verdicts, never "valid" where OpenPGP.js says not.
 */
let coordinator: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [coordinator, shortLived] = await Promise.all([makeIdentity('coordinator'), makeIdentity('short-lived', { expiresInSeconds: 60 })]);
});

/** OpenPGP.js alone: the verdict verifyArtifact gave before the native path. */
async function openpgpVerdict(bytes: Uint8Array, armored: string, key: openpgp.PublicKey, at = new Date()): Promise<boolean> {
  try {
    if ((await key.getExpirationTime()) !== Infinity && ((await key.getExpirationTime()) as Date).getTime() <= at.getTime()) return false;
    if (await key.isRevoked(undefined, undefined, at)) return false;
    const { signatures } = await openpgp.verify({ message: await openpgp.createMessage({ binary: bytes }), signature: await openpgp.readSignature({ armoredSignature: armored }), verificationKeys: key, date: at, format: 'binary' });
    await signatures[0].verified;
    return signatures.length === 1;
  } catch {
    return false;
  }
}

describe('dearmoredSignature', () => {
  it('reads what OpenPGP.js reads from its own armor (fast-check over signed bytes)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        const armored = await signArtifact(bytes, coordinator.privateKey);
        const theirs = (await openpgp.readSignature({ armoredSignature: armored })).write();
        expect(Buffer.from(dearmoredSignature(armored)!).equals(Buffer.from(theirs))).toBe(true);
        expect(Buffer.from(dearmoredSignature(armored.replace(/\n/g, '\r\n'))!).equals(Buffer.from(theirs))).toBe(true);
      }),
      { numRuns: 30 },
    );
  });

  it('checks the CRC-24 line when there is one, and takes armor headers and a missing CRC', async () => {
    const armored = await signArtifact(new Uint8Array([1, 2, 3]), coordinator.privateKey);
    const lines = armored.trimEnd().split('\n');
    const crcAt = lines.findIndex((l) => /^=[A-Za-z0-9+/]{4}$/.test(l));
    expect(crcAt).toBeGreaterThan(0);
    const wrongCrc = [...lines];
    wrongCrc[crcAt] = '=' + (lines[crcAt].slice(1) === 'AAAA' ? 'AAAB' : 'AAAA');
    expect(dearmoredSignature(wrongCrc.join('\n'))).toBeNull();
    const noCrc = lines.filter((_, i) => i !== crcAt).join('\n');
    expect(dearmoredSignature(noCrc)).toEqual(dearmoredSignature(armored));
    const withHeader = [lines[0], 'Comment: fedmark', ...lines.slice(1)].join('\n');
    expect(dearmoredSignature(withHeader)).toEqual(dearmoredSignature(armored));
  });

  it('refuses what is not a plain armored signature', () => {
    for (const text of ['', 'not a signature', '-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----', '-----BEGIN PGP SIGNATURE-----\nAAAA\n-----END PGP SIGNATURE-----', '-----BEGIN PGP SIGNATURE-----\n\nA*AA\n-----END PGP SIGNATURE-----', '-----BEGIN PGP SIGNATURE-----\n\nAAA\n-----END PGP SIGNATURE-----']) {
      expect(dearmoredSignature(text), JSON.stringify(text)).toBeNull();
    }
  });
});

describe('signArtifact, native path', () => {
  it("signs our key's artifacts natively, in the armor OpenPGP.js writes, and leaves a time outside the key's window to OpenPGP.js", async () => {
    const bytes = new Uint8Array(13_000).fill(3);
    const before = { ...artifactSignPaths };
    const armored = await signArtifact(bytes, coordinator.privateKey);
    expect(artifactSignPaths.native - before.native).toBe(1);
    // OpenPGP.js's own signature armor: no headers, an empty line, base64, the CRC-24 line.
    expect(armored).toMatch(/^-----BEGIN PGP SIGNATURE-----\n\n[A-Za-z0-9+/=\n]+\n=[A-Za-z0-9+/]{4}\n-----END PGP SIGNATURE-----\n$/);
    const signature = await openpgp.readSignature({ armoredSignature: armored });
    expect(signature.armor()).toBe(armored);
    expect(await openpgpVerdict(bytes, armored, coordinator.publicKey)).toBe(true);
    // Before the key existed: not signed here; OpenPGP.js refuses, as it did before the native path.
    await expect(signArtifact(bytes, coordinator.privateKey, { now: new Date(coordinator.createdAt.getTime() - 10_000) })).rejects.toThrow();
    expect(artifactSignPaths.openpgp - before.openpgp).toBe(1);
  });
});

describe('verifyArtifact, native path', () => {
  it('takes the native path for our own signatures, and OpenPGP.js for anything it does not establish', async () => {
    const bytes = new Uint8Array([9, 8, 7]);
    const armored = await signArtifact(bytes, coordinator.privateKey);
    const before = { ...artifactPaths };
    expect(await verifyArtifact(bytes, armored, coordinator.publicKey)).toBe(true);
    expect(artifactPaths.native - before.native).toBe(1);
    expect(await verifyArtifact(new Uint8Array([9, 8, 6]), armored, coordinator.publicKey)).toBe(false);
    expect(artifactPaths.openpgp - before.openpgp).toBe(1);
  });

  it('gives OpenPGP.js\'s verdict for any mutated armor (fast-check: a character changed, a line dropped or doubled)', async () => {
    const bytes = new Uint8Array(64).map((_, i) => i);
    const armored = await signArtifact(bytes, coordinator.privateKey);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: armored.length - 1 }), fc.constantFrom(...'AZaz09+/=\n :-'), fc.constantFrom('char', 'drop', 'double'), async (at, ch, how) => {
        const lines = armored.split('\n');
        const li = at % lines.length;
        const mutated =
          how === 'char' ? armored.slice(0, at) + ch + armored.slice(at + 1)
          : how === 'drop' ? lines.filter((_, i) => i !== li).join('\n')
          : [...lines.slice(0, li + 1), ...lines.slice(li)].join('\n');
        const ours = await verifyArtifact(bytes, mutated, coordinator.publicKey);
        if (ours) expect(await openpgpVerdict(bytes, mutated, coordinator.publicKey)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('the key must be valid at `at`: not before its creation, not from its expiry on (the window is native-verify.ts\'s)', async () => {
    const created = shortLived.createdAt;
    const signature = await signArtifact(new Uint8Array([1]), shortLived.privateKey, { now: created });
    expect(await nativelyValidAt(shortLived.publicKey, created)).toBe(true);
    expect(await nativelyValidAt(shortLived.publicKey, secondsAfter(created, -1))).toBe(false);
    expect(await nativelyValidAt(shortLived.publicKey, secondsAfter(created, 60))).toBe(false);
    expect(await nativelyValidAt(shortLived.publicKey, secondsAfter(created, 59))).toBe(true);
    expect(await verifyArtifact(new Uint8Array([1]), signature, shortLived.publicKey, { at: secondsAfter(created, 59) })).toBe(true);
    expect(await verifyArtifact(new Uint8Array([1]), signature, shortLived.publicKey, { at: secondsAfter(created, 61) })).toBe(false);
  });
});
