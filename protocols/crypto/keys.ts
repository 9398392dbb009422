/**
 * OpenPGP identities of coordinators and client nodes (OpenPGP.js 6).
 *
 * Key type. `generateKey({ type: 'ecc', curve: 'curve25519Legacy' })` makes a v4 key whose primary
 * key is Ed25519 (signing, algorithm "EdDSALegacy") with one Curve25519 ECDH subkey (encryption).
 * This is the format every OpenPGP implementation in use reads, GnuPG 2.2/2.4 included, so a
 * compliance officer can verify our signatures and audit checkpoints with their own tool instead of
 * trusting ours. OpenPGP.js 6 also offers `type: 'curve25519'` (RFC 9580 Ed25519/X25519 algorithm
 * ids 27/25): same curves, but widely deployed tools (GnuPG 2.2/2.4 among them) do not read those
 * ids, so we do not use it. (In v6 the curve names became `curve25519Legacy` / `ed25519Legacy`;
 * the old names are still accepted.)
 *
 * Private keys at rest. OpenPGP.js leaves a private key UNENCRYPTED when `passphrase` is omitted
 * or '' (documented in generateKey), so we refuse empty passphrases ourselves, and
 * `loadPrivateKey` refuses an armored private key that is not passphrase-protected. Protection
 * is OpenPGP.js's default: AES-256 with an iterated+salted SHA-256 S2K (count byte 224, about
 * 16 M hashed bytes), readable by GnuPG. Argon2 S2K would be stronger against passphrase guessing,
 * but OpenPGP.js requires AEAD key protection for it, which GnuPG cannot read.
 *
 * Expiry and revocation. OpenPGP.js judges a key's validity at the time a SIGNATURE WAS MADE, not
 * now: a signature made before a key expired still verifies after expiry, and anyone holding an
 * expired (or leaked) key can back-date signatures. Every verifier in this folder therefore checks
 * `keyStatus(key, now)` itself before trusting a signature. A revocation certificate made at key
 * generation is dated at the key's creation, so once it is merged into a public key every
 * signature by that key fails, past ones included; that is what a compromised key calls for.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import type { Key, PrivateKey, PublicKey } from 'openpgp';
import { z } from 'zod';
import { CryptoKeyError, WrongPassphraseError, errorMessage } from './errors.ts';

export type { Key, PrivateKey, PublicKey } from 'openpgp';

/** A public key, as a parsed object or as armored text. */
export type PublicKeyInput = PublicKey | string;

export interface GenerateIdentityOptions {
  /** Shown in the key's user ID, e.g. "fedmark node eu-west-1". */
  name: string;
  email?: string;
  /** Encrypts the private key at rest. Must not be empty. */
  passphrase: string;
  /** Key lifetime from its creation, in seconds; absent = never expires. */
  expiresInSeconds?: number;
  /** S2K octet-count byte protecting the key at rest (default OpenPGP.js's 224); lower only for a machine-generated passphrase (client-node/identity.ts, RFC 9580 section 3.7.3). */
  s2kIterationCountByte?: number;
}

export interface GeneratedIdentity {
  publicKeyArmored: string;
  /** Encrypted with the passphrase. */
  privateKeyArmored: string;
  /** Lower-case hex (40 characters for these v4 keys). */
  fingerprint: string;
  /** Armored revocation certificate: keep it as safe as the private key (it can kill the key). */
  revocationCertificate: string;
}

// A user ID is "name <email>": brackets and parentheses in the name would make it ambiguous.
const USER_ID_NAME = /^[^<>()\p{Cc}]+$/u;

const GenerateIdentityInput = z.object({
  name: z
    .string()
    .trim()
    .min(1, 'name must not be empty')
    .max(128, 'name is longer than 128 characters')
    .regex(USER_ID_NAME, 'name must not contain < > ( ) or control characters'),
  email: z.email('email is not a valid address').optional(),
  passphrase: z.string().refine((p) => p.trim().length > 0, 'passphrase must not be empty'),
  expiresInSeconds: z
    .number()
    .int('expiresInSeconds must be an integer')
    .positive('expiresInSeconds must be positive')
    .max(0xffffffff, 'expiresInSeconds does not fit in an OpenPGP key expiration time')
    .optional(),
  s2kIterationCountByte: z.number().int().min(0).max(255, 's2kIterationCountByte is one octet (0-255)').optional(),
});

function validationMessage(error: z.ZodError): string {
  // Only the issue messages: zod does not echo inputs by default, and a passphrase must never
  // reach a log.
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

/** A new Ed25519/Curve25519 identity; the private key comes back encrypted with the passphrase. */
export async function generateIdentity(options: GenerateIdentityOptions): Promise<GeneratedIdentity> {
  const parsed = GenerateIdentityInput.safeParse(options);
  if (!parsed.success) throw new CryptoKeyError(`generateIdentity: ${validationMessage(parsed.error)}`);
  const { name, email, passphrase, expiresInSeconds, s2kIterationCountByte } = parsed.data;
  let generated;
  try {
    generated = await openpgp.generateKey({
      type: 'ecc',
      curve: 'curve25519Legacy',
      userIDs: [email === undefined ? { name } : { name, email }],
      passphrase,
      keyExpirationTime: expiresInSeconds ?? 0,
      format: 'armored',
      ...(s2kIterationCountByte === undefined ? {} : { config: { s2kIterationCountByte } }),
    });
  } catch (err) {
    throw new CryptoKeyError(`key generation failed: ${errorMessage(err)}`, { cause: err });
  }
  // Belt and braces: never hand out a private key that is readable without the passphrase.
  const check = await openpgp.readPrivateKey({ armoredKey: generated.privateKey });
  if (check.isDecrypted()) throw new CryptoKeyError('key generation produced an unencrypted private key');
  return {
    publicKeyArmored: generated.publicKey,
    privateKeyArmored: generated.privateKey,
    fingerprint: check.getFingerprint(),
    revocationCertificate: generated.revocationCertificate,
  };
}

/**
 * Reads an armored, passphrase-protected private key and decrypts it for use in memory.
 * Throws `WrongPassphraseError` on a wrong passphrase, `CryptoKeyError` for anything else
 * (not a private key, stored unencrypted, corrupted).
 */
export async function loadPrivateKey(armored: string, passphrase: string): Promise<PrivateKey> {
  let key: PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey: armored });
  } catch (err) {
    throw new CryptoKeyError(`not an armored OpenPGP private key: ${errorMessage(err)}`, { cause: err });
  }
  const fingerprint = key.getFingerprint();
  // isDecrypted() is true when ANY key packet (primary or subkey) is stored in the clear.
  if (key.isDecrypted()) {
    throw new CryptoKeyError(
      `private key ${fingerprint} is stored without a passphrase; refusing it (re-encrypt it with a passphrase)`,
    );
  }
  if (passphrase.length === 0) throw new WrongPassphraseError(fingerprint);
  try {
    // decryptKey also validates that the secret parameters match the public ones.
    return await openpgp.decryptKey({ privateKey: key, passphrase });
  } catch (err) {
    if (/incorrect key passphrase/i.test(errorMessage(err))) throw new WrongPassphraseError(fingerprint, { cause: err });
    throw new CryptoKeyError(`cannot decrypt private key ${fingerprint}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Reads an armored public key. Refuses a private key: it must never be sent where a public one goes. */
export async function loadPublicKey(armored: string): Promise<PublicKey> {
  let key: Key;
  try {
    key = await openpgp.readKey({ armoredKey: armored });
  } catch (err) {
    throw new CryptoKeyError(`not an armored OpenPGP public key: ${errorMessage(err)}`, { cause: err });
  }
  if (key.isPrivate()) {
    throw new CryptoKeyError('expected a public key but got a PRIVATE key; refusing it (send only the public key)');
  }
  return key;
}

/**
 * `PublicKeyInput` to a parsed key (objects pass through, private ones included). Armored text is
 * parsed once and then served from a bounded cache (see `cachedPublicKey`): treat the returned
 * key as read-only.
 */
export async function toPublicKey(input: PublicKeyInput): Promise<PublicKey> {
  return typeof input === 'string' ? cachedPublicKey(input) : input;
}

// ---------------------------------------------------------------------------------------------
// Parsed-key cache (issue 13). The coordinator gets a node's key from the database as armored
// text on every request; parsing it (packets, fingerprint) and checking its self-signature cost
// ~2 ms of CPU, more than the request signature itself. The cache is keyed by the ARMORED TEXT,
// not by fingerprint: a rotated key, or a key with a revocation certificate merged in, is other
// text, so it is a cache miss and gets parsed and judged afresh; a stale verdict cannot outlive
// the text it was computed from. Expiry is time-dependent, so it is never cached as a verdict:
// the key's expiration TIME is (it does not depend on the time of asking, see `keyStatus`).
// ---------------------------------------------------------------------------------------------

/** Distinct armored keys kept parsed (one per enrolled node and coordinator key; ~10 KB each). */
export const PUBLIC_KEY_CACHE_SIZE = 1024;

// A Map iterates in insertion order, so re-inserting on a hit and evicting the first key is an
// LRU in a few lines; no dependency needed for that. Values are promises, so concurrent requests
// for one key share one parse.
const parsedKeys = new Map<string, Promise<PublicKey>>();

/** Facts about a cached key that do not depend on the time of asking (see `keyStatus`). */
interface KeyFacts {
  /** Any primary-key revocation signature at all (then revocation is judged in full each time). */
  hasRevocations: boolean;
  /** `getExpirationTime()`: computed with no reference date by OpenPGP.js, so time-independent. */
  expiry: Date | number | null;
}
const keyFacts = new WeakMap<PublicKey, KeyFacts>();

async function parseAndJudge(armored: string): Promise<PublicKey> {
  const key = await loadPublicKey(armored);
  keyFacts.set(key, { hasRevocations: key.revocationSignatures.length > 0, expiry: await key.getExpirationTime() });
  return key;
}

/** The parsed key for armored text, parsed once (bounded LRU, `PUBLIC_KEY_CACHE_SIZE`). */
export function cachedPublicKey(armored: string): Promise<PublicKey> {
  let entry = parsedKeys.get(armored);
  if (entry !== undefined) {
    parsedKeys.delete(armored); // most recently used goes last
  } else {
    entry = parseAndJudge(armored);
    entry.catch(() => parsedKeys.delete(armored)); // a bad key is not cached: the error is re-raised each time
    if (parsedKeys.size >= PUBLIC_KEY_CACHE_SIZE) parsedKeys.delete(parsedKeys.keys().next().value!);
  }
  parsedKeys.set(armored, entry);
  return entry;
}

/** Empties the parsed-key cache (tests; an operator tool that wants a cold start). */
export function clearPublicKeyCache(): void {
  parsedKeys.clear();
}

/** How many armored keys are parsed and cached now. */
export function publicKeyCacheSize(): number {
  return parsedKeys.size;
}

/** Lower-case hex fingerprint of an armored public or private key. */
export async function fingerprintOf(armored: string): Promise<string> {
  try {
    return (await openpgp.readKey({ armoredKey: armored })).getFingerprint();
  } catch (err) {
    throw new CryptoKeyError(`not an armored OpenPGP key: ${errorMessage(err)}`, { cause: err });
  }
}

/** Whether the key is revoked at `at` (default now). */
export async function isRevoked(key: PublicKeyInput, at: Date = new Date()): Promise<boolean> {
  const k = await toPublicKey(key);
  return k.isRevoked(undefined, undefined, at);
}

/**
 * Whether the key is expired at `at`. Fails closed: a key without a valid self-signature (so no
 * knowable expiry) counts as expired. A revoked key is not "expired": ask `isRevoked`.
 */
export async function isExpired(key: PublicKeyInput, at: Date): Promise<boolean> {
  const k = await toPublicKey(key);
  const expiry = await k.getExpirationTime();
  if (expiry === null) return true;
  return expiry instanceof Date && expiry.getTime() <= at.getTime();
}

export type KeyStatus = 'valid' | 'revoked' | 'expired' | 'not-yet-valid' | 'invalid';

/** One verdict for "may this key be trusted at `at`?", revocation first. */
export async function keyStatus(key: PublicKeyInput, at: Date = new Date()): Promise<KeyStatus> {
  const k = await toPublicKey(key);
  // A cached key (parsed from armored text by `cachedPublicKey`) brings its time-independent
  // facts: with no revocation signature it cannot be revoked at any time, and its expiration
  // time is fixed; expiry itself is still compared with `at` on every call below.
  const facts = keyFacts.get(k);
  if (facts === undefined || facts.hasRevocations) {
    if (await k.isRevoked(undefined, undefined, at)) return 'revoked';
  }
  const expiry = facts !== undefined ? facts.expiry : await k.getExpirationTime();
  if (expiry === null) return 'invalid';
  if (expiry instanceof Date && expiry.getTime() <= at.getTime()) return 'expired';
  // OpenPGP times have one-second resolution.
  if (k.getCreationTime().getTime() > Math.floor(at.getTime() / 1000) * 1000) return 'not-yet-valid';
  return 'valid';
}

/**
 * Merges a revocation certificate into an armored public key and returns the revoked public key
 * (armored), to publish in place of the old one. Throws if the certificate is not for this key.
 */
export async function revokedKey(publicArmored: string, revocationCertificate: string): Promise<string> {
  const key = await loadPublicKey(publicArmored);
  try {
    const { publicKey } = await openpgp.revokeKey({ key, revocationCertificate, format: 'armored' });
    return publicKey;
  } catch (err) {
    throw new CryptoKeyError(
      `cannot revoke key ${key.getFingerprint()} with this certificate: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Key store: one identity per process directory.
// ---------------------------------------------------------------------------------------------

export const IDENTITY_FILES = {
  publicKey: 'identity.pub.asc',
  privateKey: 'identity.key.asc',
  revocation: 'revocation.asc',
} as const;

export interface LoadedIdentity {
  fingerprint: string;
  publicKeyArmored: string;
  publicKey: PublicKey;
  /** Decrypted, in memory only; on disk it stays encrypted. */
  privateKey: PrivateKey;
  revocationCertificate: string;
  /** True when this call generated the identity, false when it loaded an existing one. */
  created: boolean;
  files: { publicKey: string; privateKey: string; revocation: string };
}

export interface LoadOrCreateOptions {
  name: string;
  email?: string;
  passphrase: string;
  /** Only used when a new identity is generated. */
  expiresInSeconds?: number;
  /** Only used when a new identity is generated (GenerateIdentityOptions). */
  s2kIterationCountByte?: number;
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Write-then-rename, so a reader never sees half a file. */
async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode, flag: 'wx' });
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Publishes the private key file only if none exists (link() never overwrites), so two processes
 * starting together on one directory cannot both create an identity and clobber each other.
 * Returns false when another process got there first.
 */
async function writePrivateKeyOnce(path: string, data: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode: 0o600, flag: 'wx' });
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

async function isPublicKeyFileFor(armored: string | null, fingerprint: string): Promise<boolean> {
  if (armored === null) return false;
  try {
    const key = await openpgp.readKey({ armoredKey: armored });
    return !key.isPrivate() && key.getFingerprint() === fingerprint;
  } catch {
    return false;
  }
}

async function revocationIsFor(publicKey: PublicKey, certificate: string | null): Promise<boolean> {
  if (certificate === null) return false;
  try {
    await openpgp.revokeKey({ key: publicKey, revocationCertificate: certificate, format: 'object' });
    return true;
  } catch {
    return false;
  }
}

async function newRevocationCertificate(privateKey: PrivateKey): Promise<string> {
  const { privateKey: revoked } = await openpgp.revokeKey({ key: privateKey, format: 'object' });
  const certificate = await revoked.getRevocationCertificate();
  if (typeof certificate !== 'string') throw new CryptoKeyError('could not produce a revocation certificate');
  return certificate;
}

/**
 * Loads the identity stored in `dir`, or generates one and stores it there:
 * `identity.key.asc` (mode 0600, passphrase-encrypted), `identity.pub.asc`, `revocation.asc`
 * (mode 0600: whoever holds it can revoke the key). The private key file is the source of truth:
 * a missing or mismatching public key or revocation certificate is re-derived from it. A wrong
 * passphrase throws `WrongPassphraseError` and never replaces the stored key.
 */
export async function loadOrCreateIdentity(dir: string, options: LoadOrCreateOptions): Promise<LoadedIdentity> {
  const files = {
    publicKey: join(dir, IDENTITY_FILES.publicKey),
    privateKey: join(dir, IDENTITY_FILES.privateKey),
    revocation: join(dir, IDENTITY_FILES.revocation),
  };
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let created = false;
  let privateArmored = await readIfExists(files.privateKey);
  let revocationCertificate: string | null = null;
  if (privateArmored === null) {
    const identity = await generateIdentity(options);
    if (await writePrivateKeyOnce(files.privateKey, identity.privateKeyArmored)) {
      created = true;
      privateArmored = identity.privateKeyArmored;
      revocationCertificate = identity.revocationCertificate;
      await writeFileAtomic(files.revocation, revocationCertificate, 0o600);
      await writeFileAtomic(files.publicKey, identity.publicKeyArmored, 0o644);
    } else {
      privateArmored = await readFile(files.privateKey, 'utf8'); // another process won the race
    }
  } else if (process.platform !== 'win32') {
    // Best effort: tighten a key file someone copied in with looser permissions.
    const { mode } = await stat(files.privateKey);
    if ((mode & 0o077) !== 0) await chmod(files.privateKey, 0o600);
  }

  const privateKey = await loadPrivateKey(privateArmored, options.passphrase);
  const publicKey = privateKey.toPublic();
  const fingerprint = privateKey.getFingerprint();
  const publicKeyArmored = publicKey.armor();

  if (!created) {
    if (!(await isPublicKeyFileFor(await readIfExists(files.publicKey), fingerprint))) {
      await writeFileAtomic(files.publicKey, publicKeyArmored, 0o644);
    }
    revocationCertificate = await readIfExists(files.revocation);
    if (!(await revocationIsFor(publicKey, revocationCertificate))) {
      revocationCertificate = await newRevocationCertificate(privateKey);
      await writeFileAtomic(files.revocation, revocationCertificate, 0o600);
    }
  }

  return {
    fingerprint,
    publicKeyArmored,
    publicKey,
    privateKey,
    revocationCertificate: revocationCertificate!,
    created,
    files,
  };
}
