import type { IRouter } from 'express';
import { z } from 'zod';
import { Id } from '../../protocols/messages.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import { authorizeRegion } from '../auth/visibility.ts';
import type { Db } from '../db/database.ts';
import { route } from '../http/middleware.ts';
import type { ModelSender } from '../http/send-model.ts';
import { MAX_INT32, parse, RegionParam } from '../http/validate.ts';
import { getRegionalModel, regionalReport } from './regional-models.ts';

const RegionParams = z.object({ studyId: Id, region: RegionParam });
// A version past the integer column's range is a 400, not a database overflow.
export const RegionalModelQuery = z.object({ version: z.coerce.number().int().positive().max(MAX_INT32).optional() });

/**
 * Regional views: a regional team (analyst) reads its own region's metrics and regional models;
 * auditors read the metrics (never weights); nodes have their own tasks only.
 *
 * @example
 *   registerRegionRoutes(app, { guard, db, sendModel });
 */
export function registerRegionRoutes(app: IRouter, deps: { guard: RequestGuard; db: Db; sendModel: ModelSender }) {
  const { guard } = deps;
  app.get('/v1/studies/:studyId/regions/:region', route(async (req, res) => {
    const { studyId, region } = parse(RegionParams, req.params, 'params');
    authorizeRegion(await guard.who(req), region, 'admin', 'auditor', 'analyst');
    res.json(await regionalReport(deps.db, studyId, region));
  }));
  app.get('/v1/studies/:studyId/regions/:region/model', route(async (req, res) => {
    const { studyId, region } = parse(RegionParams, req.params, 'params');
    const { version } = parse(RegionalModelQuery, req.query, 'query');
    authorizeRegion(await guard.who(req), region, 'admin', 'analyst');
    await deps.sendModel(res, await getRegionalModel(deps.db, studyId, region, version));
  }));
}
