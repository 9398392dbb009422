import { ManifestSignature, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { AuditEntry, Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { openDatabase } from '../db/database.ts';
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
 * coordinator needed (and none trusted: the verifier checks what it reads). Without the
 * coordinator key the manifest is unsigned: `audit verify` then needs --allow-unsigned-manifest.
 */
export async function exportFromDatabase(opts: { databaseUrl?: string; dataDir?: string; out: string }): Promise<void> {
  // Read-only and never migrated: the export must not change the database it reports on.
  const { db } = await openDatabase({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, mode: 'read-only' });
  try {
    const log = await readAuditLog(db);
    await writeAuditExport(opts.out, { ...log, coordinatorPublicKeyArmored: await firstCoordinatorKey(db), exportedAt: new Date().toISOString(), source: opts.databaseUrl ? 'postgresql' : `pglite:${opts.dataDir}` });
  } finally {
    await db.destroy();
  }
}
