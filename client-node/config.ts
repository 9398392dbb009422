import { z } from 'zod';
import { ATTACK_NAMES } from './attack.ts';
import { describeConfigIssue } from '../protocols/config-issues.ts';
import { CSV_DELIMITERS } from '../models/csv-table.ts';

/** A node's configuration, parsed once from CLI flags and FEDMARK_NODE_* variables. */
/** 22 base64url characters carry 132 bits: a random passphrase at least this long needs no stretching. */
export const RANDOM_PASSPHRASE_MIN_LENGTH = 22;

export const NodeConfig = z
  .object({
    coordinator: z.string().url(),
    /** One-time enrollment token; needed only the first time (credentials are then kept in stateDir). */
    token: z.string().optional(),
    /** A CSV or Parquet path, or a PostgreSQL URL (then with dataTable or dataQuery). */
    data: z.string().min(1),
    /** PostgreSQL --data: the table to read (SCHEMA.NAME). */
    dataTable: z.string().min(1).optional(),
    /** PostgreSQL --data: the SELECT to read, in a READ ONLY transaction. */
    dataQuery: z.string().min(1).optional(),
    /** PostgreSQL --data: rows per cursor batch. */
    dataBatchRows: z.coerce.number().int().min(1).max(1_000_000).default(5000),
    /** PostgreSQL --data: reread at most this often (a table has no mtime). */
    dataRefreshSeconds: z.coerce.number().min(1).max(86_400).default(600),
    /** CSV --data: the field delimiter (default: detected from the header and first lines). */
    delimiter: z.enum(CSV_DELIMITERS).optional(),
    /** Optional local copy of the study's feature spec; the node refuses to train if the study's differs. */
    spec: z.string().optional(),
    stateDir: z.string().default('.fedmark/node'),
    backend: z.enum(['tensorflow', 'wasm', 'cpu']).optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Seconds one task request may be held open by the coordinator. */
    pollSeconds: z.coerce.number().min(0).max(120).default(20),
    /** Stop after the study completes (the default for the demo and tests); a daemon keeps going. */
    exitWhenDone: z.boolean().default(true),
    allowInsecureRemote: z.boolean().default(false),
    /**
     * The partner's own ceiling on record-level epsilon for this node's data, enforced here
     * whatever the coordinator asks. With a ceiling, the node trains only with DP-SGD.
     */
    maxEpsilon: z.number().positive().finite().optional(),
    /** Passphrase of the node's OpenPGP private key (encrypted at rest in stateDir). */
    keyPassphrase: z.string().min(12, 'the node key passphrase (FEDMARK_NODE_KEY_PASSPHRASE or --key-passphrase-file) must be at least 12 characters'),
    /**
     * The passphrase is a machine-generated random string (env FEDMARK_NODE_KEY_PASSPHRASE_RANDOM=1;
     * the demo sets it for the passphrases it makes up): the key is still encrypted at rest, with a
     * cheap S2K (client-node/identity.ts). Such a passphrase must have at least 128 bits' worth of
     * characters (22 of base64url).
     */
    keyPassphraseRandom: z.boolean().default(false),
    /** Optional: the coordinator's public key file to pin (otherwise it is pinned at enrollment). */
    coordinatorKey: z.string().optional(),
    /**
     * The law this node's data falls under: a policy profile name (EU-GDPR, US-CA-CCPA, CN-PIPL, ...).
     * The node does not start without it or a --policy file (checked by runNode).
     */
    jurisdiction: z.string().min(1).max(50).optional(),
    /** A local policy profile (JSON) that overrides the built-in one for the jurisdiction. */
    policy: z.string().optional(),
    /** Longest wait between tasks while the node cannot train (doubling from 1 s). */
    idleBackoffMaxSeconds: z.coerce.number().min(0).max(3600).default(60),
    /**
     * Directory of the privacy ledgers, one per data source, shared by every enrollment on the
     * machine (client-node/privacy-ledger.ts). Default: FEDMARK_NODE_LEDGER_DIR, else ~/.fedmark/ledgers.
     */
    ledgerDir: z.string().min(1).optional(),
    /** The data source's id for its ledger (default: the data file's canonical path); env FEDMARK_NODE_DATA_SOURCE_ID. */
    dataSourceId: z.string().min(1).max(200).optional(),
    /** Delta at which the ceiling is measured. */
    maxEpsilonDelta: z.number().gt(0).lt(1).default(1e-5),
    /**
     * Regional personalization (client-node/personalize.ts): at the final round's evaluation, fine-tune
     * a copy of the global model on this node's rows for personalizeEpochs local epochs and keep it
     * in personalizeOut (default <stateDir>/personalized/<study>-v<version>.fmw); never sent.
     */
    personalize: z.boolean().default(false),
    personalizeEpochs: z.coerce.number().int().min(1).max(1000).default(3),
    personalizeOut: z.string().min(1).optional(),
    /** FOR DEMOS AND TESTS ONLY: the node attacks the study after honest training (client-node/attack.ts). */
    attack: z.enum(ATTACK_NAMES).optional(),
  })
  .refine((c) => !c.keyPassphraseRandom || c.keyPassphrase.length >= RANDOM_PASSPHRASE_MIN_LENGTH, {
    message: `a passphrase declared random (FEDMARK_NODE_KEY_PASSPHRASE_RANDOM=1) must be at least ${RANDOM_PASSPHRASE_MIN_LENGTH} characters (128 bits of base64url); unset the variable for a chosen passphrase`,
    path: ['keyPassphrase'],
  })
  .refine((c) => !c.coordinator.startsWith('http://') || /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:|\/|$)/.test(c.coordinator) || c.allowInsecureRemote, {
    message: 'plain http:// is only allowed to a loopback coordinator; use https:// (or FEDMARK_ALLOW_INSECURE_REMOTE=1)',
    path: ['coordinator'],
  });
export type NodeConfig = Readonly<z.infer<typeof NodeConfig>>;


/**
 * Why a node stops without its study having run to the end with it, each with its own exit code
 * (`fedmark node --help` lists them), so a partner's supervisor (systemd, Kubernetes, cron) can
 * tell "nothing to do any more" from "fix something and restart".
 */
export const NODE_EXIT_CODES = {
  /** The study was stopped, or completed before this node took part in a round. */
  'study-ended': 3,
  /** This node's policy (its jurisdiction's profile, tightened by the coordinator's) forbids the study. */
  'policy-refused': 4,
  /** This node's enrollment was revoked by the operator, or it withdrew. */
  'enrollment-revoked': 5,
  /** This node's own privacy ceiling (--max-epsilon) or its row count refuses the study before it trained a round. */
  'privacy-refused': 6,
  /** The coordinator refused the enrollment token (unknown, used, expired, another jurisdiction). */
  'enrollment-refused': 7,
} as const;
export type NodeStopReason = keyof typeof NODE_EXIT_CODES;

/** `fedmark node --help`: the exit codes, one line each. */
export const NODE_EXIT_CODES_HELP = [
  'Exit codes:',
  '  0  the study completed after this node took part (or --withdraw / --rotate-key done)',
  '  1  any other error (bad input, unreachable coordinator, ...); 2: an invalid option',
  `  ${NODE_EXIT_CODES['study-ended']}  the study was stopped, or completed before this node took part (the reason is printed)`,
  `  ${NODE_EXIT_CODES['policy-refused']}  this node's jurisdiction policy forbids the study (the rule is printed)`,
  `  ${NODE_EXIT_CODES['enrollment-revoked']}  this node's enrollment was revoked, or it withdrew`,
  `  ${NODE_EXIT_CODES['privacy-refused']}  this node's privacy ceiling (--max-epsilon) refuses the study before its first round`,
  `  ${NODE_EXIT_CODES['enrollment-refused']}  the coordinator refused the enrollment token (unknown, used, expired, another jurisdiction)`,
].join('\n');

/** The node cannot take part in its study, for good: the message is one plain line for stderr. */
export class NodeStoppedError extends Error {
  readonly exitCode: number;
  constructor(
    readonly reason: NodeStopReason,
    message: string,
  ) {
    super(message.replace(/\s*\n\s*/g, ' '));
    this.name = 'NodeStoppedError';
    this.exitCode = NODE_EXIT_CODES[reason];
  }
}

/**
 * Where each field comes from, for error messages: the flag of `fedmark node` and its variable.
 * A field not listed is named by its flag spelled from the field name (`--state-dir`).
 */
export const NODE_CONFIG_SOURCES: Partial<Record<keyof z.input<typeof NodeConfig>, { env: string; flag?: string }>> = {
  coordinator: { flag: '--coordinator', env: 'FEDMARK_COORDINATOR' },
  token: { flag: '--token', env: 'FEDMARK_ENROLLMENT_TOKEN' },
  data: { flag: '--data', env: 'FEDMARK_NODE_DATA' },
  dataTable: { flag: '--table', env: 'FEDMARK_NODE_DATA_TABLE' },
  dataQuery: { flag: '--query', env: 'FEDMARK_NODE_DATA_QUERY' },
  dataBatchRows: { flag: '--batch-rows', env: 'FEDMARK_NODE_DATA_BATCH_ROWS' },
  dataRefreshSeconds: { flag: '--refresh-seconds', env: 'FEDMARK_NODE_DATA_REFRESH_SECONDS' },
  stateDir: { flag: '--state-dir', env: 'FEDMARK_NODE_STATE_DIR' },
  backend: { flag: '--backend', env: 'FEDMARK_TF_BACKEND' },
  logLevel: { env: 'FEDMARK_LOG_LEVEL' },
  allowInsecureRemote: { env: 'FEDMARK_ALLOW_INSECURE_REMOTE' },
  maxEpsilon: { flag: '--max-epsilon', env: 'FEDMARK_NODE_MAX_EPSILON' },
  keyPassphrase: { flag: '--key-passphrase-file', env: 'FEDMARK_NODE_KEY_PASSPHRASE' },
  keyPassphraseRandom: { env: 'FEDMARK_NODE_KEY_PASSPHRASE_RANDOM' },
  jurisdiction: { flag: '--jurisdiction', env: 'FEDMARK_NODE_JURISDICTION' },
  ledgerDir: { flag: '--ledger-dir', env: 'FEDMARK_NODE_LEDGER_DIR' },
  dataSourceId: { env: 'FEDMARK_NODE_DATA_SOURCE_ID' },
  personalizeEpochs: { flag: '--personalize-epochs', env: 'FEDMARK_NODE_PERSONALIZE_EPOCHS' },
  personalizeOut: { flag: '--personalize-out', env: 'FEDMARK_NODE_PERSONALIZE_OUT' },
};

/** Every issue of a failed NodeConfig parse, each named by its flag and variable (`--data (or FEDMARK_NODE_DATA): required, not set`). */
export function describeNodeConfigError(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = String(issue.path[0] ?? '');
      const source = NODE_CONFIG_SOURCES[field as keyof typeof NODE_CONFIG_SOURCES] ?? { env: `--${field.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}` };
      const named = source.flag ? { env: `${source.flag} (or ${source.env})` } : source;
      return describeConfigIssue(issue, named, false, field).text;
    })
    .join('; ');
}
