import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
import { createStrategy } from '../protocols/strategies/index.ts';
import type { StudyConfig } from '../protocols/messages.ts';
import type { Strategy } from '../protocols/strategies/strategy.ts';
import type { CoordinatorConfig } from './config.ts';
import { checkAppRole, openDatabase, type Db } from './db/database.ts';
import { createApp } from './http/app.ts';
import { createCoordinatorMetrics } from './http/metrics.ts';
import { createNodeService } from './nodes/node-service.ts';
import { createAuthService } from './auth/principal.ts';
import { CoordinatorKeyring } from './identity.ts';
import { checkpointAudit } from './audit/audit-log.ts';
import { createPolicyService } from './policies/policy-service.ts';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { LogEvent } from 'kysely';
import { createQueryStats } from './db/query-stats.ts';
import { createRoundService } from './rounds/round-service.ts';
import { createStudyService } from './studies/study-service.ts';

export interface RunningCoordinator {
  url: string;
  db: Db;
  databaseKind: 'postgres' | 'pglite';
  close(): Promise<void>;
}

/** A study's strategy (`config.strategy`), wrapped in client-level DP when the study asks for central DP. */
export function strategyFor(config: StudyConfig): Strategy {
  return createStrategy(config);
}

/** Wires the coordinator together (the only place that does) and starts listening. */
export async function buildCoordinator(config: CoordinatorConfig, log: Logger = pino({ level: config.logLevel }), options: { now?: () => Date } = {}) {
  // Made first, so query durations are observed from the migrations on (http/metrics.ts).
  const metrics = createCoordinatorMetrics();
  const stats = createQueryStats(config.queryStatsFile);
  const onQuery = stats ? (e: LogEvent) => (metrics.onQuery(e), stats.onQuery(e)) : metrics.onQuery;
  const { db, kind, location } = await openDatabase({ databaseUrl: config.databaseUrl, migrationDatabaseUrl: config.migrationDatabaseUrl, dataDir: config.dataDir, log: onQuery, onTransaction: stats?.onTransaction });
  log.info({ database: kind, location, migratedBy: config.migrationDatabaseUrl ? 'FEDMARK_MIGRATION_DATABASE_URL' : 'DATABASE_URL' }, 'database ready');
  // The append-only audit log is only as strong as the role the app connects as: say so loudly.
  for (const problem of await checkAppRole(db)) log.warn({ database: kind }, `WARNING: ${problem}`);
  const keyring = await CoordinatorKeyring.open(db, config.keyDir, config.keyPassphrase);
  log.info({ fingerprint: keyring.current.fingerprint, keyDir: config.keyDir, created: keyring.current.created }, 'coordinator identity');
  let rounds: ReturnType<typeof createRoundService> | undefined;
  const studies = createStudyService({ db, log, keyring, onStudyCreated: (id) => rounds?.onNodeChanged(id) });
  rounds = createRoundService({ db, log, studies, strategyFor, keyring, now: options.now, deadlineSweepSeconds: config.deadlineSweepSeconds, observe: stats ? (o) => (metrics.onRound(o), o.kind === 'opened' && stats.onRoundOpened(o.round)) : metrics.onRound });
  const nodes = createNodeService({ db, log, onNodeChanged: (id) => rounds!.onNodeChanged(id) });
  const auth = createAuthService({ db, nodes, bootstrapAdminToken: config.adminToken });
  const policies = createPolicyService(db);
  const app = createApp({ db, auth, policies, studies, nodes, rounds, log, keyring, maxTaskWaitSeconds: config.maxTaskWaitSeconds, maxClockSkewSeconds: config.maxClockSkewSeconds, rateLimit: { refusalsPerWindow: config.rateLimitRefusals, windowSeconds: config.rateLimitWindowSeconds }, trustProxy: config.trustProxy, taskModelInlineBytes: config.taskModelInlineBytes, metrics });
  return { app, db, kind, location, studies, nodes, rounds, auth, log, keyring, metrics };
}

/**
 * One full garbage collection once start-up is over. Unlocking the key (OpenPGP's iterated S2K
 * hashes a 16 MB buffer, copied once more for the digest) and the migrations leave ~35 MB of dead
 * ArrayBuffers whose small wrappers put no pressure on V8, so they stayed resident until a major
 * GC late in the study and the round garbage piled on top of them (issue 13, demo coordinator:
 * arrayBuffers 44 MB from start-up to round ~12, then 12 MB). V8 exposes `gc` only behind
 * --expose-gc; set at run time it applies to a new context, which is all this needs.
 */
function collectStartupGarbage(): void {
  setFlagsFromString('--expose-gc');
  // And from here on, V8 lets the old generation grow 25% past what a full GC left before the
  // next one (its default factor, up to 2x, is tuned for throughput): the demo coordinator's old
  // space then grew 29 -> 79 MB of mostly round garbage with no major GC in 20 rounds (peak
  // 246 MB); at 25% it stays at 29-41 MB (steady RSS ~210 MB), coordinator CPU 17.2 s against
  // 17.1-19.5 s in runs without. Read at every GC's limit computation, so it can be set now.
  setFlagsFromString(`--heap-growing-percent=${OLD_GENERATION_GROWING_PERCENT}`);
  (runInNewContext('gc') as () => void)();
}

export const OLD_GENERATION_GROWING_PERCENT = 25;

export async function startCoordinator(config: CoordinatorConfig, log?: Logger): Promise<RunningCoordinator> {
  const built = await buildCoordinator(config, log);
  await built.rounds.resume();
  // Entries a crash (or a checkpoint that failed at a round's end) left unsigned are signed now,
  // so their deletion becomes detectable without waiting for the next round to end.
  await checkpointAudit(built.db, built.keyring).catch((err) => built.log.error({ err }, 'audit checkpoint at start-up failed'));
  collectStartupGarbage();
  // HTTPS when a certificate is configured; plain HTTP is refused off loopback by the config.
  const server: Server = await new Promise((resolve, reject) => {
    const s = config.tlsCert
      ? createHttpsServer({ cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey!) }, built.app).listen(config.port, config.host, () => resolve(s as unknown as Server))
      : built.app.listen(config.port, config.host, () => resolve(s as Server));
    s.on('error', reject);
  });
  server.keepAliveTimeout = 65_000;
  const address = server.address() as AddressInfo;
  const url = `${config.tlsCert ? 'https' : 'http'}://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`;
  built.log.info({ url, database: built.kind }, 'coordinator listening');
  return {
    url,
    db: built.db,
    databaseKind: built.kind,
    async close() {
      await built.rounds.stop();
      await checkpointAudit(built.db, built.keyring, { attempts: 1 }).catch((err) => built.log.error({ err }, 'audit checkpoint at shutdown failed'));
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await built.db.destroy();
    },
  };
}
