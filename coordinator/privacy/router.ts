import type { IRouter } from 'express';
import { z } from 'zod';
import { Id } from '../../protocols/messages.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { Db } from '../db/database.ts';
import { ForbiddenError } from '../errors.ts';
import { route } from '../http/middleware.ts';
import { parse } from '../http/validate.ts';
import { nodePrivacyReport, privacyReport } from './privacy-report.ts';

const StudyParams = z.object({ studyId: Id });
const NodeParams = z.object({ studyId: Id, nodeId: Id });

/**
 * Privacy reports: a study's (admins, auditors) and one node's (admins and auditors for any node,
 * a node for itself only).
 *
 * @example
 *   registerPrivacyRoutes(app, { guard, db });
 */
export function registerPrivacyRoutes(app: IRouter, deps: { guard: RequestGuard; db: Db }) {
  const { guard } = deps;
  app.get('/v1/studies/:studyId/privacy', route(async (req, res) => {
    requireRole(await guard.who(req), 'admin', 'auditor');
    const { studyId } = parse(StudyParams, req.params, 'params');
    res.json(await privacyReport(deps.db, studyId));
  }));
  app.get('/v1/studies/:studyId/nodes/:nodeId/privacy', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'node');
    const { studyId, nodeId } = parse(NodeParams, req.params, 'params');
    if (p.role === 'node' && (p.id !== nodeId || p.node.studyId !== studyId)) throw new ForbiddenError(`node ${p.id} may read only its own privacy report`);
    res.json(await nodePrivacyReport(deps.db, studyId, nodeId));
  }));
}
