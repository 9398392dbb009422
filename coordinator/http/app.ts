import express from 'express';
import type { Logger } from 'pino';
import { registerAuditRoutes } from '../audit/router.ts';
import type { AuthService } from '../auth/principal.ts';
import { createRequestGuard } from '../auth/request-auth.ts';
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
import { createModelSender } from './send-model.ts';

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
  app.use(requestContext(deps.log));
  const guard = createRequestGuard({ auth: deps.auth, db, maxClockSkewSeconds: deps.maxClockSkewSeconds });
  const sendModel = createModelSender(keyring);

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  registerStudyRoutes(app, { guard, studies, rounds, sendModel, maxTaskWaitSeconds });
  registerRoundRoutes(app, { guard, studies, rounds, keyring, maxTaskWaitSeconds });
  registerTokenRoutes(app, { guard, auth: deps.auth });
  registerPrivacyRoutes(app, { guard, db });
  registerNodeRoutes(app, { guard, nodes: deps.nodes, studies, policies: deps.policies, keyring });
  registerKeyRoutes(app, { guard, keyring });
  registerAuditRoutes(app, { guard, db, keyring });
  registerPolicyRoutes(app, { guard, policies: deps.policies });
  registerRegionRoutes(app, { guard, db, sendModel });

  app.use(notFound);
  app.use(errorHandler({ db, log: deps.log }));
  return app;
}
