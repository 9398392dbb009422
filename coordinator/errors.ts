/**
 * The coordinator's error vocabulary. Services throw these; one handler (http/error-handler.ts)
 * maps them to statuses, so no route decides a status code on its own.
 */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}
export class BadRequestError extends AppError {
  constructor(message: string, field?: string, code = 'BAD_REQUEST') {
    super(400, code, message, field);
  }
}
/**
 * 401. Its message is made by the coordinator from what it holds (an unknown or revoked token, a
 * node revoked at a time), never quoting the request: refusal counts key on it (http/refusals.ts),
 * so a revoked credential's use stays apart from a stranger's guesses.
 */
export class UnauthenticatedError extends AppError {
  constructor(message = 'missing or invalid bearer token') {
    super(401, 'UNAUTHENTICATED', message);
  }
}
export class ForbiddenError extends AppError {
  constructor(message: string) {
    super(403, 'FORBIDDEN', message);
  }
}
export class NotFoundError extends AppError {
  constructor(message: string) {
    super(404, 'NOT_FOUND', message);
  }
}
export class ConflictError extends AppError {
  /** `field`: the request field the conflict is about (e.g. a token's jurisdiction), when there is one. */
  constructor(code: string, message: string, field?: string) {
    super(409, code, message, field);
  }
}
/**
 * 409 POLICY_VIOLATION: a study breaks the current policy of a jurisdiction it plans (issue 12);
 * the message names each jurisdiction and rule, `field` the study field of the first.
 */
export class PolicyViolationError extends AppError {
  constructor(message: string, field?: string) {
    super(409, 'POLICY_VIOLATION', message, field);
  }
}
export class PayloadTooLargeError extends AppError {
  constructor(message: string, field = 'body') {
    super(413, 'PAYLOAD_TOO_LARGE', message, field);
  }
}
/** A body in a charset or content encoding the coordinator does not read. */
export class UnsupportedMediaTypeError extends AppError {
  constructor(code: string, message: string, field: string) {
    super(415, code, message, field);
  }
}
/** No route for this method and path (not audited: it refuses nothing). */
export class NoRouteError extends AppError {
  constructor(method: string, path: string) {
    super(404, 'NOT_FOUND', `no route ${method} ${path}`);
  }
}

/** Signature failures that are about the key itself (a key that is revoked, expired, or not the pinned one): 403; any other: 401. */
const KEY_REASONS = new Set(['revoked-key', 'expired-key', 'key-mismatch']);

/** A node's request signature was refused; the code names the reason (SIGNATURE_STALE_TIMESTAMP...). */
export class SignatureRefusedError extends AppError {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super(KEY_REASONS.has(reason) ? 403 : 401, `SIGNATURE_${reason.toUpperCase().replace(/-/g, '_')}`, `request signature refused (${reason}): ${detail}`);
  }
}
