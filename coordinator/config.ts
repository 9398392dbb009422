import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { describeConfigIssue } from '../protocols/config-issues.ts';
import { DEFAULT_TASK_MODEL_INLINE_BYTES } from './rounds/task-model.ts';

/**
 * The coordinator's whole configuration, parsed once at start-up from the environment (and CLI
 * flags layered on top by the caller). Nothing below this reads process.env.
 */
export const CoordinatorConfig = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.coerce.number().int().min(0).max(65535).default(8080),
    /** PostgreSQL connection string; when absent the embedded PGlite database is used. */
    databaseUrl: z.string().url().optional(),
    /**
     * PostgreSQL connection string of the schema owner, used only to run migrations; the app then
     * connects with databaseUrl as a member of the `fedmark_app` role, which cannot alter the audit
     * log. Defaults to databaseUrl (one role for both; logged as a warning).
     */
    migrationDatabaseUrl: z.string().url().optional(),
    /** Folder of the embedded database (PGlite); ignored when databaseUrl is set. */
    dataDir: z.string().default('.fedmark/coordinator-db'),
    /** Bearer token of the operator (studies, enrollment). No default: a guessable secret is worse than none. */
    adminToken: z.string().min(16, 'must be at least 16 characters'),
    /** Longest a node's task request is held open waiting for work (long polling). */
    maxTaskWaitSeconds: z.coerce.number().min(0).max(120).default(25),
    /**
     * Refusals of unauthenticated requests one source address may cause per window before it is
     * answered 429 (with Retry-After) ahead of any other work; 0 turns the limit off. Requests that
     * end authenticated or succeed do not count, so nodes and operators are not slowed.
     */
    rateLimitRefusals: z.coerce.number().int().min(0).max(1_000_000).default(300),
    rateLimitWindowSeconds: z.coerce.number().int().min(1).max(3600).default(60),
    /** express's `trust proxy` (a hop count, `loopback`, or addresses): set behind a TLS proxy so each client is its own source. */
    trustProxy: z.string().max(500).optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Plain HTTP off loopback must be asked for explicitly. */
    allowInsecureRemote: z.coerce.boolean().default(false),
    /** Folder of the coordinator's OpenPGP identity (private key encrypted with keyPassphrase). */
    keyDir: z.string().default('.fedmark/coordinator-keys'),
    keyPassphrase: z.string().min(12, 'must be at least 12 characters'),
    /** HTTPS: PEM certificate and key files; both or neither. */
    tlsCert: z.string().optional(),
    tlsKey: z.string().optional(),
    /** How far a signed request's timestamp may be from the coordinator's clock. */
    maxClockSkewSeconds: z.coerce.number().positive().max(3600).default(300),
    /**
     * How often open rounds past their deadline are looked up in the database and closed: the
     * backstop for a deadline timer that was missed (a transition that kept failing, a restart,
     * another replica). 0 turns the sweep off.
     */
    deadlineSweepSeconds: z.coerce.number().min(0).max(3600).default(5),
    /**
     * A task carries its model (Task.model) when the model's bytes are at most this: the node then
     * skips the download request. 0: tasks never carry one (every node downloads).
     */
    taskModelInlineBytes: z.coerce.number().int().min(0).max(64 * 1024 * 1024).default(DEFAULT_TASK_MODEL_INLINE_BYTES),
    /** Debug: write per-statement query and transaction counts here as JSON at exit (db/query-stats.ts). */
    queryStatsFile: z.string().optional(),
  })
  .refine((c) => !c.migrationDatabaseUrl || c.databaseUrl, { message: 'FEDMARK_MIGRATION_DATABASE_URL needs DATABASE_URL (the embedded database has a single role)', path: ['migrationDatabaseUrl'] })
  .refine((c) => !c.tlsCert === !c.tlsKey, { message: 'set both FEDMARK_TLS_CERT and FEDMARK_TLS_KEY, or neither', path: ['tlsCert'] })
  .refine((c) => c.allowInsecureRemote || c.tlsCert || ['127.0.0.1', 'localhost', '::1'].includes(c.host), {
    message: 'refusing to serve plain HTTP off loopback; set FEDMARK_ALLOW_INSECURE_REMOTE=1 (e.g. behind a TLS proxy)',
    path: ['host'],
  });
export type CoordinatorConfig = Readonly<z.infer<typeof CoordinatorConfig>>;

/**
 * Where each field comes from, for error messages: the environment variable and, for the fields
 * `fedmark coordinator` also takes as flags, the flag. Operators set variables, never field names:
 * an error says `FEDMARK_ADMIN_TOKEN: must be at least 16 characters`, not `adminToken: ...`.
 * A Record over every field, so a new field without its variable does not compile.
 */
export const COORDINATOR_CONFIG_SOURCES: Record<keyof z.input<typeof CoordinatorConfig>, { env: string; flag?: string }> = {
  host: { env: 'FEDMARK_HOST', flag: '--host' },
  port: { env: 'FEDMARK_PORT', flag: '--port' },
  databaseUrl: { env: 'DATABASE_URL', flag: '--database-url' },
  migrationDatabaseUrl: { env: 'FEDMARK_MIGRATION_DATABASE_URL' },
  dataDir: { env: 'FEDMARK_DATA_DIR', flag: '--data-dir' },
  adminToken: { env: 'FEDMARK_ADMIN_TOKEN' },
  maxTaskWaitSeconds: { env: 'FEDMARK_MAX_TASK_WAIT_SECONDS' },
  rateLimitRefusals: { env: 'FEDMARK_RATE_LIMIT_REFUSALS' },
  rateLimitWindowSeconds: { env: 'FEDMARK_RATE_LIMIT_WINDOW_SECONDS' },
  trustProxy: { env: 'FEDMARK_TRUST_PROXY' },
  logLevel: { env: 'FEDMARK_LOG_LEVEL' },
  allowInsecureRemote: { env: 'FEDMARK_ALLOW_INSECURE_REMOTE' },
  keyDir: { env: 'FEDMARK_KEY_DIR' },
  keyPassphrase: { env: 'FEDMARK_KEY_PASSPHRASE (or FEDMARK_KEY_PASSPHRASE_FILE)' },
  tlsCert: { env: 'FEDMARK_TLS_CERT' },
  tlsKey: { env: 'FEDMARK_TLS_KEY' },
  maxClockSkewSeconds: { env: 'FEDMARK_MAX_CLOCK_SKEW_SECONDS' },
  deadlineSweepSeconds: { env: 'FEDMARK_DEADLINE_SWEEP_SECONDS' },
  taskModelInlineBytes: { env: 'FEDMARK_TASK_MODEL_INLINE_BYTES' },
  queryStatsFile: { env: 'FEDMARK_QUERY_STATS_FILE' },
};

/** A configuration the coordinator cannot start with; `variables` names what to fix. */
export class ConfigError extends Error {
  readonly variables: string[];

  constructor(message: string, variables: string[], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConfigError';
    this.variables = variables;
  }
}

function readPassphraseFile(path: string | undefined): string | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`invalid coordinator configuration: FEDMARK_KEY_PASSPHRASE_FILE: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ['FEDMARK_KEY_PASSPHRASE_FILE'], { cause: err });
  }
}

/** Maps FEDMARK_* environment variables onto the config, then applies explicit overrides. */
export function loadCoordinatorConfig(env: NodeJS.ProcessEnv, overrides: Partial<Record<keyof CoordinatorConfig, unknown>> = {}): CoordinatorConfig {
  const fromEnv = {
    host: env.FEDMARK_HOST,
    port: env.FEDMARK_PORT ?? env.PORT,
    databaseUrl: env.DATABASE_URL || undefined,
    migrationDatabaseUrl: env.FEDMARK_MIGRATION_DATABASE_URL || undefined,
    dataDir: env.FEDMARK_DATA_DIR,
    adminToken: env.FEDMARK_ADMIN_TOKEN,
    maxTaskWaitSeconds: env.FEDMARK_MAX_TASK_WAIT_SECONDS,
    rateLimitRefusals: env.FEDMARK_RATE_LIMIT_REFUSALS,
    rateLimitWindowSeconds: env.FEDMARK_RATE_LIMIT_WINDOW_SECONDS,
    trustProxy: env.FEDMARK_TRUST_PROXY || undefined,
    logLevel: env.FEDMARK_LOG_LEVEL,
    allowInsecureRemote: env.FEDMARK_ALLOW_INSECURE_REMOTE === '1' || env.FEDMARK_ALLOW_INSECURE_REMOTE === 'true' ? true : undefined,
    keyDir: env.FEDMARK_KEY_DIR,
    keyPassphrase: env.FEDMARK_KEY_PASSPHRASE ?? readPassphraseFile(env.FEDMARK_KEY_PASSPHRASE_FILE),
    tlsCert: env.FEDMARK_TLS_CERT,
    tlsKey: env.FEDMARK_TLS_KEY,
    maxClockSkewSeconds: env.FEDMARK_MAX_CLOCK_SKEW_SECONDS,
    deadlineSweepSeconds: env.FEDMARK_DEADLINE_SWEEP_SECONDS,
    taskModelInlineBytes: env.FEDMARK_TASK_MODEL_INLINE_BYTES || undefined,
    queryStatsFile: env.FEDMARK_QUERY_STATS_FILE || undefined,
  };
  const merged: Record<string, unknown> = { ...fromEnv };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) merged[k] = v;
  const parsed = CoordinatorConfig.safeParse(merged);
  if (!parsed.success) {
    // Every problem at once: fixing one variable per restart is slow.
    const described = parsed.error.issues.map((issue) => {
      const field = String(issue.path[0] ?? '');
      const source = COORDINATOR_CONFIG_SOURCES[field as keyof typeof COORDINATOR_CONFIG_SOURCES];
      return describeConfigIssue(issue, source, overrides[field as keyof CoordinatorConfig] !== undefined, field || '(root)');
    });
    throw new ConfigError(`invalid coordinator configuration: ${described.map((d) => d.text).join('; ')}`, described.map((d) => d.name));
  }
  return Object.freeze(parsed.data);
}
