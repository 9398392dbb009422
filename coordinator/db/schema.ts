import type { ColumnType } from 'kysely';

/** Row types of the coordinator's tables (see db/migrations for the DDL). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T> = ColumnType<T, string, string>;
/** A timestamp the database fills in (defaults to now()). */
type DefaultedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface StudiesTable {
  id: string;
  name: string;
  config: Json<unknown>;
  state: 'running' | 'completed' | 'stopped';
  current_round: number;
  latest_model_version: number;
  stop_reason: string | null;
  /** When a study was stopped (migration 0017), and by whom: `coordinator` or the operator's actor. */
  stopped_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  stopped_by: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: DefaultedTimestamp;
}

export interface NodesTable {
  id: string;
  study_id: string;
  name: string;
  region: string;
  api_key_hash: string;
  state: 'enrolled' | 'ready' | 'data-error' | 'privacy-ceiling' | 'policy-refused' | 'model-rejected' | 'training-failed' | 'withdrawn' | 'revoked';
  state_message: string | null;
  data_report: Json<unknown> | null;
  enrolled_at: DefaultedTimestamp;
  last_seen_at: Timestamp | null;
  public_key: string | null;
  key_fingerprint: string | null;
  revoked_at: Timestamp | null;
  jurisdiction: string | null;
  withdrawn_at: Timestamp | null;
}

export interface PoliciesTable {
  jurisdiction: string;
  version: number;
  profile: Json<unknown>;
  created_at: DefaultedTimestamp;
}

export interface EnrollmentTokensTable {
  token_hash: string;
  study_id: string;
  node_name: string;
  region: string;
  /** Set by the operator when issuing the token (migration 0010); null on tokens issued before. */
  jurisdiction: string | null;
  expires_at: Timestamp;
  used_at: Timestamp | null;
  node_id: string | null;
  created_at: DefaultedTimestamp;
}

export interface ModelsTable {
  study_id: string;
  version: number;
  weights: Uint8Array;
  sha256: string;
  bytes: number;
  created_at: DefaultedTimestamp;
  signature: string | null;
  signer_fingerprint: string | null;
}

export interface RoundsTable {
  study_id: string;
  round: number;
  phase: 'fit' | 'evaluate' | 'completed' | 'failed';
  participants: Json<string[]>;
  fit_deadline: Timestamp;
  evaluation_deadline: Timestamp | null;
  /** Running FedAvg sum (float64 codec), so a restart mid-round loses no accepted update. */
  accumulator: Uint8Array | null;
  /** Sum of the round's claimed example counts: bigint (migration 0013), read as a number. */
  num_examples: number;
  mean_loss: number | null;
  validation_auc: number | null;
  validation_loss: number | null;
  failure_reason: string | null;
  started_at: DefaultedTimestamp;
  closed_at: Timestamp | null;
  /** What the strategy reported: clip norm, noise std, next clip norm... (never update values). */
  mechanism: Json<Record<string, unknown>> | null;
  clip_norm: number | null;
  /** The strategy's server state this round started from (encodeServerState bytes). */
  server_state: Uint8Array | null;
  /** The server state after the fit phase, carried to the next round. */
  next_server_state: Uint8Array | null;
  /** Each participant's fit instructions, by node id. */
  instructions: Json<Record<string, unknown>> | null;
  /** The model kind's pooled validation metrics. */
  validation_metrics: Json<Record<string, number | null>> | null;
  /** Regional personalization (migration 0019): the pooled personalized metrics, their node count, the global model over the same nodes. */
  personalized_metrics: ColumnType<Record<string, number | null> | null, string | null | undefined, string | null>;
  personalized_nodes: ColumnType<number, number | undefined, number>;
  global_on_personalized_metrics: ColumnType<Record<string, number | null> | null, string | null | undefined, string | null>;
}

/** Every accepted update of a round, for strategies that need them all (median, Krum...). */
export interface RoundKeptUpdatesTable {
  study_id: string;
  round: number;
  seq: number;
  node_id: string;
  weights: Uint8Array;
  /** The weight the update was folded with (migration 0020); null on rows written before. */
  weight: number | null;
}

export interface PrivacyLedgerTable {
  study_id: string;
  round: number;
  accountant: string;
  delta: number;
  sampling_rate: number;
  noise_multiplier: number;
  epsilon_round: number;
  epsilon_total: number;
  budget_epsilon: number | null;
  created_at: DefaultedTimestamp;
}

export interface UpdatesTable {
  study_id: string;
  round: number;
  node_id: string;
  sha256: string;
  bytes: number;
  /** The node's claim (<= its declared rows, < 2^31): bigint like every count column (migration 0013). */
  num_examples: number;
  loss: number | null;
  meta: Json<unknown>;
  accepted_at: Timestamp;
}

export interface EvaluationsTable {
  study_id: string;
  round: number;
  node_id: string;
  /** bigint (migration 0013), read as a number. */
  num_examples: number;
  loss: number | null;
  /** Legacy (binary-only) score histogram; new reports store `stats`. */
  histogram: Json<unknown> | null;
  /** The model kind's sufficient statistics (EvaluationStats). */
  stats: Json<unknown> | null;
  /** `--personalize` (migration 0019): the fine-tuned copy's statistics and count; null when not sent. bigint read as a number. */
  personalized_stats: ColumnType<unknown, string | null | undefined, string | null>;
  personalized_num_examples: ColumnType<number | null, number | null | undefined, number | null>;
  received_at: DefaultedTimestamp;
}

export interface Database {
  studies: StudiesTable;
  nodes: NodesTable;
  enrollment_tokens: EnrollmentTokensTable;
  models: ModelsTable;
  rounds: RoundsTable;
  updates: UpdatesTable;
  evaluations: EvaluationsTable;
  privacy_ledger: PrivacyLedgerTable;
  api_tokens: ApiTokensTable;
  request_nonces: RequestNoncesTable;
  coordinator_keys: CoordinatorKeysTable;
  audit_log: AuditLogTable;
  audit_checkpoints: AuditCheckpointsTable;
  audit_head: { id: number; seq: number; hash: string | null };
  policies: PoliciesTable;
  regional_accumulators: RegionalAccumulatorsTable;
  regional_models: RegionalModelsTable;
  round_kept_updates: RoundKeptUpdatesTable;
  refusal_counts: RefusalCountsTable;
}

/** Unauthenticated refusals per source, minute, claimed actor and reason (migration 0014). */
export interface RefusalCountsTable {
  source: string;
  minute: Timestamp;
  actor: string;
  reason: string;
  status: number;
  /** bigint, read as a number (see openPostgres). */
  count: number;
  sample: Json<{ method: string; path: string; requestId: string }>;
  last_at: DefaultedTimestamp;
}

/** Running FedAvg sum of one region's updates in an open round (float64 codec state). */
export interface RegionalAccumulatorsTable {
  study_id: string;
  round: number;
  region: string;
  state: Uint8Array;
}

/** A published regional model: the FedAvg of one region's local models in round `version`, signed. */
export interface RegionalModelsTable {
  study_id: string;
  version: number;
  region: string;
  weights: Uint8Array;
  sha256: string;
  bytes: number;
  nodes: number;
  /** Sum of the region's claimed counts: bigint (migration 0013), read as a number. */
  num_examples: number;
  signature: string;
  signer_fingerprint: string;
  created_at: DefaultedTimestamp;
}

export interface AuditLogTable {
  seq: number;
  at: string;
  actor: string;
  kind: string;
  study_id: string | null;
  round: number | null;
  data: string;
  prev_hash: string;
  hash: string;
}

export interface AuditCheckpointsTable {
  seq: number;
  head_hash: string;
  at: string;
  coordinator_fingerprint: string;
  signature: string;
  /** 1, 2, 3, ... inside the signed payload (migration 0015); null for checkpoints signed before it. */
  number: number | null;
}

export interface RequestNoncesTable {
  fingerprint: string;
  nonce: string;
  seen_at: DefaultedTimestamp;
}

export interface CoordinatorKeysTable {
  fingerprint: string;
  public_key: string;
  announcement: string | null;
  created_at: DefaultedTimestamp;
}

export interface ApiTokensTable {
  id: string;
  token_hash: string;
  role: 'admin' | 'auditor' | 'analyst';
  name: string;
  region: string | null;
  created_at: DefaultedTimestamp;
  revoked_at: Timestamp | null;
}
