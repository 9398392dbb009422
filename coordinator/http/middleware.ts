import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { acceptableRequestId, bounded, FIELD_LIMITS } from './refusals.ts';

/**
 * An async handler whose rejection goes to the error handler.
 *
 * @example
 *   app.get('/healthz', route(async (_req, res) => { res.json({ ok: true }); }));
 */
export type Handler = (req: Request, res: Response) => Promise<void>;
export const route = (fn: Handler): RequestHandler => (req: Request, res: Response, next: NextFunction) => fn(req, res).catch(next);

/**
 * Gives each request an id (the caller's x-request-id when it is a short plain token, else a new
 * one: it is echoed in a header and stored with refusals) and logs the request when it finishes,
 * its path cut to a bounded length.
 */
export function requestContext(log: Logger): RequestHandler {
  return (req, res, next) => {
    const given = req.get('x-request-id');
    const id = acceptableRequestId(given) ? given : randomUUID();
    res.locals.requestId = id;
    res.set('x-request-id', id);
    const started = performance.now();
    res.on('finish', () => log.debug({ method: req.method, path: bounded(req.path, FIELD_LIMITS.path), status: res.statusCode, ms: performance.now() - started, actor: res.locals.actor }, 'request'));
    next();
  };
}

// With the u flag a surrogate pair is one code point: \p{Cs} matches only an unpaired half.
const NUL_OR_LONE_SURROGATE = /[\0\p{Cs}]/u;
/**
 * A JSON body's strings (and keys) must be well-formed text without NUL: PostgreSQL stores
 * neither a NUL nor a lone surrogate in text or jsonb, and would fail the request with a 500.
 * Thrown inside JSON.parse, this becomes body-parser's 400 (entity.parse.failed).
 */
export function wellFormedStrings(key: string, value: unknown): unknown {
  for (const s of typeof value === 'string' ? [key, value] : [key]) {
    if (NUL_OR_LONE_SURROGATE.test(s)) throw new SyntaxError(`a string in the JSON (at key "${bounded(key, 40)}") holds a NUL or an unpaired surrogate`);
  }
  return value;
}

type BodyRequest = Request & { rawBody?: Uint8Array; mayHoldBadStrings?: boolean };

const BACKSLASH_U = Buffer.from('\\u');
/**
 * Whether JSON text could parse to a string (or key) that wellFormedStrings refuses: only through
 * a \u escape, since a raw NUL is not valid JSON anywhere and decoding UTF-8 never yields a lone
 * surrogate. Other charsets (UTF-16 may carry lone surrogates as such) are always checked.
 */
const mayHoldBadStrings = (buf: Buffer, encoding: string) => !/^utf-?8$/i.test(encoding) || buf.includes(BACKSLASH_U);

/** wellFormedStrings over a parsed value, iteratively (a 1 MB body may nest deeper than the stack). */
function requireWellFormedStrings(root: unknown): void {
  const stack: Array<[string, unknown]> = [['', root]];
  while (stack.length > 0) {
    const [key, value] = stack.pop()!;
    wellFormedStrings(key, value);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push([String(i), value[i]]);
    } else if (value !== null && typeof value === 'object') {
      for (const entry of Object.entries(value)) stack.push(entry);
    }
  }
}

/**
 * JSON text decoded from UTF-8, parsed with wellFormedStrings' check made only when the text holds
 * a \u escape (as `json` does for bodies): throws SyntaxError for invalid JSON or a refused string.
 */
export function parseWellFormedJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  if (text.includes('\\u')) requireWellFormedStrings(value);
  return value;
}

const parseJsonBody = express.json({
  limit: '1mb',
  verify: (req, _res, buf, encoding) => {
    (req as BodyRequest).rawBody = new Uint8Array(buf);
    (req as BodyRequest).mayHoldBadStrings = mayHoldBadStrings(buf, encoding);
  },
});

/**
 * JSON bodies up to 1 MB, keeping the exact bytes: node requests are signed over them, not over
 * re-serialized JSON. Strings are checked with wellFormedStrings only when the bytes hold a \u
 * escape: a JSON.parse reviver is called for every value, and an evaluation report's 2000
 * histogram counts took 1.6 ms to parse with it, 0.12 ms without (issue 13: body-parser was ~0.5 s
 * of the demo coordinator's CPU). A refused string is body-parser's 400 (entity.parse.failed), as before.
 */
export const json: RequestHandler = (req, res, next) =>
  parseJsonBody(req, res, (err?: unknown) => {
    if (err || !(req as BodyRequest).mayHoldBadStrings) return next(err);
    try {
      requireWellFormedStrings(req.body);
    } catch (refused) {
      return next(Object.assign(refused as Error, { status: 400, statusCode: 400, expose: true, type: 'entity.parse.failed' }));
    }
    next();
  });

/** The body bytes `json` kept (empty when there was no JSON body). */
export const rawBodyOf = (req: Request): Uint8Array => (req as BodyRequest).rawBody ?? new Uint8Array(0);
