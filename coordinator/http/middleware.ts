import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';

/**
 * An async handler whose rejection goes to the error handler.
 *
 * @example
 *   app.get('/healthz', route(async (_req, res) => { res.json({ ok: true }); }));
 */
export type Handler = (req: Request, res: Response) => Promise<void>;
export const route = (fn: Handler): RequestHandler => (req: Request, res: Response, next: NextFunction) => fn(req, res).catch(next);

/** Gives each request an id (the caller's x-request-id, or a new one) and logs it when it finishes. */
export function requestContext(log: Logger): RequestHandler {
  return (req, res, next) => {
    const id = req.get('x-request-id') ?? randomUUID();
    res.locals.requestId = id;
    res.set('x-request-id', id);
    const started = performance.now();
    res.on('finish', () => log.debug({ method: req.method, path: req.path, status: res.statusCode, ms: performance.now() - started, actor: res.locals.actor }, 'request'));
    next();
  };
}

/** JSON bodies up to 1 MB, keeping the exact bytes: node requests are signed over them, not over re-serialized JSON. */
export const json: RequestHandler = express.json({
  limit: '1mb',
  verify: (req, _res, buf) => {
    (req as Request & { rawBody?: Uint8Array }).rawBody = new Uint8Array(buf);
  },
});

/** The body bytes `json` kept (empty when there was no JSON body). */
export const rawBodyOf = (req: Request): Uint8Array => (req as Request & { rawBody?: Uint8Array }).rawBody ?? new Uint8Array(0);
