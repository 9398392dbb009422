/**
 * The parsed-key cache (keys.ts, issue 13): a key's armored text is parsed once, but a rotated
 * or revoked key is refused at once and an expired key is refused even when it is cached.
 */
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  PUBLIC_KEY_CACHE_SIZE,
  cachedPublicKey,
  clearPublicKeyCache,
  keyStatus,
  publicKeyCacheSize,
  revokedKey,
  signRequest,
  verifyRequest,
  type PrivateKey,
} from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let node: TestIdentity;
let rotated: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [node, rotated, shortLived] = await Promise.all([
    makeIdentity('cache-node'),
    makeIdentity('cache-node-rotated'),
    makeIdentity('cache-short-lived', { expiresInSeconds: 60 }),
  ]);
});

beforeEach(() => clearPublicKeyCache());

const BODY = new TextEncoder().encode('{"ok":true}');

/** A request signed by `privateKey` at `now`, verified against the armored key on record. */
async function check(privateKey: PrivateKey, armoredOnRecord: string, now = new Date()) {
  const headers = await signRequest({ privateKey, method: 'POST', path: '/v1/x', roundId: 'r', body: BODY, now });
  return verifyRequest({ publicKey: armoredOnRecord, method: 'POST', path: '/v1/x', roundId: 'r', body: BODY, headers, now, seenNonce: () => false });
}

describe('parsed-key cache', () => {
  it('parses an armored key once and serves the same object after', async () => {
    const first = await cachedPublicKey(node.publicKeyArmored);
    expect(await cachedPublicKey(node.publicKeyArmored)).toBe(first);
    expect(publicKeyCacheSize()).toBe(1);
    expect(first.getFingerprint()).toBe(node.fingerprint);
  });

  it('refuses the old key at once after a rotation (the record now holds the new text)', async () => {
    expect((await check(node.privateKey, node.publicKeyArmored)).ok).toBe(true); // old key cached
    const oldKeyOnNewRecord = await check(node.privateKey, rotated.publicKeyArmored);
    expect(oldKeyOnNewRecord).toMatchObject({ ok: false, reason: 'key-mismatch' });
    expect((await check(rotated.privateKey, rotated.publicKeyArmored)).ok).toBe(true);
  });

  it('refuses a revoked key at once, although the unrevoked text was cached as valid', async () => {
    expect((await check(node.privateKey, node.publicKeyArmored)).ok).toBe(true);
    expect(await keyStatus(node.publicKeyArmored)).toBe('valid');
    const revoked = await revokedKey(node.publicKeyArmored, node.revocationCertificate);
    expect(await keyStatus(revoked)).toBe('revoked');
    expect(await check(node.privateKey, revoked)).toMatchObject({ ok: false, reason: 'revoked-key' });
  });

  it('refuses an expired key even when it is cached (expiry is compared with now on every call)', async () => {
    const created = shortLived.createdAt;
    expect((await check(shortLived.privateKey, shortLived.publicKeyArmored, secondsAfter(created, 5))).ok).toBe(true);
    expect(await keyStatus(shortLived.publicKeyArmored, secondsAfter(created, 5))).toBe('valid');
    expect(await keyStatus(shortLived.publicKeyArmored, secondsAfter(created, 61))).toBe('expired');
    // Signed 1 s before expiry, checked 1 s after it: the cached key must not pass.
    const headers = await signRequest({ privateKey: shortLived.privateKey, method: 'POST', path: '/v1/x', roundId: 'r', body: BODY, now: secondsAfter(created, 59) });
    const late = await verifyRequest({ publicKey: shortLived.publicKeyArmored, method: 'POST', path: '/v1/x', roundId: 'r', body: BODY, headers, now: secondsAfter(created, 61), seenNonce: () => false });
    expect(late).toMatchObject({ ok: false, reason: 'expired-key' });
  });

  it('keeps at most PUBLIC_KEY_CACHE_SIZE keys, dropping the least recently used', async () => {
    // Trailing newlines make distinct armored texts of one key (each is its own cache entry).
    const variant = (i: number) => node.publicKeyArmored + '\n'.repeat(i + 1);
    const oldest = await cachedPublicKey(variant(0));
    for (let i = 1; i <= PUBLIC_KEY_CACHE_SIZE; i++) await cachedPublicKey(variant(i));
    expect(publicKeyCacheSize()).toBe(PUBLIC_KEY_CACHE_SIZE);
    expect(await cachedPublicKey(variant(0))).not.toBe(oldest); // evicted, parsed again
    expect(publicKeyCacheSize()).toBe(PUBLIC_KEY_CACHE_SIZE);
  }, 60_000);

  it('does not cache text that is not a public key', async () => {
    await expect(cachedPublicKey('not a key')).rejects.toThrow(/not an armored OpenPGP public key/);
    await expect(cachedPublicKey(node.privateKeyArmored)).rejects.toThrow(/PRIVATE key/);
    await Promise.resolve();
    expect(publicKeyCacheSize()).toBe(0);
  });
});
