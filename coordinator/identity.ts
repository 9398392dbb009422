import { mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { announceKeyRotation, loadOrCreateIdentity, signArtifact, type LoadedIdentity } from '../protocols/crypto/index.ts';
import type { Db } from './db/database.ts';

/**
 * The coordinator's OpenPGP identity: it signs every published model and every audit checkpoint.
 * The private key stays in `keyDir`, encrypted with the passphrase from the environment. Rotation
 * generates a new key and an announcement signed by the old one, which nodes verify before they
 * trust the new key.
 */
/** Keys expire: a stolen key stops working by itself. Rotate before (POST /v1/coordinator/key/rotate). */
export const COORDINATOR_KEY_LIFETIME_SECONDS = 2 * 365 * 24 * 3600;

export class CoordinatorKeyring {
  private constructor(
    private identity: LoadedIdentity,
    /** Retired keys still open updates sealed to them by nodes that have not followed a rotation yet. */
    private readonly retired: LoadedIdentity[],
    private readonly keyDir: string,
    private readonly passphrase: string,
    private readonly db: Db,
  ) {}

  static async open(db: Db, keyDir: string, passphrase: string): Promise<CoordinatorKeyring> {
    mkdirSync(keyDir, { recursive: true });
    const identity = await loadOrCreateIdentity(keyDir, { name: 'fedmark coordinator', passphrase, expiresInSeconds: COORDINATOR_KEY_LIFETIME_SECONDS });
    await db.insertInto('coordinator_keys').values({ fingerprint: identity.fingerprint, public_key: identity.publicKeyArmored, announcement: null }).onConflict((oc) => oc.column('fingerprint').doNothing()).execute();
    const retired: LoadedIdentity[] = [];
    for (const entry of readdirSync(keyDir)) {
      if (entry.startsWith('retired-')) retired.push(await loadOrCreateIdentity(join(keyDir, entry), { name: 'fedmark coordinator', passphrase }));
    }
    return new CoordinatorKeyring(identity, retired, keyDir, passphrase, db);
  }

  get current(): LoadedIdentity {
    return this.identity;
  }

  /** The current key first, then retired ones (newest first). */
  get decryptionKeys(): LoadedIdentity[] {
    return [this.identity, ...[...this.retired].reverse()];
  }

  /** Detached signature (armored) over published bytes, with the signer's fingerprint. */
  async sign(bytes: Uint8Array): Promise<{ signature: string; fingerprint: string }> {
    return { signature: await signArtifact(bytes, this.identity.privateKey), fingerprint: this.identity.fingerprint };
  }

  /** A new key; the old one signs its announcement and is kept beside it for the record. */
  async rotate(): Promise<{ fingerprint: string; announcement: string }> {
    const old = this.identity;
    const archive = join(this.keyDir, `retired-${old.fingerprint}`);
    mkdirSync(archive, { recursive: true });
    for (const file of Object.values(old.files)) renameSync(file, join(archive, file.split('/').pop()!));
    const next = await loadOrCreateIdentity(this.keyDir, { name: 'fedmark coordinator', passphrase: this.passphrase, expiresInSeconds: COORDINATOR_KEY_LIFETIME_SECONDS });
    const announcement = await announceKeyRotation({ oldPrivateKey: old.privateKey, newPublicKeyArmored: next.publicKeyArmored, at: new Date() });
    await this.db.insertInto('coordinator_keys').values({ fingerprint: next.fingerprint, public_key: next.publicKeyArmored, announcement }).execute();
    this.retired.push(old);
    this.identity = next;
    return { fingerprint: next.fingerprint, announcement };
  }

  async publicInfo() {
    const history = await this.db.selectFrom('coordinator_keys').select(['fingerprint', 'announcement', 'created_at']).orderBy('created_at').execute();
    return {
      fingerprint: this.identity.fingerprint,
      publicKey: this.identity.publicKeyArmored,
      // Oldest first: a node pinned to an old key follows the chain of announcements.
      rotations: history.filter((h) => h.announcement).map((h) => ({ fingerprint: h.fingerprint, announcement: h.announcement!, at: new Date(h.created_at).toISOString() })),
    };
  }
}
