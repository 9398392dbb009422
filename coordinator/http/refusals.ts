import type { Response } from 'express';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';

/**
 * Sizes of what a request may put into a log line, the audit log or the refusal counts. Every
 * field a client chooses (path, request id, user agent, ids, error messages quoting them) is cut
 * to these before it is logged or stored, so one request cannot write kilobytes.
 */
export const FIELD_LIMITS = { path: 256, requestId: 64, userAgent: 128, source: 64, actor: 128, reason: 120, method: 16, message: 300 } as const;

// Control characters and unpaired surrogates: PostgreSQL refuses a NUL or a lone surrogate in
// text and jsonb, and a log line should not carry terminal escapes.
const UNPRINTABLE = /[\p{Cc}\p{Cs}]/gu;

/**
 * `value` cut to `max` characters (marked as cut, with its full length, when it was longer), its
 * control characters and unpaired surrogates replaced by U+FFFD.
 */
export function bounded(value: unknown, max: number): string {
  const s = typeof value === 'string' ? value : String(value ?? '');
  const cut = s.length <= max ? s : `${s.slice(0, max)}...(${s.length} chars)`;
  return cut.replace(UNPRINTABLE, '\uFFFD');
}

/** A request id is echoed in a response header and stored: only a short, plain token is kept. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
export const acceptableRequestId = (value: string | undefined): value is string => value !== undefined && REQUEST_ID.test(value);

/**
 * Who the response says the caller is: `undefined` until a principal is verified. A node whose
 * signature was not (yet) checked is only `claimed-node:<id>`: not authenticated.
 */
export function authenticatedActor(res: Response): string | undefined {
  const actor = res.locals.actor as string | undefined;
  return actor && !actor.startsWith('claimed-node:') ? actor : undefined;
}

/** One refused request of a caller that is not authenticated. */
export interface Refusal {
  /** The client address (req.ip): the rate limit's key too. */
  source: string;
  /** `anonymous`, or `claimed-node:<id>` when a real node API key came with a bad signature. */
  actor: string;
  /** The error code (a short, fixed vocabulary: coordinator/errors.ts, error-handler.ts). */
  code: string;
  /** What the row counts: the code, or for a 401 the code and its message (see error-handler.ts). */
  reason: string;
  status: number;
  method: string;
  path: string;
  requestId: string;
  /** Whether the first of a minute goes into the audit log (not for a request that matched no route). */
  audited: boolean;
}

const minuteOf = (at: Date) => new Date(Math.floor(at.getTime() / 60_000) * 60_000);
const RETENTION_MS = 30 * 24 * 3600_000;
/** Distinct sources tallied between flushes; past it, throttled requests are tallied under one source (a flood from many addresses must not grow memory). */
const MAX_TALLIES = 10_000;
const PRUNE_EVERY_MS = 3600_000;

/**
 * Unauthenticated refusals, counted: one `refusal_counts` row per source, minute, claimed actor
 * and reason, its count raised by one per refusal (an upsert).
 *
 * What stays in the hash-chained audit log: ONE entry per row, written at the row's first refusal
 * (`auth.failed` for 401s and signature refusals, `request.refused` otherwise), with the source,
 * the minute and that first request's bounded method, path and request id. The log still shows
 * that a source was refused and why, and a flood of the same refusal grows a count, not the log:
 * at most one entry per source, minute, claimed actor and reason (the reasons and the actors a
 * stranger can claim, which need a real node API key, are fixed sets). Refusals of authenticated
 * callers are still audited one by one (they are accountable, and their tokens revocable).
 *
 * 429s of the rate limit are tallied in memory and written as counts every few seconds, so a
 * throttled flood costs no database work per request.
 *
 * @example
 *   const refusals = createRefusalLog({ db, log });
 *   await refusals.record({ source: '203.0.113.7', actor: 'anonymous', reason: 'UNAUTHENTICATED', status: 401, ... });
 */
export function createRefusalLog(deps: { db: Db; log: Logger; flushMs?: number }) {
  const { db, log } = deps;
  const tallies = new Map<string, Refusal & { count: number; minute: Date }>();
  let flushTimer: NodeJS.Timeout | undefined;
  let lastPrune = 0;

  /** Adds `count` refusals to their row; true when this made the row (the minute's first). */
  async function upsert(r: Refusal, minute: Date, count: number): Promise<boolean> {
    const sample = JSON.stringify({ method: bounded(r.method, FIELD_LIMITS.method), path: bounded(r.path, FIELD_LIMITS.path), requestId: bounded(r.requestId, FIELD_LIMITS.requestId) });
    const row = await db
      .insertInto('refusal_counts')
      .values({ source: bounded(r.source, FIELD_LIMITS.source), minute, actor: bounded(r.actor, FIELD_LIMITS.actor), reason: bounded(r.reason, FIELD_LIMITS.reason), status: r.status, count, sample })
      .onConflict((oc) => oc.columns(['source', 'minute', 'actor', 'reason']).doUpdateSet({ count: sql`refusal_counts.count + excluded.count`, last_at: sql`now()` }))
      .returning('count')
      .executeTakeFirstOrThrow();
    return Number(row.count) === count;
  }

  /** Rows older than the retention are deleted, at most hourly: the counts are not evidence, the audit entries are. */
  async function pruneNow(now: number) {
    if (now - lastPrune < PRUNE_EVERY_MS) return;
    lastPrune = now;
    await db.deleteFrom('refusal_counts').where('minute', '<', new Date(now - RETENTION_MS)).execute();
  }

  async function record(r: Refusal, at = new Date()): Promise<void> {
    const minute = minuteOf(at);
    const first = await upsert(r, minute, 1);
    if (first && r.audited) {
      const kind = r.status === 401 || r.reason.startsWith('SIGNATURE_') ? 'auth.failed' : 'request.refused';
      const data = { counted: true, source: bounded(r.source, FIELD_LIMITS.source), minute: minute.toISOString(), method: bounded(r.method, FIELD_LIMITS.method), path: bounded(r.path, FIELD_LIMITS.path), status: r.status, code: bounded(r.code, FIELD_LIMITS.reason), reason: bounded(r.reason, FIELD_LIMITS.reason), requestId: bounded(r.requestId, FIELD_LIMITS.requestId) };
      await appendAudit(db, { actor: bounded(r.actor, FIELD_LIMITS.actor), kind, data });
    }
    if (first) await pruneNow(at.getTime());
  }

  async function flush(): Promise<void> {
    if (flushTimer) clearTimeout(flushTimer);
    flushTimer = undefined;
    const pending = [...tallies.values()];
    tallies.clear();
    for (const t of pending) await upsert(t, t.minute, t.count);
  }

  /** A throttled request (429): counted in memory, written by the next flush. */
  function tally(r: Omit<Refusal, 'audited'>, at = new Date()) {
    const minute = minuteOf(at);
    if (tallies.size >= MAX_TALLIES) r = { ...r, source: 'many-sources', actor: 'anonymous' };
    const key = JSON.stringify([r.source, minute.getTime(), r.actor, r.reason]);
    const t = tallies.get(key);
    if (t) t.count++;
    else tallies.set(key, { ...r, audited: false, count: 1, minute });
    flushTimer ??= setTimeout(() => void flush().catch((err) => log.error({ err }, 'refusal counts flush failed')), deps.flushMs ?? 5_000);
    // A timer left pending must not keep a stopping coordinator (or a test run) alive.
    flushTimer.unref?.();
  }

  return { record, tally, flush };
}
export type RefusalLog = ReturnType<typeof createRefusalLog>;
