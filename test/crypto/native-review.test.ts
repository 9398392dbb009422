/**
 * Security review of the native Ed25519 fast path (native-verify.ts, native-sign.ts) and the
 * parsed-key cache (keys.ts): properties checked against OpenPGP.js, the reference.
 */
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { cachedPublicKey, clearPublicKeyCache, keyStatus, PUBLIC_KEY_CACHE_SIZE, publicKeyCacheSize } from '../../protocols/crypto/index.ts';
import { signNatively } from '../../protocols/crypto/native-sign.ts';
import { verifiesNatively } from '../../protocols/crypto/native-verify.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let alice: TestIdentity;
let mallory: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [alice, mallory, shortLived] = await Promise.all([
    makeIdentity('review-alice'),
    makeIdentity('review-mallory'),
    makeIdentity('review-short', { expiresInSeconds: 60 }),
  ]);
});

const L = (1n << 252n) + 27742317777372353535851937790883648493n;
const le2n = (b: Uint8Array) => b.reduceRight((acc, x) => (acc << 8n) | BigInt(x), 0n);
const n2le = (n: bigint) => { const o = new Uint8Array(32); for (let i = 0; i < 32; i++) { o[i] = Number(n & 0xffn); n >>= 8n; } return o; };
const pad32 = (b: Uint8Array) => { const o = new Uint8Array(32); o.set(b, 32 - b.length); return o; };

async function openpgpVerifies(data: Uint8Array, sig: Uint8Array, key: openpgp.PublicKey, date: Date): Promise<boolean> {
  try {
    const { signatures } = await openpgp.verify({ message: await openpgp.createMessage({ binary: data }), signature: await openpgp.readSignature({ binarySignature: sig }), verificationKeys: key, date, format: 'binary' });
    if (signatures.length !== 1) return false;
    await signatures[0].verified;
    return true;
  } catch { return false; }
}

async function rewrite(sig: Uint8Array, mutate: (p: { r: Uint8Array; s: Uint8Array }) => void): Promise<Uint8Array> {
  const parsed = await openpgp.readSignature({ binarySignature: sig });
  const packet = parsed.packets[0] as unknown as { params: { r: Uint8Array; s: Uint8Array } | Promise<{ r: Uint8Array; s: Uint8Array }> };
  packet.params = await packet.params;
  mutate(packet.params);
  return parsed.write() as Uint8Array;
}

describe('native path: malleability and wrong keys', () => {
  const data = new TextEncoder().encode('fedmark review');

  it('refuses a non-canonical s (s + L), as OpenPGP.js does', async () => {
    const now = new Date();
    const sig = (await signNatively(data, alice.privateKey, now))!;
    expect(await verifiesNatively(data, sig, alice.publicKey, now)).toBe(true);
    const bad = await rewrite(sig, (p) => { p.s = n2le(le2n(pad32(p.s)) + L); });
    expect(await verifiesNatively(data, bad, alice.publicKey, now)).toBe(false);
    expect(await openpgpVerifies(data, bad, alice.publicKey, now)).toBe(false);
  });

  it('refuses a signature by another key that claims the victim key ID', async () => {
    const now = new Date();
    const sig = (await signNatively(data, mallory.privateKey, now))!;
    const parsed = await openpgp.readSignature({ binarySignature: sig });
    (parsed.packets[0] as unknown as { issuerKeyID: openpgp.KeyID }).issuerKeyID = alice.publicKey.getKeyID();
    const forged = parsed.write() as Uint8Array;
    expect(await verifiesNatively(data, forged, alice.publicKey, now)).toBe(false);
    expect(await openpgpVerifies(data, forged, alice.publicKey, now)).toBe(false);
  });

  it('refuses a signature followed by a trailing packet, and a legacy-header re-encoding decides like OpenPGP.js', async () => {
    const now = new Date();
    const sig = (await signNatively(data, alice.privateKey, now))!;
    const twice = new Uint8Array([...sig, ...sig]);
    expect(await verifiesNatively(data, twice, alice.publicKey, now)).toBe(false);
    const body = sig.subarray(2); // native packets use a one-octet OpenPGP-format length
    const legacy = new Uint8Array([0x88, body.length, ...body]);
    expect(await verifiesNatively(data, legacy, alice.publicKey, now)).toBe(await openpgpVerifies(data, legacy, alice.publicKey, now));
  });

  it('refuses a signature dated after `date` and one after the key expired', async () => {
    const sig = (await signNatively(data, shortLived.privateKey, shortLived.createdAt))!;
    expect(await verifiesNatively(data, sig, shortLived.publicKey, secondsAfter(shortLived.createdAt, -1))).toBe(false);
    expect(await signNatively(data, shortLived.privateKey, secondsAfter(shortLived.createdAt, 61))).toBeNull();
  });
});

describe('parsed-key cache', () => {
  it('re-checks expiry on every call for a cached key', async () => {
    clearPublicKeyCache();
    expect(await keyStatus(shortLived.publicKeyArmored, shortLived.createdAt)).toBe('valid');
    expect(await keyStatus(shortLived.publicKeyArmored, secondsAfter(shortLived.createdAt, 61))).toBe('expired');
  });

  it('is bounded in entries, but trivially distinct texts of ONE key each take an entry (no byte bound)', async () => {
    clearPublicKeyCache();
    const n = PUBLIC_KEY_CACHE_SIZE + 5;
    await Promise.all(Array.from({ length: n }, (_, i) => cachedPublicKey(alice.publicKeyArmored + '\n'.repeat(i + 1))));
    expect(publicKeyCacheSize()).toBe(PUBLIC_KEY_CACHE_SIZE);
    clearPublicKeyCache();
  }, 120_000);
});
