import type { IRouter } from 'express';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { json, route } from '../http/middleware.ts';

/**
 * The coordinator's own key: its public part (anyone), and rotation (admins).
 *
 * @example
 *   registerKeyRoutes(app, { guard, keyring });
 */
export function registerKeyRoutes(app: IRouter, deps: { guard: RequestGuard; keyring: Pick<CoordinatorKeyring, 'publicInfo' | 'rotate'> }) {
  app.get('/v1/coordinator/key', route(async (_req, res) => {
    res.json(await deps.keyring.publicInfo());
  }));
  app.post('/v1/coordinator/key/rotate', json, route(async (req, res) => {
    await deps.guard.requireAdmin(req);
    // The key and its `coordinator.key-rotated` audit entry commit together (see keyring.rotate).
    res.status(201).json(await deps.keyring.rotate(res.locals.actor));
  }));
}
