import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { afterAll, describe, expect, it } from 'vitest';
import { NodeConfig } from '../../client-node/config.ts';
import { loadIdentity } from '../../client-node/identity.ts';
import { loadPrivateKey } from '../../protocols/crypto/index.ts';

const root = mkdtempSync(join(tmpdir(), 'fedmark-identity-s2k-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The S2K octet-count bytes of a stored private key's packets (primary, then subkeys). */
async function s2kCountBytes(dir: string): Promise<number[]> {
  const key = await openpgp.readPrivateKey({ armoredKey: readFileSync(join(dir, 'identity', 'identity.key.asc'), 'utf8') });
  const packets = [key.keyPacket, ...key.subkeys.map((s) => s.keyPacket)] as unknown as Array<{ s2k: { type: string; c: number } }>;
  return packets.map((p) => {
    expect(p.s2k.type).toBe('iterated');
    return p.s2k.c;
  });
}

/**
 * A node key is always encrypted at rest; the S2K's stretching is spent only where it buys
 * something: a chosen passphrase (RFC 9580 section 3.7.3; client-node/identity.ts s2kCountByteFor).
 */
describe('node identity at rest', () => {
  const random = 'kP3x9QmZr0b7Vt2LwY8sNc4HdJ6fGa1E'; // 32 base64url characters, as the demo makes up

  it('a passphrase declared random: encrypted with the smallest iterated S2K count, and still needs the passphrase', async () => {
    const stateDir = join(root, 'random');
    const identity = await loadIdentity({ stateDir, keyPassphrase: random, keyPassphraseRandom: true });
    expect(await s2kCountBytes(stateDir)).toEqual([0, 0]);
    const armored = readFileSync(join(stateDir, 'identity', 'identity.key.asc'), 'utf8');
    expect((await openpgp.readPrivateKey({ armoredKey: armored })).isDecrypted()).toBe(false);
    await expect(loadPrivateKey(armored, 'not-the-passphrase-at-all')).rejects.toThrow(/passphrase/i);
    expect((await loadPrivateKey(armored, random)).getFingerprint()).toBe(identity.fingerprint);
    // Reloaded as it is stored: the same key.
    expect((await loadIdentity({ stateDir, keyPassphrase: random, keyPassphraseRandom: true })).fingerprint).toBe(identity.fingerprint);
  });

  it('a chosen passphrase keeps OpenPGP.js\'s default stretching (count byte 224)', async () => {
    const stateDir = join(root, 'chosen');
    await loadIdentity({ stateDir, keyPassphrase: 'correct horse battery', keyPassphraseRandom: false });
    expect(await s2kCountBytes(stateDir)).toEqual([224, 224]);
  });

  it('a passphrase too short to be random is refused when declared random, naming the variable', () => {
    const base = { coordinator: 'http://127.0.0.1:1', data: 'x.csv' };
    const short = NodeConfig.safeParse({ ...base, keyPassphrase: 'only-14-chars!', keyPassphraseRandom: true });
    expect(short.success).toBe(false);
    expect(short.error!.issues[0].message).toMatch(/FEDMARK_NODE_KEY_PASSPHRASE_RANDOM=1.*at least 22 characters/);
    expect(NodeConfig.safeParse({ ...base, keyPassphrase: 'only-14-chars!' }).success).toBe(true);
    expect(NodeConfig.safeParse({ ...base, keyPassphrase: random, keyPassphraseRandom: true }).success).toBe(true);
  });
});
