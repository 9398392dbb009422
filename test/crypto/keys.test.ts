import { mkdtemp, readFile, rm, stat, chmod, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CryptoKeyError,
  IDENTITY_FILES,
  WrongPassphraseError,
  fingerprintOf,
  generateIdentity,
  isExpired,
  isRevoked,
  keyStatus,
  loadOrCreateIdentity,
  loadPrivateKey,
  loadPublicKey,
  revokedKey,
} from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let alice: TestIdentity;
let bob: TestIdentity;
let shortLived: TestIdentity;
const dirs: string[] = [];

beforeAll(async () => {
  [alice, bob, shortLived] = await Promise.all([
    makeIdentity('alice'),
    makeIdentity('bob'),
    makeIdentity('short-lived', { expiresInSeconds: 1 }),
  ]);
});

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fedmark-keys-'));
  dirs.push(dir);
  return dir;
}

describe('generateIdentity', () => {
  it('makes an Ed25519 signing key with a Curve25519 encryption subkey, encrypted at rest', async () => {
    expect(alice.publicKeyArmored).toMatch(/^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    expect(alice.privateKeyArmored).toMatch(/^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    expect(alice.revocationCertificate).toMatch(/^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    expect(alice.fingerprint).toMatch(/^[0-9a-f]{40}$/);
    expect(await fingerprintOf(alice.publicKeyArmored)).toBe(alice.fingerprint);
    expect(await fingerprintOf(alice.privateKeyArmored)).toBe(alice.fingerprint);

    const stored = await openpgp.readPrivateKey({ armoredKey: alice.privateKeyArmored });
    expect(stored.isDecrypted()).toBe(false);
    expect(stored.getKeys().every((k) => k.keyPacket.isDecrypted() === false)).toBe(true);
    expect(alice.publicKey.getAlgorithmInfo()).toEqual({ algorithm: 'eddsaLegacy', curve: 'ed25519Legacy' });
    expect(alice.publicKey.subkeys.map((s) => s.getAlgorithmInfo())).toEqual([
      { algorithm: 'ecdh', curve: 'curve25519Legacy' },
    ]);
    expect(alice.publicKey.getUserIDs()).toEqual(['alice']);
  });

  it('puts the e-mail address in the user ID', async () => {
    const id = await generateIdentity({ name: 'Node EU 1', email: 'ops@partner.example', passphrase: 'pw' });
    expect((await loadPublicKey(id.publicKeyArmored)).getUserIDs()).toEqual(['Node EU 1 <ops@partner.example>']);
  });

  it('refuses an empty or blank passphrase (OpenPGP.js would store the key unencrypted)', async () => {
    await expect(generateIdentity({ name: 'x', passphrase: '' })).rejects.toThrow(/passphrase must not be empty/);
    await expect(generateIdentity({ name: 'x', passphrase: '   ' })).rejects.toThrow(CryptoKeyError);
  });

  it('refuses bad names, e-mails and lifetimes', async () => {
    await expect(generateIdentity({ name: '', passphrase: 'pw' })).rejects.toThrow(/name must not be empty/);
    await expect(generateIdentity({ name: 'a <b@c.d>', passphrase: 'pw' })).rejects.toThrow(/name must not contain/);
    await expect(generateIdentity({ name: 'a', email: 'not-an-email', passphrase: 'pw' })).rejects.toThrow(/email/);
    await expect(generateIdentity({ name: 'a', passphrase: 'pw', expiresInSeconds: 0 })).rejects.toThrow(/positive/);
    await expect(generateIdentity({ name: 'a', passphrase: 'pw', expiresInSeconds: 1.5 })).rejects.toThrow(/integer/);
  });
});

describe('loadPrivateKey / loadPublicKey', () => {
  it('decrypts with the right passphrase', async () => {
    const key = await loadPrivateKey(alice.privateKeyArmored, alice.passphrase);
    expect(key.isDecrypted()).toBe(true);
    expect(key.getFingerprint()).toBe(alice.fingerprint);
  });

  it('says clearly that the passphrase is wrong, without echoing it', async () => {
    const attempt = loadPrivateKey(alice.privateKeyArmored, 'not the passphrase');
    await expect(attempt).rejects.toBeInstanceOf(WrongPassphraseError);
    await expect(loadPrivateKey(alice.privateKeyArmored, 'not the passphrase')).rejects.toThrow(
      `wrong passphrase for private key ${alice.fingerprint}`,
    );
    const err = await loadPrivateKey(alice.privateKeyArmored, 'not the passphrase').catch((e: Error) => e);
    expect((err as Error).message).not.toContain('not the passphrase');
    await expect(loadPrivateKey(alice.privateKeyArmored, '')).rejects.toBeInstanceOf(WrongPassphraseError);
  });

  it('refuses a private key stored without a passphrase', async () => {
    const { privateKey } = await openpgp.generateKey({ userIDs: [{ name: 'plain' }], format: 'armored' });
    await expect(loadPrivateKey(privateKey, 'anything')).rejects.toThrow(/stored without a passphrase/);
  });

  it('refuses garbage and public keys where a private key is expected', async () => {
    await expect(loadPrivateKey('hello', 'pw')).rejects.toBeInstanceOf(CryptoKeyError);
    await expect(loadPrivateKey(alice.publicKeyArmored, 'pw')).rejects.toBeInstanceOf(CryptoKeyError);
  });

  it('loadPublicKey refuses a private key and garbage', async () => {
    await expect(loadPublicKey(alice.privateKeyArmored)).rejects.toThrow(/PRIVATE key/);
    await expect(loadPublicKey('-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----')).rejects.toBeInstanceOf(
      CryptoKeyError,
    );
    expect((await loadPublicKey(bob.publicKeyArmored)).getFingerprint()).toBe(bob.fingerprint);
  });
});

describe('expiry and revocation', () => {
  it('isExpired follows keyExpirationTime; a key without expiry never expires', async () => {
    expect(await isExpired(shortLived.publicKey, shortLived.createdAt)).toBe(false);
    expect(await isExpired(shortLived.publicKeyArmored, secondsAfter(shortLived.createdAt, 1))).toBe(true);
    expect(await isExpired(shortLived.publicKey, secondsAfter(shortLived.createdAt, 3600))).toBe(true);
    expect(await isExpired(alice.publicKey, secondsAfter(alice.createdAt, 100 * 365 * 24 * 3600))).toBe(false);
    expect(await keyStatus(shortLived.publicKey, secondsAfter(shortLived.createdAt, 10))).toBe('expired');
    expect(await keyStatus(alice.publicKey, secondsAfter(alice.createdAt, -10))).toBe('not-yet-valid');
    expect(await keyStatus(alice.publicKey)).toBe('valid');
  });

  it('revokedKey merges the revocation certificate; isRevoked sees it', async () => {
    expect(await isRevoked(bob.publicKeyArmored)).toBe(false);
    const revoked = await revokedKey(bob.publicKeyArmored, bob.revocationCertificate);
    expect(await fingerprintOf(revoked)).toBe(bob.fingerprint);
    expect(await isRevoked(revoked)).toBe(true);
    expect(await keyStatus(revoked)).toBe('revoked');
    // a revoked key is not "expired": the two verdicts stay distinct
    expect(await isExpired(revoked, new Date())).toBe(false);
  });

  it('revokedKey refuses a certificate made for another key', async () => {
    await expect(revokedKey(alice.publicKeyArmored, bob.revocationCertificate)).rejects.toThrow(
      /Revocation signature does not match key/,
    );
  });
});

describe('loadOrCreateIdentity', () => {
  it('creates the three files on first start and reuses them on the next', async () => {
    const dir = await tempDir();
    const first = await loadOrCreateIdentity(dir, { name: 'node-eu', passphrase: 's3cret' });
    expect(first.created).toBe(true);
    expect(first.privateKey.isDecrypted()).toBe(true);
    const keyFile = await readFile(join(dir, IDENTITY_FILES.privateKey), 'utf8');
    const pubFile = await readFile(join(dir, IDENTITY_FILES.publicKey), 'utf8');
    const revFile = await readFile(join(dir, IDENTITY_FILES.revocation), 'utf8');
    expect((await openpgp.readPrivateKey({ armoredKey: keyFile })).isDecrypted()).toBe(false); // encrypted at rest
    expect(await fingerprintOf(keyFile)).toBe(first.fingerprint);
    expect(await fingerprintOf(pubFile)).toBe(first.fingerprint);
    expect(revFile).toBe(first.revocationCertificate);
    if (process.platform !== 'win32') {
      expect((await stat(join(dir, IDENTITY_FILES.privateKey))).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, IDENTITY_FILES.revocation))).mode & 0o777).toBe(0o600);
    }

    const second = await loadOrCreateIdentity(dir, { name: 'node-eu', passphrase: 's3cret' });
    expect(second.created).toBe(false);
    expect(second.fingerprint).toBe(first.fingerprint);
    expect(second.revocationCertificate).toBe(first.revocationCertificate);
    expect(await readFile(join(dir, IDENTITY_FILES.privateKey), 'utf8')).toBe(keyFile);
  });

  it('throws on a wrong passphrase and leaves the stored key alone', async () => {
    const dir = await tempDir();
    const first = await loadOrCreateIdentity(dir, { name: 'node-us', passphrase: 'right' });
    const before = await readFile(join(dir, IDENTITY_FILES.privateKey), 'utf8');
    await expect(loadOrCreateIdentity(dir, { name: 'node-us', passphrase: 'wrong' })).rejects.toThrow(
      `wrong passphrase for private key ${first.fingerprint}`,
    );
    expect(await readFile(join(dir, IDENTITY_FILES.privateKey), 'utf8')).toBe(before);
  });

  it('re-derives a missing or foreign public key and revocation certificate from the private key', async () => {
    const dir = await tempDir();
    const first = await loadOrCreateIdentity(dir, { name: 'node-cn', passphrase: 'pw' });
    await unlink(join(dir, IDENTITY_FILES.revocation));
    await writeFile(join(dir, IDENTITY_FILES.publicKey), alice.publicKeyArmored);
    if (process.platform !== 'win32') await chmod(join(dir, IDENTITY_FILES.privateKey), 0o644);

    const again = await loadOrCreateIdentity(dir, { name: 'node-cn', passphrase: 'pw' });
    expect(again.created).toBe(false);
    expect(again.fingerprint).toBe(first.fingerprint);
    expect(await fingerprintOf(await readFile(join(dir, IDENTITY_FILES.publicKey), 'utf8'))).toBe(first.fingerprint);
    const revocation = await readFile(join(dir, IDENTITY_FILES.revocation), 'utf8');
    expect(revocation).toBe(again.revocationCertificate);
    expect(await isRevoked(await revokedKey(again.publicKeyArmored, revocation))).toBe(true);
    if (process.platform !== 'win32') {
      expect((await stat(join(dir, IDENTITY_FILES.privateKey))).mode & 0o777).toBe(0o600);
    }
  });

  it('two processes starting at once end up with one identity', async () => {
    const dir = await tempDir();
    const [a, b] = await Promise.all([
      loadOrCreateIdentity(dir, { name: 'racer', passphrase: 'pw' }),
      loadOrCreateIdentity(dir, { name: 'racer', passphrase: 'pw' }),
    ]);
    expect(a.fingerprint).toBe(b.fingerprint);
    expect([a.created, b.created].filter(Boolean)).toHaveLength(1);
    expect(await fingerprintOf(await readFile(join(dir, IDENTITY_FILES.privateKey), 'utf8'))).toBe(a.fingerprint);
  });
});
