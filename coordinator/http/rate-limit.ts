import type { Request, RequestHandler, Response } from 'express';
import { rateLimit } from 'express-rate-limit';
import { authenticatedActor } from './refusals.ts';

export interface RateLimitSettings {
  /** Refusals of unauthenticated requests a source may cause per window; 0 turns the limit off. */
  refusalsPerWindow: number;
  windowSeconds: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitSettings = { refusalsPerWindow: 300, windowSeconds: 60 };

/**
 * The per-source limit on unauthenticated floods: the first middleware, so a throttled request
 * is answered 429 (with Retry-After) before its body is read, its credentials looked up or
 * anything is written.
 *
 * express-rate-limit (a fixed window per source address, IPv6 grouped by /56, kept in memory)
 * counts each request when it arrives and gives the count back when the request ends
 * authenticated or succeeds: what uses the allowance up is refusals of callers that are not
 * authenticated (401s, bad signatures, malformed requests from strangers, unknown paths), which is
 * what a flood is made of. Nodes, operators and analysts are never slowed by their own traffic,
 * and public reads (health, the coordinator key) and enrollments cost nothing once answered. A
 * source over the limit is refused everything until its window ends, its own authenticated
 * requests included: before authentication there is no telling them apart.
 *
 * @example
 *   app.use(refusalRateLimit({ refusalsPerWindow: 300, windowSeconds: 60 }, (req, res) => refusals.tally(...)));
 */
export function refusalRateLimit(settings: RateLimitSettings, onLimited: (req: Request, res: Response) => void): RequestHandler {
  if (settings.refusalsPerWindow <= 0) return (_req, _res, next) => next();
  return rateLimit({
    windowMs: settings.windowSeconds * 1000,
    limit: settings.refusalsPerWindow,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    skipSuccessfulRequests: true,
    requestWasSuccessful: (_req, res) => authenticatedActor(res) !== undefined || res.statusCode < 400,
    handler: (req, res) => {
      onLimited(req, res);
      const retryAfter = res.getHeader('retry-after');
      res.status(429).json({ error: { code: 'RATE_LIMITED', message: `too many refused requests from this address; retry after ${retryAfter ?? settings.windowSeconds} s`, requestId: res.locals.requestId as string | undefined } });
    },
  });
}
