import type { IRouter } from 'express';
import { z } from 'zod';
import { Id } from '../../protocols/messages.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { Db } from '../db/database.ts';
import { ForbiddenError } from '../errors.ts';
import { route } from '../http/middleware.ts';
import { parse } from '../http/validate.ts';
import { nodePrivacyReport, privacyReport, reportFor } from './privacy-report.ts';

const StudyParams = z.object({ studyId: Id });
const NodeParams = z.object({ studyId: Id, nodeId: Id });
/** ?reader=all: every reader's view and bound (admins and auditors); default: the caller's own. */
export const ReportQuery = z.object({ reader: z.enum(['all', 'own']).default('own') });

/**
 * Privacy reports: a study's (every role, each with the bound that holds against it; every node's
 * figures for admins and auditors only) and one node's (admins and auditors for any node,
 * a node for itself only).
 *
 * @example
 *   registerPrivacyRoutes(app, { guard, db });
 */
export function registerPrivacyRoutes(app: IRouter, deps: { guard: RequestGuard; db: Db }) {
  const { guard } = deps;
  // Every role may read the bound that holds against it (study access already checked that an
  // analyst's region, or the node, is in the study); only admins and auditors see every node.
  app.get('/v1/studies/:studyId/privacy', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'analyst', 'node');
    const { studyId } = parse(StudyParams, req.params, 'params');
    const { reader } = parse(ReportQuery, req.query, 'query');
    if (reader === 'all' && p.role !== 'admin' && p.role !== 'auditor') throw new ForbiddenError(`only admins and auditors may read every reader's view (${p.role} token ${p.id})`);
    res.json(reportFor(await privacyReport(deps.db, studyId), p.role, { all: reader === 'all', nodeId: p.role === 'node' ? p.id : undefined }));
  }));
  app.get('/v1/studies/:studyId/nodes/:nodeId/privacy', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'node');
    const { studyId, nodeId } = parse(NodeParams, req.params, 'params');
    if (p.role === 'node' && (p.id !== nodeId || p.node.studyId !== studyId)) throw new ForbiddenError(`node ${p.id} may read only its own privacy report`);
    res.json(await nodePrivacyReport(deps.db, studyId, nodeId));
  }));
}
