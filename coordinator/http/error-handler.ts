import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import { appendAudit } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import { AppError, BadRequestError, NoRouteError, PayloadTooLargeError, SignatureRefusedError, UnauthenticatedError, UnsupportedMediaTypeError } from '../errors.ts';
import { authenticatedActor, bounded, FIELD_LIMITS, type RefusalLog } from './refusals.ts';

/** The catch-all after every route: a 404 naming the method and path (the path bounded). */
export const notFound: RequestHandler = (req, _res, next) => next(new NoRouteError(req.method, bounded(req.path, FIELD_LIMITS.path)));

const statusOf = (err: unknown) => (typeof err === 'object' && err && 'status' in err ? Number((err as { status: number }).status) : undefined);
const typeOf = (err: unknown) => (typeof err === 'object' && err && 'type' in err ? String((err as { type: unknown }).type) : undefined);
const messageOf = (err: unknown) => bounded(err instanceof Error ? err.message : String(err), FIELD_LIMITS.message);

/**
 * express's and body-parser's own refusals (http-errors with a status below 500 and a `type`),
 * a param express could not percent-decode, and stray zod errors, as the AppError naming the
 * field at fault. Each of these used to fall through to a 500. Their messages quote the client's
 * input (a charset, a param), so fixed sentences replace them. `undefined`: not a refusal.
 */
export function refusalOf(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err.status < 500 ? err : undefined;
  if (err instanceof ZodError) {
    const issue = err.issues[0];
    const field = issue?.path.map(String).join('.') || undefined;
    return new BadRequestError(bounded(issue?.message ?? 'invalid', FIELD_LIMITS.message), field, 'VALIDATION_FAILED');
  }
  const status = statusOf(err);
  if (status === undefined || !Number.isInteger(status) || status < 400 || status >= 500) return undefined;
  // Express 5's router: a path parameter that is not valid percent-encoding (`%zz`, `%E0%A4%A`).
  if (err instanceof URIError) return new BadRequestError('the path is not valid percent-encoding', 'path', 'BAD_PERCENT_ENCODING');
  switch (typeOf(err)) {
    case 'entity.parse.failed':
      return new BadRequestError(`body is not valid JSON: ${messageOf(err)}`, 'body', 'VALIDATION_FAILED');
    case 'entity.too.large':
      return new PayloadTooLargeError('request body too large (1 MB at most)');
    case 'charset.unsupported':
      return new UnsupportedMediaTypeError('UNSUPPORTED_CHARSET', 'unsupported charset: JSON bodies are read as UTF-8', 'headers.content-type');
    case 'encoding.unsupported':
      return new UnsupportedMediaTypeError('UNSUPPORTED_ENCODING', 'unsupported content encoding (identity, gzip, deflate or br)', 'headers.content-encoding');
    case 'request.size.invalid':
      return new BadRequestError('the body length does not match Content-Length', 'headers.content-length', 'BAD_REQUEST');
    case 'request.aborted':
      return new BadRequestError('the body could not be read to its end', 'body', 'INCOMPLETE_BODY');
    default:
      return new AppError(status, 'BAD_REQUEST', messageOf(err));
  }
}

/**
 * The one place errors become statuses. Services throw the classes of coordinator/errors.ts;
 * express's own refusals are mapped by `refusalOf`. Every refusal is accounted for before the
 * answer: an authenticated caller's in the audit log, one entry each; a stranger's counted per
 * source and minute (http/refusals.ts), the first of each minute audited. Every field taken from
 * the request is bounded first. Internal details never leak: a 500 carries the request id.
 *
 * @example
 *   app.use(notFound);
 *   app.use(errorHandler({ db, log, refusals }));
 */
export function errorHandler(deps: { db: Db; log: Logger; refusals: RefusalLog }): ErrorRequestHandler {
  const { db, log } = deps;

  // A failing audit or count write is logged but must not turn a 401 into a 500.
  async function account(refusal: AppError, req: Request, res: Response, requestId: string) {
    const actor = authenticatedActor(res);
    const path = bounded(req.path, FIELD_LIMITS.path);
    const method = bounded(req.method, FIELD_LIMITS.method);
    try {
      if (!actor) {
        const claimed = (res.locals.actor as string | undefined) ?? 'anonymous';
        // The reason is the code, a fixed vocabulary; for a 401 also its message (which names a
        // known credential, e.g. a revoked node, and never quotes the request): a revoked node's
        // attempts are counted, and audited, apart from a stranger's guesses.
        const reason = refusal instanceof UnauthenticatedError ? `${refusal.code}: ${refusal.message}` : refusal.code;
        await deps.refusals.record({ source: req.ip ?? 'unknown', actor: claimed, code: refusal.code, reason, status: refusal.status, method, path, requestId, audited: !(refusal instanceof NoRouteError) });
      } else {
        const kind = refusal.status === 401 || refusal instanceof SignatureRefusedError ? 'auth.failed' : 'request.refused';
        await appendAudit(db, { actor, kind, data: { method, path, status: refusal.status, code: refusal.code, field: refusal.field, reason: bounded(refusal.message, FIELD_LIMITS.message), requestId } });
      }
    } catch (err) {
      log.error({ err }, 'recording a refusal failed');
    }
  }

  return async (err: unknown, req: Request, res: Response, _next) => {
    const requestId = (res.locals.requestId as string | undefined) ?? 'none';
    const refusal = refusalOf(err);
    if (!refusal) {
      log.error({ err, requestId }, 'unexpected error');
      // A failure after a model's bytes started going out: the answer cannot change any more.
      if (res.headersSent) res.destroy();
      else res.status(500).json({ error: { code: 'INTERNAL', message: `internal error (request ${requestId})`, requestId } });
      return;
    }
    await account(refusal, req, res, requestId);
    // The metrics middleware (http/metrics.ts) counts refusals by this code.
    res.locals.refusalCode = refusal.code;
    log.info({ requestId, method: req.method, path: bounded(req.path, FIELD_LIMITS.path), status: refusal.status, code: refusal.code, reason: bounded(refusal.message, FIELD_LIMITS.message) }, 'request refused');
    if (res.headersSent) res.destroy();
    else res.status(refusal.status).json({ error: { code: refusal.code, message: bounded(refusal.message, FIELD_LIMITS.message), field: refusal.field, requestId } });
  };
}
