import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CryptoKeyError,
  SIGNATURE_HEADER_NAMES,
  canonicalRequestString,
  revokedKey,
  sha256Hex,
  signRequest,
  verifyRequest,
  type SignatureHeaders,
  type VerifyRequestOptions,
} from '../../protocols/crypto/index.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let node: TestIdentity;
let other: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [node, other, shortLived] = await Promise.all([
    makeIdentity('node-eu-1'),
    makeIdentity('intruder'),
    makeIdentity('short-lived', { expiresInSeconds: 1 }),
  ]);
});

const encoder = new TextEncoder();
const BODY = encoder.encode('{"round":7,"metrics":{"loss":0.42}}\r\n');
const PATH = '/v1/rounds/7/updates?attempt=2';

function freshNonces(): (nonce: string) => boolean {
  const seen = new Set<string>();
  return (nonce) => {
    if (seen.has(nonce)) return true;
    seen.add(nonce);
    return false;
  };
}

async function signed(overrides: Partial<Parameters<typeof signRequest>[0]> = {}) {
  return signRequest({ privateKey: node.privateKey, method: 'POST', path: PATH, roundId: '7', body: BODY, ...overrides });
}

function verify(headers: SignatureHeaders | VerifyRequestOptions['headers'], overrides: Partial<VerifyRequestOptions> = {}) {
  return verifyRequest({
    publicKey: node.publicKey,
    method: 'POST',
    path: PATH,
    roundId: '7',
    body: BODY,
    headers,
    seenNonce: freshNonces(),
    ...overrides,
  });
}

describe('canonical string', () => {
  it('is the documented seven lines', () => {
    const text = canonicalRequestString({
      method: 'POST',
      path: '/v1/rounds/7/updates?x=1',
      roundId: '7',
      timestamp: '2025-03-01T12:00:00.000Z',
      nonce: '00112233445566778899aabbccddeeff',
      bodySha256: sha256Hex(new Uint8Array()),
    });
    expect(text).toBe(
      [
        'FEDMARK-SIG-V1',
        'POST',
        '/v1/rounds/7/updates?x=1',
        '7',
        '2025-03-01T12:00:00.000Z',
        '00112233445566778899aabbccddeeff',
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      ].join('\n'),
    );
  });

  it('refuses fields that could shift the lines', () => {
    const base = {
      method: 'POST',
      path: '/a',
      roundId: '',
      timestamp: '2025-03-01T12:00:00.000Z',
      nonce: '00112233445566778899aabbccddeeff',
      bodySha256: sha256Hex(new Uint8Array()),
    };
    expect(() => canonicalRequestString({ ...base, path: '/a\n7' })).toThrow(/path/);
    expect(() => canonicalRequestString({ ...base, roundId: '7\n' })).toThrow(/roundId/);
    expect(() => canonicalRequestString({ ...base, method: 'GET X' })).toThrow(/method/);
  });
});

describe('signRequest / verifyRequest', () => {
  it('round-trips and reports the signer', async () => {
    const headers = await signed();
    expect(Object.keys(headers).sort()).toEqual([...SIGNATURE_HEADER_NAMES].sort());
    expect(headers['fedmark-nonce']).toMatch(/^[0-9a-f]{32}$/);
    expect(headers['fedmark-key-fingerprint']).toBe(node.fingerprint);
    expect(headers['fedmark-round']).toBe('7');
    expect(Number.isNaN(Date.parse(headers['fedmark-timestamp']))).toBe(false);
    const sig = await openpgp.readSignature({ binarySignature: Buffer.from(headers['fedmark-signature'], 'base64') });
    expect(sig.getSigningKeyIDs().map((k) => k.toHex())).toEqual([node.publicKey.getKeyID().toHex()]);

    const result = await verify(headers);
    expect(result).toEqual({
      ok: true,
      fingerprint: node.fingerprint,
      timestamp: headers['fedmark-timestamp'],
      nonce: headers['fedmark-nonce'],
    });
  });

  it('accepts armored public keys, fetch Headers and mixed-case header names', async () => {
    const headers = await signed();
    expect((await verify(new Headers(headers), { publicKey: node.publicKeyArmored })).ok).toBe(true);
    const shouting = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v]));
    expect((await verify(shouting)).ok).toBe(true);
  });

  it('requests without a round and without a body verify too', async () => {
    const headers = await signRequest({ privateKey: node.privateKey, method: 'get', path: '/v1/health', body: new Uint8Array() });
    expect(headers['fedmark-round']).toBe('');
    const result = await verify(headers, { method: 'GET', path: '/v1/health', roundId: undefined, body: new Uint8Array() });
    expect(result.ok).toBe(true);
    const { ['fedmark-round']: _omitted, ...withoutRound } = headers;
    const again = await verify(withoutRound, { method: 'GET', path: '/v1/health', roundId: undefined, body: new Uint8Array() });
    expect(again.ok).toBe(true);
  });

  it.each([
    ['body', { body: encoder.encode('{"round":7,"metrics":{"loss":0.41}}\r\n') }],
    ['body (one trailing byte less)', { body: BODY.subarray(0, BODY.length - 1) }],
    ['method', { method: 'PUT' }],
    ['path', { path: '/v1/rounds/8/updates?attempt=2' }],
    ['query string', { path: '/v1/rounds/7/updates?attempt=3' }],
    ['round id', { roundId: '8' }],
  ] as const)('a tampered %s fails with bad-signature', async (_what, change) => {
    const headers = await signed();
    const result = await verify(headers, change);
    expect(result).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a round header changed together with the expected round fails with bad-signature', async () => {
    const headers = await signed();
    const result = await verify({ ...headers, 'fedmark-round': '8' }, { roundId: '8' });
    expect(result).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a tampered (still fresh) timestamp fails with bad-signature', async () => {
    const now = new Date();
    const headers = await signed({ now });
    const tampered = { ...headers, 'fedmark-timestamp': new Date(now.getTime() + 1000).toISOString() };
    const result = await verify(tampered, { now });
    expect(result).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a tampered nonce fails with bad-signature', async () => {
    const headers = await signed();
    const nonce = headers['fedmark-nonce'];
    const flipped = (nonce[0] === '0' ? '1' : '0') + nonce.slice(1);
    expect(await verify({ ...headers, 'fedmark-nonce': flipped })).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a stale or future timestamp fails with stale-timestamp', async () => {
    const now = new Date();
    const headers = await signed({ now });
    expect(await verify(headers, { now: secondsAfter(now, 299) })).toMatchObject({ ok: true });
    expect(await verify(headers, { now: secondsAfter(now, 301) })).toMatchObject({ ok: false, reason: 'stale-timestamp' });
    expect(await verify(headers, { now: secondsAfter(now, 61), maxSkewSeconds: 60 })).toMatchObject({
      ok: false,
      reason: 'stale-timestamp',
    });
    // a node clock far ahead of the coordinator's
    expect(await verify(headers, { now: secondsAfter(now, -301) })).toMatchObject({ ok: false, reason: 'stale-timestamp' });
  });

  it('a node clock slightly ahead of the coordinator is tolerated', async () => {
    const now = new Date();
    const headers = await signed({ now: secondsAfter(now, 30) });
    expect(await verify(headers, { now })).toMatchObject({ ok: true });
  });

  it('a replayed nonce fails with replayed-nonce', async () => {
    const seenNonce = freshNonces();
    const headers = await signed();
    expect(await verify(headers, { seenNonce })).toMatchObject({ ok: true });
    expect(await verify(headers, { seenNonce })).toMatchObject({ ok: false, reason: 'replayed-nonce' });
    // a new signature gets a new nonce
    expect(await verify(await signed(), { seenNonce })).toMatchObject({ ok: true });
  });

  it('only authenticated requests reach the nonce store', async () => {
    const calls: string[] = [];
    const headers = await signed();
    const result = await verify(headers, {
      body: encoder.encode('forged'),
      seenNonce: (n) => {
        calls.push(n);
        return false;
      },
    });
    expect(result).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(calls).toEqual([]);
  });

  it('a signature by another key fails: key-mismatch, or bad-signature if the fingerprint header lies', async () => {
    const byOther = await signed({ privateKey: other.privateKey });
    expect(await verify(byOther)).toMatchObject({ ok: false, reason: 'key-mismatch' });
    const lying = { ...byOther, 'fedmark-key-fingerprint': node.fingerprint };
    expect(await verify(lying)).toMatchObject({ ok: false, reason: 'bad-signature' });
  });

  it('a signature spliced from another request fails', async () => {
    const a = await signed();
    const b = await signed({ path: '/v1/nodes/heartbeat', roundId: undefined, body: new Uint8Array() });
    expect(await verify({ ...a, 'fedmark-signature': b['fedmark-signature'] })).toMatchObject({
      ok: false,
      reason: 'bad-signature',
    });
  });

  it('an expired key fails with expired-key', async () => {
    const signedAt = shortLived.createdAt; // the key lives for one second from here
    const headers = await signRequest({ privateKey: shortLived.privateKey, method: 'POST', path: PATH, roundId: '7', body: BODY, now: signedAt });
    const options = { publicKey: shortLived.publicKey };
    expect(await verify(headers, { ...options, now: signedAt })).toMatchObject({ ok: true });
    expect(await verify(headers, { ...options, now: secondsAfter(signedAt, 10) })).toMatchObject({
      ok: false,
      reason: 'expired-key',
    });
  });

  it('a revoked key fails with revoked-key', async () => {
    const headers = await signed();
    const revoked = await revokedKey(node.publicKeyArmored, node.revocationCertificate);
    expect(await verify(headers, { publicKey: revoked })).toMatchObject({ ok: false, reason: 'revoked-key' });
  });

  it('missing or malformed headers fail with missing-headers', async () => {
    const headers = await signed();
    for (const name of ['fedmark-signature', 'fedmark-timestamp', 'fedmark-nonce', 'fedmark-key-fingerprint'] as const) {
      const { [name]: _dropped, ...rest } = headers;
      const result = await verify(rest);
      expect(result).toMatchObject({ ok: false, reason: 'missing-headers' });
      expect(result.ok === false && result.message).toContain(name);
    }
    expect(await verify({})).toMatchObject({ ok: false, reason: 'missing-headers' });
    expect(await verify({ ...headers, 'fedmark-nonce': 'abc' })).toMatchObject({ ok: false, reason: 'missing-headers' });
    expect(await verify({ ...headers, 'fedmark-timestamp': 'yesterday' })).toMatchObject({ ok: false, reason: 'missing-headers' });
    expect(await verify({ ...headers, 'fedmark-signature': '***' })).toMatchObject({ ok: false, reason: 'missing-headers' });
    expect(await verify({ ...headers, 'fedmark-nonce': [headers['fedmark-nonce'], headers['fedmark-nonce']] })).toMatchObject({
      ok: false,
      reason: 'missing-headers',
    });
  });

  it('well-formed garbage in the signature header fails with bad-signature, without throwing', async () => {
    const headers = await signed();
    const garbage = Buffer.from('definitely not an OpenPGP signature').toString('base64');
    expect(await verify({ ...headers, 'fedmark-signature': garbage })).toMatchObject({ ok: false, reason: 'bad-signature' });
    const sig = Buffer.from(headers['fedmark-signature'], 'base64');
    sig[sig.length - 3] ^= 0x01;
    expect(await verify({ ...headers, 'fedmark-signature': sig.toString('base64') })).toMatchObject({
      ok: false,
      reason: 'bad-signature',
    });
  });

  it('refuses to sign with a locked private key or an unsignable path', async () => {
    const locked = await openpgp.readPrivateKey({ armoredKey: node.privateKeyArmored });
    await expect(signRequest({ privateKey: locked, method: 'GET', path: '/', body: new Uint8Array() })).rejects.toBeInstanceOf(
      CryptoKeyError,
    );
    await expect(signRequest({ privateKey: node.privateKey, method: 'GET', path: 'no-slash', body: new Uint8Array() })).rejects.toThrow(
      /path/,
    );
  });

  it('property: any request round-trips, and any change to one body byte is caught', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE'),
        fc.webPath(),
        fc.option(fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/), { nil: undefined }),
        fc.uint8Array({ minLength: 1, maxLength: 512 }),
        fc.nat(),
        async (method, rawPath, roundId, body, at) => {
          const path = `/${rawPath.replace(/^\/+/, '')}`;
          const headers = await signRequest({ privateKey: node.privateKey, method, path, roundId, body });
          const base = { publicKey: node.publicKey, method, path, roundId, headers, seenNonce: freshNonces() };
          expect(await verifyRequest({ ...base, body })).toMatchObject({ ok: true });
          const changed = body.slice();
          changed[at % changed.length] ^= 0xff;
          expect(await verifyRequest({ ...base, body: changed })).toMatchObject({ ok: false, reason: 'bad-signature' });
        },
      ),
      { numRuns: 25 },
    );
  });
});
