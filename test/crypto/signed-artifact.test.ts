import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CryptoKeyError,
  KEY_ROTATION_TYPE,
  announceKeyRotation,
  revokedKey,
  signArtifact,
  verifyArtifact,
  verifyKeyRotation,
} from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let coordinator: TestIdentity;
let successor: TestIdentity;
let unrelated: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [coordinator, successor, unrelated, shortLived] = await Promise.all([
    makeIdentity('coordinator-2025'),
    makeIdentity('coordinator-2026'),
    makeIdentity('unrelated'),
    makeIdentity('short-lived-coordinator', { expiresInSeconds: 1 }),
  ]);
});

const MODEL = new Uint8Array([0x46, 0x4d, 0x57, 0x31, 0x0d, 0x0a, 0, 1, 2, 3, 255]);

describe('signArtifact / verifyArtifact', () => {
  it('signs with an armored detached signature that verifies', async () => {
    const signature = await signArtifact(MODEL, coordinator.privateKey);
    expect(signature).toMatch(/^-----BEGIN PGP SIGNATURE-----/);
    expect(await verifyArtifact(MODEL, signature, coordinator.publicKey)).toBe(true);
    expect(await verifyArtifact(MODEL, signature, coordinator.publicKeyArmored)).toBe(true);
  });

  it('returns false, without throwing, for tampered bytes, another key or a garbage signature', async () => {
    const signature = await signArtifact(MODEL, coordinator.privateKey);
    const tampered = MODEL.slice();
    tampered[5] = 0x0d; // CR LF -> CR CR: would survive a text-mode (newline-normalising) check
    expect(await verifyArtifact(tampered, signature, coordinator.publicKey)).toBe(false);
    expect(await verifyArtifact(MODEL.subarray(0, MODEL.length - 1), signature, coordinator.publicKey)).toBe(false);
    expect(await verifyArtifact(MODEL, signature, unrelated.publicKey)).toBe(false);
    expect(await verifyArtifact(MODEL, 'not a signature', coordinator.publicKey)).toBe(false);
    expect(await verifyArtifact(MODEL, signature, 'not a key')).toBe(false);
  });

  it('returns false when another key also signed', async () => {
    const signature = await openpgp.sign({
      message: await openpgp.createMessage({ binary: MODEL }),
      signingKeys: [coordinator.privateKey, unrelated.privateKey],
      detached: true,
    });
    expect(await verifyArtifact(MODEL, signature, coordinator.publicKey)).toBe(false);
  });

  it('returns false once the key has expired, even for a signature made while it was valid', async () => {
    const signedAt = shortLived.createdAt;
    const signature = await signArtifact(MODEL, shortLived.privateKey, { now: signedAt });
    expect(await verifyArtifact(MODEL, signature, shortLived.publicKey, { at: signedAt })).toBe(true);
    expect(await verifyArtifact(MODEL, signature, shortLived.publicKey, { at: secondsAfter(signedAt, 10) })).toBe(false);
  });

  it('returns false for a revoked key', async () => {
    const signature = await signArtifact(MODEL, unrelated.privateKey);
    expect(await verifyArtifact(MODEL, signature, unrelated.publicKey)).toBe(true);
    const revoked = await revokedKey(unrelated.publicKeyArmored, unrelated.revocationCertificate);
    expect(await verifyArtifact(MODEL, signature, revoked)).toBe(false);
  });
});

describe('key rotation', () => {
  const at = new Date('2026-01-01T00:00:00.000Z');

  it('is verified with the old key and yields the new key', async () => {
    const announcement = await announceKeyRotation({
      oldPrivateKey: coordinator.privateKey,
      newPublicKeyArmored: successor.publicKeyArmored,
      at,
    });
    expect(announcement).toMatch(/^-----BEGIN PGP SIGNED MESSAGE-----/);
    expect(announcement).toContain(KEY_ROTATION_TYPE);
    const verified = await verifyKeyRotation(announcement, coordinator.publicKey);
    expect(verified).not.toBeNull();
    expect(verified!.fingerprint).toBe(successor.fingerprint);
    expect(verified!.oldFingerprint).toBe(coordinator.fingerprint);
    expect(verified!.at.toISOString()).toBe(at.toISOString());
    const newKey = await openpgp.readKey({ armoredKey: verified!.newPublicKeyArmored });
    expect(newKey.isPrivate()).toBe(false);
    expect(newKey.getFingerprint()).toBe(successor.fingerprint);
  });

  it('is rejected with an unrelated key, or by the new key itself', async () => {
    const announcement = await announceKeyRotation({
      oldPrivateKey: coordinator.privateKey,
      newPublicKeyArmored: successor.publicKeyArmored,
      at,
    });
    expect(await verifyKeyRotation(announcement, unrelated.publicKey)).toBeNull();
    expect(await verifyKeyRotation(announcement, successor.publicKey)).toBeNull();
  });

  it('is rejected when tampered with, or when the old key is revoked', async () => {
    const announcement = await announceKeyRotation({
      oldPrivateKey: coordinator.privateKey,
      newPublicKeyArmored: successor.publicKeyArmored,
      at,
    });
    expect(await verifyKeyRotation(announcement.replace('2026-01-01', '2026-02-01'), coordinator.publicKey)).toBeNull();
    expect(await verifyKeyRotation('hello', coordinator.publicKey)).toBeNull();
    const revoked = await revokedKey(coordinator.publicKeyArmored, coordinator.revocationCertificate);
    expect(await verifyKeyRotation(announcement, revoked)).toBeNull();
  });

  it('is rejected when the signed text is not a consistent rotation', async () => {
    const sign = async (payload: object) =>
      openpgp.sign({
        message: await openpgp.createCleartextMessage({ text: JSON.stringify(payload, null, 2) }),
        signingKeys: coordinator.privateKey,
      });
    const good = {
      type: KEY_ROTATION_TYPE,
      version: 1,
      oldFingerprint: coordinator.fingerprint,
      newFingerprint: successor.fingerprint,
      at: at.toISOString(),
      newPublicKey: successor.publicKeyArmored,
    };
    expect(await verifyKeyRotation(await sign(good), coordinator.publicKey)).not.toBeNull();
    // claims to rotate a different old key
    expect(await verifyKeyRotation(await sign({ ...good, oldFingerprint: unrelated.fingerprint }), coordinator.publicKey)).toBeNull();
    // names one key, carries another
    expect(await verifyKeyRotation(await sign({ ...good, newPublicKey: unrelated.publicKeyArmored }), coordinator.publicKey)).toBeNull();
    // a signed artifact of another kind
    expect(await verifyKeyRotation(await sign({ ...good, type: 'audit-checkpoint' }), coordinator.publicKey)).toBeNull();
    // carries a private key
    expect(await verifyKeyRotation(await sign({ ...good, newPublicKey: successor.privateKeyArmored }), coordinator.publicKey)).toBeNull();
  });

  it('refuses to announce a private key, the same key, or with a locked key', async () => {
    await expect(
      announceKeyRotation({ oldPrivateKey: coordinator.privateKey, newPublicKeyArmored: successor.privateKeyArmored, at }),
    ).rejects.toThrow(/PRIVATE key/);
    await expect(
      announceKeyRotation({ oldPrivateKey: coordinator.privateKey, newPublicKeyArmored: coordinator.publicKeyArmored, at }),
    ).rejects.toBeInstanceOf(CryptoKeyError);
    const locked = await openpgp.readPrivateKey({ armoredKey: coordinator.privateKeyArmored });
    await expect(
      announceKeyRotation({ oldPrivateKey: locked, newPublicKeyArmored: successor.publicKeyArmored, at }),
    ).rejects.toBeInstanceOf(CryptoKeyError);
  });
});
