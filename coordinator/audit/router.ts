import type { IRouter } from 'express';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { Db } from '../db/database.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { route } from '../http/middleware.ts';
import { exportAuditLog } from './audit-log.ts';

/**
 * The auditor's export (admins and auditors): a fresh signed checkpoint first, so no entry is
 * left unsigned, then every entry, checkpoint and the coordinator's first key.
 *
 * @example
 *   registerAuditRoutes(app, { guard, db, keyring });
 */
export function registerAuditRoutes(app: IRouter, deps: { guard: RequestGuard; db: Db; keyring: Pick<CoordinatorKeyring, 'current'> }) {
  app.get('/v1/audit/export', route(async (req, res) => {
    requireRole(await deps.guard.who(req), 'admin', 'auditor');
    res.json(await exportAuditLog(deps.db, deps.keyring));
  }));
}
