import express from 'express';
import type { Logger } from 'pino';
import { registerAuditRoutes } from '../audit/router.ts';
import type { AuthService } from '../auth/principal.ts';
import { createRequestGuard } from '../auth/request-auth.ts';
import { createStudyAccess } from '../auth/study-access.ts';
import { registerTokenRoutes } from '../auth/router.ts';
import type { Db } from '../db/database.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { registerKeyRoutes } from '../keys/router.ts';
import type { NodeService } from '../nodes/node-service.ts';
import { registerNodeRoutes } from '../nodes/router.ts';
import type { PolicyService } from '../policies/policy-service.ts';
import { registerPolicyRoutes } from '../policies/router.ts';
import { registerPrivacyRoutes } from '../privacy/router.ts';
import { registerRegionRoutes } from '../regions/router.ts';
import type { RoundService } from '../rounds/round-service.ts';
import { registerRoundRoutes } from '../rounds/router.ts';
import { registerStudyRoutes } from '../studies/router.ts';
import type { StudyService } from '../studies/study-service.ts';
import { errorHandler, notFound } from './error-handler.ts';
import { requestContext } from './middleware.ts';
import { DEFAULT_RATE_LIMIT, refusalRateLimit, type RateLimitSettings } from './rate-limit.ts';
import { bounded, createRefusalLog, FIELD_LIMITS } from './refusals.ts';
import { createModelSender } from './send-model.ts';
import { createTaskModelInliner, DEFAULT_TASK_MODEL_INLINE_BYTES } from '../rounds/task-model.ts';
import { registerParamValidators } from './validate.ts';
import { registerOpenApiRoutes } from './openapi.ts';
import { createCoordinatorMetrics, registerMetricsRoutes, type CoordinatorMetrics } from './metrics.ts';
import { registerDashboardRoutes } from '../dashboard/router.ts';

export interface AppDeps {
  auth: AuthService;
  policies: PolicyService;
  keyring: CoordinatorKeyring;
  maxClockSkewSeconds: number;
  studies: StudyService;
  nodes: NodeService;
  rounds: RoundService;
  log: Logger;
  maxTaskWaitSeconds: number;
  db: Db;
  /** The per-source limit on unauthenticated refusals (default DEFAULT_RATE_LIMIT). */
  rateLimit?: RateLimitSettings;
  /** express's `trust proxy` (behind a TLS proxy: which hops' X-Forwarded-For to believe); unset: the socket's address. */
  trustProxy?: string;
  /** Tasks carry models up to this many bytes (Task.model; default DEFAULT_TASK_MODEL_INLINE_BYTES, 0: never). */
  taskModelInlineBytes?: number;
  /** The coordinator's metrics (http/metrics.ts); a fresh set when absent. */
  metrics?: CoordinatorMetrics;
}

/**
 * The coordinator's HTTP API: each feature's routes (router -> service -> repository), then one
 * 404 and one error handler. Routes are registered on the app itself, not on sub-routers, so the
 * app's route table lists every route.
 *
 * @example
 *   const app = createApp({ db, auth, policies, studies, nodes, rounds, log, keyring, maxTaskWaitSeconds: 30, maxClockSkewSeconds: 300 });
 */
export function createApp(deps: AppDeps) {
  const { db, keyring, studies, rounds, maxTaskWaitSeconds } = deps;
  const app = express();
  app.disable('x-powered-by');
  // No ETags: no client revalidates (nodes and the CLI never send If-None-Match, models carry
  // their SHA-256), yet express hashed every JSON answer for one and, to hash it, turned the body
  // into a Buffer handed to the socket apart from the headers; without, an answer under 1000
  // characters goes as one string with its headers (issue 13: the coordinator's per-request cost).
  app.set('etag', false);
  if (deps.trustProxy) app.set('trust proxy', /^\d+$/.test(deps.trustProxy) ? Number(deps.trustProxy) : deps.trustProxy);
  const refusals = createRefusalLog({ db, log: deps.log });
  // Tests flush the in-memory 429 tallies through this.
  app.locals.refusals = refusals;
  app.use(requestContext(deps.log));
  // Before the rate limit, so its 429s are counted too.
  const metrics = deps.metrics ?? createCoordinatorMetrics();
  app.use(metrics.httpMiddleware);
  // First real work: a source over its allowance of refusals is answered 429 here, before its
  // body is read or its credentials are looked up (http/rate-limit.ts).
  app.use(refusalRateLimit(deps.rateLimit ?? DEFAULT_RATE_LIMIT, (req, res) =>
    refusals.tally({ source: req.ip ?? 'unknown', actor: 'anonymous', code: 'RATE_LIMITED', reason: 'RATE_LIMITED', status: 429, method: req.method, path: bounded(req.path, FIELD_LIMITS.path), requestId: res.locals.requestId as string }),
  ));
  const guard = createRequestGuard({ auth: deps.auth, db, maxClockSkewSeconds: deps.maxClockSkewSeconds });
  const access = createStudyAccess({ guard, db });
  // Every route parameter is validated before its route runs; a study's are readable only by who
  // may see that study (auth/study-access.ts).
  registerParamValidators(app, { studyId: access.check });
  const sendModel = createModelSender(keyring);

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  registerStudyRoutes(app, { guard, studies, rounds, sendModel, maxTaskWaitSeconds, access });
  const withModel = createTaskModelInliner({ studies, signatureOf: sendModel.currentSignature, maxBytes: deps.taskModelInlineBytes ?? DEFAULT_TASK_MODEL_INLINE_BYTES });
  registerRoundRoutes(app, { guard, studies, rounds, keyring, maxTaskWaitSeconds, withModel, log: deps.log });
  registerTokenRoutes(app, { guard, auth: deps.auth });
  registerPrivacyRoutes(app, { guard, db });
  registerNodeRoutes(app, { guard, nodes: deps.nodes, studies, policies: deps.policies, keyring });
  registerKeyRoutes(app, { guard, keyring });
  registerAuditRoutes(app, { guard, db, keyring });
  registerPolicyRoutes(app, { guard, policies: deps.policies });
  registerRegionRoutes(app, { guard, db, sendModel });
  registerMetricsRoutes(app, { guard, metrics, db });
  registerOpenApiRoutes(app);
  registerDashboardRoutes(app, { guard, db, access });

  app.use(notFound);
  app.use(errorHandler({ db, log: deps.log, refusals }));
  return app;
}
