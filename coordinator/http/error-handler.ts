import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import { appendAudit } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import { AppError, NoRouteError, SignatureRefusedError } from '../errors.ts';

/** The catch-all after every route: a 404 naming the method and path. */
export const notFound: RequestHandler = (req, _res, next) => next(new NoRouteError(req.method, req.path));

const actorOf = (res: Response) => (res.locals.actor as string | undefined) ?? 'anonymous';
const statusOf = (err: unknown) => (typeof err === 'object' && err && 'status' in err ? Number((err as { status: number }).status) : undefined);

/**
 * The one place errors become statuses. Services throw the classes of coordinator/errors.ts;
 * express's own refusals (malformed JSON, a body over the limit) and stray zod errors are mapped
 * here too. Every refusal and authentication failure goes into the audit log, before the answer.
 * Internal details never leak: a 500 carries the request id.
 *
 * @example
 *   app.use(notFound);
 *   app.use(errorHandler({ db, log }));
 */
export function errorHandler(deps: { db: Db; log: Logger }): ErrorRequestHandler {
  const { db, log } = deps;
  // A failing audit write is logged but must not turn a 401 into a 500.
  const audit = (res: Response, kind: string, data: Record<string, unknown>) => appendAudit(db, { actor: actorOf(res), kind, data }).catch((auditErr) => log.error({ err: auditErr }, 'audit append failed'));

  return async (err: unknown, req: Request, res: Response, _next) => {
    const requestId = res.locals.requestId as string;
    if (err instanceof AppError) {
      if (err.status < 500 && !(err instanceof NoRouteError)) {
        await audit(res, err.status === 401 || err instanceof SignatureRefusedError ? 'auth.failed' : 'request.refused', { method: req.method, path: req.path, status: err.status, code: err.code, reason: err.message, requestId });
      }
      if (err.status >= 500) log.error({ err, requestId }, 'request failed');
      else log.info({ requestId, method: req.method, path: req.path, status: err.status, code: err.code, reason: err.message }, 'request refused');
      res.status(err.status).json({ error: { code: err.code, message: err.message, field: err.field, requestId } });
      return;
    }
    const status = statusOf(err);
    // Malformed JSON, bodies over the limit: refusals too.
    if (status !== undefined && status < 500) await audit(res, 'request.refused', { method: req.method, path: req.path, status, reason: err instanceof Error ? err.message : 'refused', requestId });
    if (err instanceof SyntaxError && status === 400) {
      res.status(400).json({ error: { code: 'VALIDATION_FAILED', message: `body is not valid JSON: ${err.message}`, field: 'body', requestId } });
      return;
    }
    if (err instanceof ZodError) {
      res.status(400).json({ error: { code: 'VALIDATION_FAILED', message: err.issues[0]?.message ?? 'invalid', requestId } });
      return;
    }
    if (typeof err === 'object' && err && 'type' in err && (err as { type: string }).type === 'entity.too.large') {
      res.status(413).json({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'request body too large', requestId } });
      return;
    }
    log.error({ err, requestId }, 'unexpected error');
    res.status(500).json({ error: { code: 'INTERNAL', message: `internal error (request ${requestId})`, requestId } });
  };
}
