import { ManifestSignature, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { AuditEntry, Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IDENTITY_FILES, loadPrivateKey } from '../../protocols/crypto/keys.ts';
import { openDatabase } from '../db/database.ts';
import { AUDIT_HEAD_FILE, readSignedHead, requireExtendsSignedHead } from './audit-head.ts';
import { firstCoordinatorKey, readAuditLog } from './audit-log.ts';

/** `fedmark audit export --coordinator URL --token T`: through the API, with an auditor token (an admin token works too). */
export async function exportFromCoordinator(opts: { coordinator: string; token: string; out: string }): Promise<void> {
  const res = await fetch(new URL('/v1/audit/export', opts.coordinator), { headers: { authorization: `Bearer ${opts.token}` } });
  if (!res.ok) throw new Error(`the coordinator refused the export (${res.status}): ${await res.text()}`);
  const body = (await res.json()) as { entries: unknown[]; checkpoints: unknown[]; coordinatorPublicKey: string; exportedAt: string; manifestSignature?: unknown };
  await writeAuditExport(opts.out, {
    entries: body.entries.map((e) => AuditEntry.parse(e)),
    checkpoints: body.checkpoints.map((c) => Checkpoint.parse(c)),
    coordinatorPublicKeyArmored: body.coordinatorPublicKey,
    exportedAt: body.exportedAt,
    source: opts.coordinator,
    // The coordinator's signature over this very export: written as it came, judged by the verifier.
    ...(body.manifestSignature !== undefined ? { manifestSignature: ManifestSignature.parse(body.manifestSignature) } : {}),
  });
}

/**
 * `fedmark audit export --database-url URL | --data-dir DIR`: straight from the database, no
 * coordinator needed (and none trusted: the verifier checks what it reads). The manifest is
 * signed only when the coordinator's key folder is given (`keyDir`, with its passphrase): then the
 * database must also extend the head the coordinator signed last (audit-head.json beside the key),
 * as for an export through the coordinator. Without the key, `audit verify` needs
 * --allow-unsigned-manifest.
 */
export async function exportFromDatabase(opts: { databaseUrl?: string; dataDir?: string; out: string; keyDir?: string; passphrase?: string }): Promise<void> {
  const signingKey = opts.keyDir ? await coordinatorSigningKey(opts.keyDir, opts.passphrase) : undefined;
  // Read-only and never migrated: the export must not change the database it reports on.
  const { db } = await openDatabase({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, mode: 'read-only' });
  try {
    const log = await db.transaction().execute(async (tx) => {
      if (opts.keyDir) {
        const signed = readSignedHead(join(opts.keyDir, AUDIT_HEAD_FILE));
        const head = await tx.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirstOrThrow();
        if (signed) await requireExtendsSignedHead(tx, signed, head);
      }
      return readAuditLog(tx);
    });
    const source = opts.databaseUrl ? 'postgresql' : `pglite:${opts.dataDir}`;
    await writeAuditExport(opts.out, { ...log, coordinatorPublicKeyArmored: await firstCoordinatorKey(db), exportedAt: new Date().toISOString(), source, ...(signingKey ? { signingKey } : {}) });
  } finally {
    await db.destroy();
  }
}

/** The coordinator's current private key from its key folder; never creates one (an export must not mint a coordinator identity). */
async function coordinatorSigningKey(keyDir: string, passphrase: string | undefined) {
  if (!passphrase) throw new Error('--key-dir needs the key passphrase in FEDMARK_KEY_PASSPHRASE (or FEDMARK_KEY_PASSPHRASE_FILE)');
  const path = join(keyDir, IDENTITY_FILES.privateKey);
  let armored: string;
  try {
    armored = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: no coordinator key there (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return loadPrivateKey(armored, passphrase);
}
