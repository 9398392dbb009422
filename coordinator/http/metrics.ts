import type { Express, RequestHandler } from 'express';
import type { LogEvent } from 'kysely';
import type { Socket } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { Db } from '../db/database.ts';
import { countStudiesAndRounds } from '../rounds/round-repository.ts';
import type { RoundObservation } from '../rounds/round-service.ts';
import { route } from './middleware.ts';

/** The route label of a request that matched no route: never the raw path (unbounded label values). */
export const UNMATCHED_ROUTE = 'unmatched';
/** The route an update is posted to: its refusals are counted apart (`fedmark_updates_refused_total`). */
const UPDATE_ROUTE = '/v1/studies/:studyId/rounds/:round/updates';

/**
 * The coordinator's Prometheus metrics, on a registry of its own (not prom-client's global one:
 * several coordinators in one test process must not share or collide on counters). One per
 * coordinator, made before the database is opened so query durations are observed from the
 * first migration on, and fed by three hooks: the kysely `log` hook (`onQuery`), the round
 * service's observations (`onRound`) and an HTTP middleware (`httpMiddleware`). The error
 * handler leaves the refusal's code in `res.locals.refusalCode` for the middleware to count.
 *
 * @example
 *   const metrics = createCoordinatorMetrics();
 *   const { db } = await openDatabase({ ..., log: metrics.onQuery });
 *   const rounds = createRoundService({ ..., observe: metrics.onRound });
 *   const app = createApp({ ..., metrics });
 */
export function createCoordinatorMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const m = {
    rounds: new Counter({ name: 'fedmark_rounds_total', help: 'Rounds ended, by outcome (completed, failed).', labelNames: ['outcome'], registers }),
    studiesEnded: new Counter({ name: 'fedmark_studies_ended_total', help: 'Studies ended, by outcome (completed: every round run; stopped: ended early by a policy, the budget or an operator).', labelNames: ['outcome'], registers }),
    roundsOpened: new Counter({ name: 'fedmark_rounds_opened_total', help: 'Rounds opened.', registers }),
    updatesReceived: new Counter({ name: 'fedmark_updates_received_total', help: 'Node updates accepted (a replayed update is not counted again).', registers }),
    updateBytes: new Counter({ name: 'fedmark_update_bytes_received_total', help: 'Bytes of accepted node updates (the opened weights).', registers }),
    updatesRefused: new Counter({ name: 'fedmark_updates_refused_total', help: 'Update submissions refused, by error code.', labelNames: ['code'], registers }),
    evaluationsReceived: new Counter({ name: 'fedmark_evaluations_received_total', help: 'Node evaluation reports stored.', registers }),
    refusals: new Counter({ name: 'fedmark_refusals_total', help: 'Refused requests (status >= 400), by error code and status.', labelNames: ['code', 'status'], registers }),
    phase: new Histogram({ name: 'fedmark_round_phase_duration_seconds', help: 'Round phase durations: fit (open to aggregated or failed), aggregate (the closing transaction), evaluate (aggregated to completed). Rounds resumed after a restart are not observed.', labelNames: ['phase'], buckets: [0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600, 14_400, 86_400], registers }),
    query: new Histogram({ name: 'fedmark_db_query_duration_seconds', help: 'Database query durations, by statement kind (select, insert, update, delete, other) and outcome.', labelNames: ['operation', 'outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers }),
    requests: new Counter({ name: 'fedmark_http_requests_total', help: 'HTTP requests answered, by method, route (the route template, or "unmatched") and status.', labelNames: ['method', 'route', 'status'], registers }),
    requestSeconds: new Histogram({ name: 'fedmark_http_request_duration_seconds', help: 'HTTP request durations, by method and route.', labelNames: ['method', 'route'], buckets: [0.005, 0.025, 0.1, 0.5, 2, 10, 30, 120], registers }),
    received: new Counter({ name: 'fedmark_http_received_bytes_total', help: 'Bytes read from clients (request lines, headers and bodies), by route.', labelNames: ['route'], registers }),
    sent: new Counter({ name: 'fedmark_http_sent_bytes_total', help: 'Bytes written to clients (status lines, headers and bodies: models included), by route.', labelNames: ['route'], registers }),
  };
  // When each open phase of a round began (performance.now()), for the phase histograms.
  const phaseStarted = new Map<string, number>();

  function onQuery(event: LogEvent): void {
    const operation = /^\s*(select|insert|update|delete)\b/i.exec(event.query.sql)?.[1]?.toLowerCase() ?? 'other';
    m.query.observe({ operation, outcome: event.level === 'error' ? 'error' : 'ok' }, event.queryDurationMillis / 1000);
  }

  function onRound(o: RoundObservation): void {
    const key = `${o.studyId}/${o.round}`;
    const since = (phase: string) => {
      const started = phaseStarted.get(key);
      if (started !== undefined) m.phase.observe({ phase }, (performance.now() - started) / 1000);
    };
    switch (o.kind) {
      case 'opened':
        m.roundsOpened.inc();
        phaseStarted.set(key, performance.now());
        break;
      case 'aggregated':
        since('fit');
        m.phase.observe({ phase: 'aggregate' }, o.aggregateMs / 1000);
        phaseStarted.set(key, performance.now());
        break;
      case 'failed':
        since('fit');
        phaseStarted.delete(key);
        m.rounds.inc({ outcome: 'failed' });
        break;
      case 'completed':
        since('evaluate');
        phaseStarted.delete(key);
        m.rounds.inc({ outcome: 'completed' });
        break;
      case 'study-ended':
        m.studiesEnded.inc({ outcome: o.outcome });
        break;
      case 'update-accepted':
        m.updatesReceived.inc();
        m.updateBytes.inc(o.bytes);
        break;
      case 'evaluation-stored':
        m.evaluationsReceived.inc();
        break;
    }
  }

  return { registry, onQuery, onRound, httpMiddleware: httpMiddleware(m) };
}
export type CoordinatorMetrics = ReturnType<typeof createCoordinatorMetrics>;

type Instruments = { requests: Counter; requestSeconds: Histogram; received: Counter; sent: Counter; refusals: Counter; updatesRefused: Counter };

/**
 * Counts each request when its answer is finished: route and status, duration, bytes both ways
 * and, for a refusal, its code. Bytes are the socket's counters since the previous answer on the
 * same connection (keep-alive carries several requests), so headers count too and a streamed
 * update with no Content-Length is measured as well.
 */
function httpMiddleware(m: Instruments): RequestHandler {
  const seen = new WeakMap<Socket, { read: number; written: number }>();
  return (req, res, next) => {
    const started = performance.now();
    res.on('finish', () => {
      const routeLabel = (req.route as { path?: string } | undefined)?.path ?? UNMATCHED_ROUTE;
      const method = req.method;
      m.requests.inc({ method, route: routeLabel, status: String(res.statusCode) });
      m.requestSeconds.observe({ method, route: routeLabel }, (performance.now() - started) / 1000);
      const socket = req.socket;
      if (socket) {
        const before = seen.get(socket) ?? { read: 0, written: 0 };
        const now = { read: socket.bytesRead, written: socket.bytesWritten };
        m.received.inc({ route: routeLabel }, Math.max(0, now.read - before.read));
        m.sent.inc({ route: routeLabel }, Math.max(0, now.written - before.written));
        seen.set(socket, now);
      }
      if (res.statusCode >= 400) {
        const code = (res.locals.refusalCode as string | undefined) ?? (res.statusCode === 429 ? 'RATE_LIMITED' : res.statusCode >= 500 ? 'INTERNAL' : 'UNKNOWN');
        m.refusals.inc({ code, status: String(res.statusCode) });
        if (routeLabel === UPDATE_ROUTE && method === 'POST') m.updatesRefused.inc({ code });
      }
    });
    next();
  };
}

/**
 * `GET /metrics`: Prometheus text format, for an admin or auditor token. No separate scrape
 * secret: a scraper gets an auditor token of its own (`POST /v1/tokens`), which is listed,
 * revocable and audited like any other, instead of an environment secret nobody can revoke
 * without a restart; an auditor may read no weights and change nothing.
 *
 * @example
 *   registerMetricsRoutes(app, { guard, metrics });
 */
export function registerMetricsRoutes(app: Express, deps: { guard: RequestGuard; metrics: CoordinatorMetrics; db: Db }): void {
  registerDatabaseGauges(deps.metrics.registry, deps.db);
  app.get('/metrics', route(async (req, res) => {
    requireRole(await deps.guard.who(req), 'admin', 'auditor');
    res.set('content-type', deps.metrics.registry.contentType);
    res.send(await deps.metrics.registry.metrics());
  }));
}

/**
 * Studies by state and rounds by phase, read from the database at each scrape: unlike the
 * counters, they count every end (an operator's stop closes its round in the study service, not
 * through the round service) and survive a restart. Registered once per registry.
 */
function registerDatabaseGauges(registry: Registry, db: Db): void {
  if (registry.getSingleMetric('fedmark_studies')) return;
  let latest: Promise<Awaited<ReturnType<typeof countStudiesAndRounds>>> | undefined;
  // One query per scrape for both gauges: the first collect starts it, the second reuses it.
  // A database that does not answer leaves the gauges empty rather than failing the whole scrape
  // (the failed query is counted in fedmark_db_query_duration_seconds{outcome="error"}).
  const counts = () => (latest ??= countStudiesAndRounds(db).catch(() => ({ studies: [], rounds: [] })).finally(() => setImmediate(() => (latest = undefined))));
  new Gauge({
    name: 'fedmark_studies',
    help: 'Studies by state (running, completed, stopped), from the database.',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const r of (await counts()).studies) this.set({ state: r.state }, r.n);
    },
  });
  new Gauge({
    name: 'fedmark_rounds',
    help: 'Rounds by phase (fit, evaluate: open; completed, failed: ended, stopped studies included), from the database.',
    labelNames: ['phase'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const r of (await counts()).rounds) this.set({ phase: r.phase }, r.n);
    },
  });
}
