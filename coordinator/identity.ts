import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { announceKeyRotation, fingerprintOf, IDENTITY_FILES, loadOrCreateIdentity, signArtifact, type LoadedIdentity } from '../protocols/crypto/index.ts';
import { AUDIT_HEAD_FILE } from './audit/audit-head.ts';
import { appendAudit } from './audit/audit-log.ts';
import type { Db } from './db/database.ts';
import { isKeyRecorded, listKeyHistory, recordKey, recordKeyIfAbsent } from './keys/repository.ts';

/** Where a new key waits until the database has recorded its rotation (see `rotate`). */
const STAGING = 'rotating';

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
    await CoordinatorKeyring.settleInterruptedRotation(db, keyDir, passphrase);
    const identity = await loadOrCreateIdentity(keyDir, { name: 'fedmark coordinator', passphrase, expiresInSeconds: COORDINATOR_KEY_LIFETIME_SECONDS });
    await recordKeyIfAbsent(db, { fingerprint: identity.fingerprint, public_key: identity.publicKeyArmored, announcement: null });
    const retired: LoadedIdentity[] = [];
    for (const entry of readdirSync(keyDir)) {
      if (entry.startsWith('retired-')) retired.push(await loadOrCreateIdentity(join(keyDir, entry), { name: 'fedmark coordinator', passphrase }));
    }
    return new CoordinatorKeyring(identity, retired, keyDir, passphrase, db);
  }

  get current(): LoadedIdentity {
    return this.identity;
  }

  /** The last audit head this coordinator signed: kept beside its key, out of the database owner's reach (coordinator/audit/audit-head.ts). */
  get auditHeadFile(): string {
    return join(this.keyDir, AUDIT_HEAD_FILE);
  }

  /** The current key first, then retired ones (newest first). */
  get decryptionKeys(): LoadedIdentity[] {
    return [this.identity, ...[...this.retired].reverse()];
  }

  /** Detached signature (armored) over published bytes, with the signer's fingerprint. */
  async sign(bytes: Uint8Array): Promise<{ signature: string; fingerprint: string }> {
    return { signature: await signArtifact(bytes, this.identity.privateKey), fingerprint: this.identity.fingerprint };
  }

  /**
   * A new key; the old one signs its announcement and is kept beside it for the record. The key
   * row and the `coordinator.key-rotated` audit entry commit in one transaction: a key on record
   * without its entry in the chain would make every later checkpoint, signed by the new key,
   * unverifiable offline. The new key is made in a staging folder and becomes current on disk
   * only after that commit; `open` finishes or discards a rotation a crash cut short.
   */
  async rotate(actor = 'coordinator'): Promise<{ fingerprint: string; announcement: string }> {
    // One at a time: two overlapping rotations would share the staging folder and both chain from the same old key.
    const run = this.rotation.then(() => this.rotateNow(actor));
    this.rotation = run.catch(() => undefined);
    return run;
  }

  private rotation: Promise<unknown> = Promise.resolve();

  private async rotateNow(actor: string): Promise<{ fingerprint: string; announcement: string }> {
    const old = this.identity;
    const staging = join(this.keyDir, STAGING);
    rmSync(staging, { recursive: true, force: true });
    const next = await loadOrCreateIdentity(staging, { name: 'fedmark coordinator', passphrase: this.passphrase, expiresInSeconds: COORDINATOR_KEY_LIFETIME_SECONDS });
    const announcement = await announceKeyRotation({ oldPrivateKey: old.privateKey, newPublicKeyArmored: next.publicKeyArmored, at: new Date() });
    try {
      await this.db.transaction().execute(async (tx) => {
        await recordKey(tx, { fingerprint: next.fingerprint, public_key: next.publicKeyArmored, announcement });
        // The announcement (signed by the old key, carrying the new one) goes into the chain, so
        // an auditor holding only the first key can follow every rotation.
        await appendAudit(tx, { actor, kind: 'coordinator.key-rotated', data: { newFingerprint: next.fingerprint, announcement } });
      });
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
    const current = CoordinatorKeyring.promoteStaged(this.keyDir, old.fingerprint);
    this.retired.push(old);
    this.identity = { ...next, files: current };
    return { fingerprint: next.fingerprint, announcement };
  }

  /** Retires the current key files (when there are any) and moves the staged ones into their place. */
  private static promoteStaged(keyDir: string, oldFingerprint: string | undefined): LoadedIdentity['files'] {
    const files = (dir: string) => ({ publicKey: join(dir, IDENTITY_FILES.publicKey), privateKey: join(dir, IDENTITY_FILES.privateKey), revocation: join(dir, IDENTITY_FILES.revocation) });
    if (oldFingerprint) {
      const archive = join(keyDir, `retired-${oldFingerprint}`);
      mkdirSync(archive, { recursive: true });
      for (const name of Object.values(IDENTITY_FILES)) if (existsSync(join(keyDir, name))) renameSync(join(keyDir, name), join(archive, name));
    }
    const staging = join(keyDir, STAGING);
    for (const name of Object.values(IDENTITY_FILES)) if (existsSync(join(staging, name))) renameSync(join(staging, name), join(keyDir, name));
    rmSync(staging, { recursive: true, force: true });
    return files(keyDir);
  }

  /**
   * A crash between the rotation's commit and the file moves leaves the new key staged: the
   * database already announced it, so it must become current. A staged key the database never
   * recorded was never announced, and is dropped.
   */
  private static async settleInterruptedRotation(db: Db, keyDir: string, passphrase: string): Promise<void> {
    const staging = join(keyDir, STAGING);
    if (!existsSync(staging)) return;
    // The staged key's fingerprint, read without the passphrase: a mistyped passphrase or an I/O
    // error must stop the start-up, never delete a key the database may already have announced.
    const stagedFile = [IDENTITY_FILES.publicKey, IDENTITY_FILES.privateKey].map((name) => join(staging, name)).find((f) => existsSync(f));
    let stagedFingerprint: string | undefined;
    if (stagedFile) {
      try {
        stagedFingerprint = await fingerprintOf(readFileSync(stagedFile, 'utf8'));
      } catch {
        // A key file cut short by the crash, before the database could record it: never announced.
      }
    }
    const recorded = stagedFingerprint !== undefined && (await isKeyRecorded(db, stagedFingerprint));
    if (!recorded) {
      rmSync(staging, { recursive: true, force: true });
      return;
    }
    // Announced: it must become current. Its private key must open (else start-up fails here,
    // with nothing moved or deleted).
    await loadOrCreateIdentity(staging, { name: 'fedmark coordinator', passphrase });
    const current = existsSync(join(keyDir, IDENTITY_FILES.privateKey)) ? await loadOrCreateIdentity(keyDir, { name: 'fedmark coordinator', passphrase }) : undefined;
    CoordinatorKeyring.promoteStaged(keyDir, current?.fingerprint);
  }

  async publicInfo() {
    const history = await listKeyHistory(this.db);
    return {
      fingerprint: this.identity.fingerprint,
      publicKey: this.identity.publicKeyArmored,
      // Oldest first: a node pinned to an old key follows the chain of announcements.
      rotations: history.filter((h) => h.announcement).map((h) => ({ fingerprint: h.fingerprint, announcement: h.announcement!, at: new Date(h.created_at).toISOString() })),
    };
  }
}
