import type { IRouter } from 'express';
import { z } from 'zod';
import { json, route } from '../http/middleware.ts';
import { parse } from '../http/validate.ts';
import { Id } from '../../protocols/messages.ts';
import type { AuthService } from './principal.ts';
import type { RequestGuard } from './request-auth.ts';

const TokenParams = z.object({ id: Id });
/** A token request: an analyst token needs its region. */
export const CreateApiToken = z
  .object({ role: z.enum(['admin', 'auditor', 'analyst']), name: z.string().min(1).max(200), region: z.string().min(1).max(100).optional() })
  .refine((t) => t.role !== 'analyst' || t.region, { message: 'an analyst token needs a region', path: ['region'] });

/**
 * People's API tokens (admins only): issue, list, revoke; issuing and revoking are audited.
 *
 * @example
 *   registerTokenRoutes(app, { guard, auth });
 */
export function registerTokenRoutes(app: IRouter, deps: { guard: RequestGuard; auth: AuthService }) {
  const { guard, auth } = deps;
  app.post('/v1/tokens', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    const input = parse(CreateApiToken, req.body, 'body');
    res.status(201).json(await auth.issueToken(input, res.locals.actor));
  }));
  app.get('/v1/tokens', route(async (req, res) => {
    await guard.requireAdmin(req);
    res.json({ tokens: await auth.listTokens() });
  }));
  app.delete('/v1/tokens/:id', route(async (req, res) => {
    await guard.requireAdmin(req);
    const { id } = parse(TokenParams, req.params, 'params');
    await auth.revokeTokenAudited(id, res.locals.actor);
    res.status(204).end();
  }));
}
