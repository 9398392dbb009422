/** Test identities: generated once per test file (in beforeAll) and reused by its tests. */
import {
  generateIdentity,
  loadPrivateKey,
  loadPublicKey,
  type GeneratedIdentity,
  type PrivateKey,
  type PublicKey,
} from '../../protocols/crypto/index.ts';

export interface TestIdentity extends GeneratedIdentity {
  passphrase: string;
  privateKey: PrivateKey;
  publicKey: PublicKey;
  /** Key creation time (OpenPGP times have one-second resolution). */
  createdAt: Date;
}

export async function makeIdentity(name: string, options: { expiresInSeconds?: number } = {}): Promise<TestIdentity> {
  const passphrase = `correct horse ${name}`;
  const generated = await generateIdentity({ name, passphrase, ...options });
  const privateKey = await loadPrivateKey(generated.privateKeyArmored, passphrase);
  const publicKey = await loadPublicKey(generated.publicKeyArmored);
  return { ...generated, passphrase, privateKey, publicKey, createdAt: publicKey.getCreationTime() };
}

export function secondsAfter(date: Date, seconds: number): Date {
  return new Date(date.getTime() + seconds * 1000);
}
