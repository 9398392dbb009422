/**
 * Native request signatures (native-sign.ts) against OpenPGP.js: every signature made natively
 * verifies with OpenPGP.js itself, and an expired key or another key shape is left to OpenPGP.js.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { signRequest, verifyRequest } from '../../protocols/crypto/index.ts';
import { signNatively } from '../../protocols/crypto/native-sign.ts';
import { verifiesNatively } from '../../protocols/crypto/native-verify.ts';
import { makeIdentity, secondsAfter, type TestIdentity } from './identities.ts';

let alice: TestIdentity;
let shortLived: TestIdentity;

beforeAll(async () => {
  [alice, shortLived] = await Promise.all([makeIdentity('native-sign-alice'), makeIdentity('native-sign-short', { expiresInSeconds: 60 })]);
});

/** OpenPGP.js's verdict on a binary detached signature at `date`. */
async function openpgpVerifies(data: Uint8Array, signature: Uint8Array, key: openpgp.PublicKey, date: Date): Promise<boolean> {
  try {
    const { signatures } = await openpgp.verify({ message: await openpgp.createMessage({ binary: data }), signature: await openpgp.readSignature({ binarySignature: signature }), verificationKeys: key, date, format: 'binary' });
    if (signatures.length !== 1) return false;
    await signatures[0].verified;
    return true;
  } catch {
    return false;
  }
}

describe('native request signatures', () => {
  it('are OpenPGP signatures that OpenPGP.js verifies, over exactly the signed bytes and time', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), fc.integer({ min: 0, max: 100_000 }), async (data, afterSeconds) => {
        const at = secondsAfter(alice.createdAt, afterSeconds);
        const signature = await signNatively(data, alice.privateKey, at);
        expect(signature).not.toBeNull();
        expect(await openpgpVerifies(data, signature!, alice.publicKey, at)).toBe(true);
        expect(await verifiesNatively(data, signature!, alice.publicKey, at)).toBe(true);
        const parsed = (await openpgp.readSignature({ binarySignature: signature! })).packets[0] as unknown as { created: Date };
        expect(parsed.created.getTime()).toBe(Math.floor(at.getTime() / 1000) * 1000);
        if (data.length > 0) {
          const changed = Uint8Array.from(data);
          changed[0] ^= 1;
          expect(await openpgpVerifies(changed, signature!, alice.publicKey, at)).toBe(false);
        }
      }),
      { numRuns: 80 },
    );
  }, 120_000);

  it('leaves a key outside its validity (expired, not yet created) to OpenPGP.js, which refuses to sign', async () => {
    const data = new Uint8Array([1]);
    expect(await signNatively(data, shortLived.privateKey, secondsAfter(shortLived.createdAt, 61))).toBeNull();
    expect(await signNatively(data, shortLived.privateKey, secondsAfter(shortLived.createdAt, -5))).toBeNull();
    expect(await signNatively(data, shortLived.privateKey, secondsAfter(shortLived.createdAt, 30))).not.toBeNull();
    await expect(signRequest({ privateKey: shortLived.privateKey, method: 'GET', path: '/', body: data, now: secondsAfter(shortLived.createdAt, 61) })).rejects.toThrow(/cannot sign request/);
  });

  it('leaves another key shape to OpenPGP.js (a key with two user IDs), and the request still verifies', async () => {
    const { privateKey: armored, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'a' }, { name: 'b' }], format: 'armored' });
    const key = await openpgp.readPrivateKey({ armoredKey: armored });
    const now = secondsAfter(new Date(), 2);
    expect(await signNatively(new Uint8Array([1]), key, now)).toBeNull();
    const headers = await signRequest({ privateKey: key, method: 'GET', path: '/x', body: new Uint8Array(), now });
    const result = await verifyRequest({ publicKey, method: 'GET', path: '/x', body: new Uint8Array(), headers, now, seenNonce: () => false });
    expect(result.ok).toBe(true);
  });

  const hasGpg = spawnSync('gpg', ['--version']).status === 0;
  it.skipIf(!hasGpg)('are read and verified by GnuPG (and a changed byte is a BAD signature)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-native-sign-'));
    try {
      const data = new TextEncoder().encode('FEDMARK-SIG-V1\nGET\n/v1/tasks/next\n');
      writeFileSync(join(dir, 'key.asc'), alice.publicKeyArmored);
      writeFileSync(join(dir, 'data'), data);
      writeFileSync(join(dir, 'data.sig'), (await signNatively(data, alice.privateKey, new Date()))!);
      const gpg = (...args: string[]) => spawnSync('gpg', ['--batch', '--homedir', join(dir, 'gnupg'), ...args], { cwd: dir, encoding: 'utf8' });
      spawnSync('mkdir', ['-m', '700', join(dir, 'gnupg')]);
      expect(gpg('--import', 'key.asc').status).toBe(0);
      const good = gpg('--status-fd', '1', '--verify', 'data.sig', 'data');
      expect(good.stdout).toMatch(/GOODSIG/);
      writeFileSync(join(dir, 'data'), Buffer.concat([Buffer.from(data), Buffer.from('x')]));
      expect(gpg('--status-fd', '1', '--verify', 'data.sig', 'data').stdout).toMatch(/BADSIG/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
