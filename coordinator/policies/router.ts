import type { IRouter } from 'express';
import { PolicyProfile } from '../../protocols/policy/jurisdiction-policy.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import { json, route } from '../http/middleware.ts';
import { parse } from '../http/validate.ts';
import type { PolicyService } from './policy-service.ts';

const NewPolicy = PolicyProfile.omit({ version: true });

/**
 * Jurisdiction policy profiles: every version listed (admins, auditors); a change published as a
 * new version (admins).
 *
 * @example
 *   registerPolicyRoutes(app, { guard, policies });
 */
export function registerPolicyRoutes(app: IRouter, deps: { guard: RequestGuard; policies: PolicyService }) {
  const { guard, policies } = deps;
  app.get('/v1/policies', route(async (req, res) => {
    requireRole(await guard.who(req), 'admin', 'auditor');
    res.json({ policies: await policies.list() });
  }));
  app.post('/v1/policies', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    res.status(201).json(await policies.publish(parse(NewPolicy, req.body, 'body'), res.locals.actor));
  }));
}
