import type { IRouter } from 'express';
import { z } from 'zod';
import { Id, StudyConfig } from '../../protocols/messages.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { StudyAccess } from '../auth/study-access.ts';
import { json, route } from '../http/middleware.ts';
import type { ModelSender } from '../http/send-model.ts';
import { parse, VersionParam } from '../http/validate.ts';
import type { RoundService } from '../rounds/round-service.ts';
import type { StudyService } from './study-service.ts';
import { UnsupportedMediaTypeError } from '../errors.ts';

export const StudyParams = z.object({ studyId: Id });
const ModelParams = z.object({ studyId: Id, version: VersionParam });
/** An operator's stop: the reason shown in every view of the study (default: OPERATOR_STOP_REASON). */
const StopBody = z.strictObject({ reason: z.string().trim().min(1).max(1000).optional() });
const WatchQuery = z.object({ wait: z.coerce.number().min(0).max(120).default(0), seen: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(), fromRound: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional() });

export interface StudyRouterDeps {
  guard: RequestGuard;
  studies: StudyService;
  rounds: Pick<RoundService, 'waitForChange' | 'changeCount' | 'onNodeChanged'>;
  sendModel: ModelSender;
  maxTaskWaitSeconds: number;
  /** Which studies an analyst's list shows (auth/study-access.ts). */
  access: Pick<StudyAccess, 'visibleStudies'>;
}

/**
 * Studies and their global models: plan, create, list, status (followed with ?wait), stop, weights.
 *
 * @example
 *   registerStudyRoutes(app, { guard, studies, rounds, sendModel, maxTaskWaitSeconds: 30 });
 */
export function registerStudyRoutes(app: IRouter, deps: StudyRouterDeps) {
  const { guard, studies, rounds } = deps;
  app.post('/v1/studies', json, route(async (req, res) => {
    const caller = await guard.requireAdmin(req);
    const config = parse(StudyConfig, req.body, 'body');
    res.status(201).json(await studies.createStudy(config, res.locals.actor, caller));
  }));
  // The same schema and checks as creation, and the same policies, so the CLI's --dry-run and the API agree; writes nothing.
  app.post('/v1/studies/plan', json, route(async (req, res) => {
    const caller = await guard.requireAdmin(req);
    res.json(await studies.planStudy(parse(StudyConfig, req.body, 'body'), caller));
  }));
  app.post('/v1/studies/:studyId/stop', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    const { studyId } = parse(StudyParams, req.params, 'params');
    // A body that is not JSON would be skipped by the parser and the stop run with the default
    // reason: the operator's words must not be lost silently.
    if (Number(req.get('content-length') ?? 0) > 0 && !req.is('application/json')) throw new UnsupportedMediaTypeError('UNSUPPORTED_MEDIA_TYPE', `a stop's body is JSON ({"reason": "..."}), not ${req.get('content-type') ?? 'untyped'}`, 'body');
    const { reason } = parse(StopBody, req.body ?? {}, 'body');
    const result = await studies.stopStudy(studyId, res.locals.actor, reason);
    // Wakes whoever waits on the study: watchers' long polls, and nodes' task polls (which then see it ended).
    if (result.changed) rounds.onNodeChanged(studyId);
    res.json(result);
  }));
  app.get('/v1/studies', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'analyst');
    res.json({ studies: await deps.access.visibleStudies(p, await studies.listStudies()) });
  }));
  app.get('/v1/studies/:studyId', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'analyst');
    const { studyId } = parse(StudyParams, req.params, 'params');
    // ?wait=S&seen=N: hold the request until the study changes (N is the change count the caller
    // last saw), so a dashboard follows a study without polling it hard. ?fromRound=K: only rounds K
    // and later in `rounds` (a follower's poll then costs what changed, not every round so far).
    const { wait, seen, fromRound } = parse(WatchQuery, req.query, 'query');
    if (wait > 0) await rounds.waitForChange(studyId, Math.min(wait, deps.maxTaskWaitSeconds), seen);
    const status = await studies.getStatusFor(p, studyId, fromRound);
    res.json({ ...status, changeCount: rounds.changeCount(studyId) });
  }));
  // Global models: streamed as the binary codec's bytes, never as JSON.
  app.get('/v1/studies/:studyId/models/:version', route(async (req, res) => {
    const { studyId, version } = parse(ModelParams, req.params, 'params');
    await studies.authorizeModelRead(await guard.who(req), studyId);
    await deps.sendModel(res, await studies.getModel(studyId, version), { studyId, config: await studies.getConfig(studyId) });
  }));
  app.get('/v1/studies/:studyId/model', route(async (req, res) => {
    const { studyId } = parse(StudyParams, req.params, 'params');
    await studies.authorizeModelRead(await guard.who(req), studyId);
    await deps.sendModel(res, await studies.getModel(studyId), { studyId, config: await studies.getConfig(studyId) });
  }));
}
