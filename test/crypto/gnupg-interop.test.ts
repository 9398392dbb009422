import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sealNatively } from '../../protocols/crypto/native-seal.ts';
import { artifactSignPaths, signArtifact } from '../../protocols/crypto/signed-artifact.ts';
import { makeIdentity, type TestIdentity } from './identities.ts';

/**
 * A sealed update made by native-seal.ts, opened by GnuPG itself (when `gpg` is installed): the
 * format claim ("the same message OpenPGP.js makes; GnuPG reads it") checked against a second,
 * independent implementation. Skipped, saying so, where there is no gpg.
 */
const gpgThere = spawnSync('gpg', ['--version'], { encoding: 'utf8' }).status === 0;

describe.skipIf(!gpgThere)('GnuPG opens a natively sealed update', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-gnupg-'));
  const home = join(dir, 'home');
  let coordinator: TestIdentity;
  let node: TestIdentity;
  const gpg = (args: string[]) => spawnSync('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', ...args], { encoding: 'utf8', timeout: 60_000 });

  beforeAll(async () => {
    [coordinator, node] = await Promise.all([makeIdentity('coordinator'), makeIdentity('node-eu-1')]);
    spawnSync('mkdir', ['-m', '700', home]);
    writeFileSync(join(dir, 'coordinator.asc'), coordinator.privateKeyArmored);
    writeFileSync(join(dir, 'node.asc'), node.publicKeyArmored);
    writeFileSync(join(dir, 'passphrase'), coordinator.passphrase);
    expect(gpg(['--passphrase-file', join(dir, 'passphrase'), '--import', join(dir, 'coordinator.asc')]).status).toBe(0);
    expect(gpg(['--import', join(dir, 'node.asc')]).status).toBe(0);
  }, 60_000);
  afterAll(() => {
    spawnSync('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']);
    rmSync(dir, { recursive: true, force: true });
  });

  it("decrypts it to the same bytes and reports the node's good signature", async () => {
    const bytes = Buffer.concat([Buffer.from('FMW1\r\n\0'), Buffer.alloc(20_000, 0xa5)]);
    const sealed = await sealNatively(bytes, coordinator.publicKey, node.privateKey, new Date());
    expect(sealed).not.toBeNull();
    writeFileSync(join(dir, 'sealed.pgp'), sealed!);
    const r = gpg(['--passphrase-file', join(dir, 'passphrase'), '--status-fd', '2', '--output', join(dir, 'opened.bin'), '--decrypt', join(dir, 'sealed.pgp')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`\\[GNUPG:\\] GOODSIG ${node.publicKey.getKeyID().toHex()}`, 'i'));
    expect(r.stderr).toMatch(/\[GNUPG:\] DECRYPTION_OKAY/);
    expect(Buffer.from(readFileSync(join(dir, 'opened.bin'))).equals(bytes)).toBe(true);
  }, 60_000);

  it('refuses it with one octet of the ciphertext changed (the MDC)', async () => {
    const sealed = (await sealNatively(Buffer.alloc(5000, 1), coordinator.publicKey, node.privateKey, new Date()))!;
    sealed[sealed.length - 100] ^= 0x01;
    writeFileSync(join(dir, 'tampered.pgp'), sealed);
    const r = gpg(['--passphrase-file', join(dir, 'passphrase'), '--status-fd', '2', '--output', join(dir, 'tampered.bin'), '--decrypt', join(dir, 'tampered.pgp')]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).not.toMatch(/DECRYPTION_OKAY/);
  }, 60_000);

  it("checks an artifact signature made natively (a model, a checkpoint): good over the bytes, BAD with one octet changed", async () => {
    const model = Buffer.concat([Buffer.from('FMW1\n'), Buffer.alloc(13_000, 0x3c)]);
    const before = artifactSignPaths.native;
    writeFileSync(join(dir, 'model.asc'), await signArtifact(model, coordinator.privateKey));
    expect(artifactSignPaths.native - before).toBe(1);
    writeFileSync(join(dir, 'model.bin'), model);
    const good = gpg(['--status-fd', '2', '--verify', join(dir, 'model.asc'), join(dir, 'model.bin')]);
    expect(good.status, good.stderr).toBe(0);
    expect(good.stderr).toMatch(new RegExp(`\\[GNUPG:\\] GOODSIG ${coordinator.publicKey.getKeyID().toHex()}`, 'i'));
    model[7] ^= 0x01;
    writeFileSync(join(dir, 'model.bin'), model);
    const bad = gpg(['--status-fd', '2', '--verify', join(dir, 'model.asc'), join(dir, 'model.bin')]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/\[GNUPG:\] BADSIG/);
  }, 60_000);
});
