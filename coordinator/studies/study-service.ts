import { encodedWidth } from '../../protocols/feature-spec.ts';
import { StudyConfig, type StudyStatus, type RoundSummary } from '../../protocols/messages.ts';
import { initialWeights } from '../../protocols/model-spec.ts';
import { modelKind } from '../../protocols/model-kinds/kind.ts';
import { PrivacyConfigError, updateNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import { clientLevelDeltaProblem, privacyWarnings } from '../../protocols/privacy/study-checks.ts';
import { createStrategy } from '../../protocols/strategies/index.ts';
import { totalParameters, type TensorSpec, type WeightSet } from '../../protocols/tensors.ts';
import { decodeWeights, encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { Db } from '../db/database.ts';
import { BadRequestError, NotFoundError, PolicyViolationError } from '../errors.ts';
import { newId } from '../security.ts';
import type { Logger } from 'pino';
import type { CoordinatorKeyring } from '../identity.ts';
import { appendAudit } from '../audit/audit-log.ts';
import type { Principal } from '../auth/principal.ts';
import { authorizeModelRead, visibleRound, visibleStatus, visibleUpdate } from '../auth/visibility.ts';
import { nodeIdsInRegion, regionHasNode } from '../nodes/repository.ts';
import { findRound, listRoundUpdates } from '../rounds/round-repository.ts';
import { closedRoundCounts, findModel, findStudyConfig, findStudyRow, findStudyStatusRows, insertModel, insertStudy, latestModelVersion, listStudyRows } from './repository.ts';
import { policyViolationsFor, studyPlan, violationField } from './study-plan.ts';
import { stopStudy } from './stop-study.ts';
import { loadWarmStart, recordedInitFrom } from './init-from.ts';

export interface StoredModel {
  version: number;
  bytes: Uint8Array;
  sha256: string;
  /** The coordinator's armored detached signature over `bytes`. */
  signature: string | null;
  signerFingerprint: string | null;
}

/** Tensor names and shapes every update of a study must have. */
/** The tensors nodes send and the coordinator aggregates: the study's model kind's shared ones. */
export function studyTensorSpecs(config: StudyConfig): TensorSpec[] {
  const kind = modelKind(config.task.kind);
  return kind.sharedTensors(kind.tensorSpecs(config.model, encodedWidth(config.features), config.task));
}

/** The largest sealed update a study accepts: its model's float32 values plus a generous header. */
export function maxUpdateBytes(config: StudyConfig): number {
  return totalParameters(studyTensorSpecs(config)) * 4 + 1_000_000;
}

/**
 * Domain checks the config schema cannot make (they need the strategy and the privacy math): the
 * study's strategy is built once, and a bad strategy or privacy config is a 400 naming the field
 * when the study is created, never a failure (or a 500) in a later round.
 *
 * @example
 *   checkStudyConfig(config); // BadRequestError(field 'body.privacy.central') for z >= 2 * countNoiseStd
 */
export function checkStudyConfig(config: StudyConfig) {
  const refuse = (field: string, err: Error) => new BadRequestError(`${field}: ${err.message}`, field, 'VALIDATION_FAILED');
  try {
    createStrategy(config);
    if (config.privacy?.central) updateNoiseMultiplier(config.privacy.central);
  } catch (err) {
    if (err instanceof PrivacyConfigError) throw refuse('body.privacy.central', err);
    if (err instanceof RangeError) throw refuse('body.strategy', err);
    throw err;
  }
  // delta >= 1/n allows publishing one node in the clear (study-checks.ts).
  const deltaProblem = clientLevelDeltaProblem(config);
  if (deltaProblem) throw new BadRequestError(`body.privacy.delta: ${deltaProblem}`, 'body.privacy.delta', 'VALIDATION_FAILED');
}

type StudyDeps = { db: Db; log: Logger; keyring: CoordinatorKeyring; onStudyCreated: (studyId: string) => void };

/**
 * Studies: creation (with the round-0 model), configuration and published models (cached: they
 * never change once written), and the status and round views each role may see.
 *
 * @example
 *   const studies = createStudyService({ db, log, keyring, onStudyCreated });
 *   const { id } = await studies.createStudy(config, 'admin:tok_1');
 */
export function createStudyService(deps: StudyDeps) {
  const models = createModelStore(deps.db);
  const reads = createStudyReads(deps.db, models.getConfig);
  return {
    ...models,
    ...reads,
    /** `caller`: who asks (a warm start's source must be readable by them: init-from.ts); default the bootstrap admin. */
    createStudy: (config: StudyConfig, actor = 'admin', caller: Principal = { role: 'admin', id: actor }) => createStudy(deps, config, actor, caller),
    /** What creating `config` would do (POST /v1/studies/plan): policies, privacy plan, warnings; writes nothing. */
    async planStudy(config: StudyConfig, caller: Principal = { role: 'admin', id: 'admin' }) {
      checkStudyConfig(config);
      const { sha256, warm } = await initialModel(deps.db, config, caller);
      const initialModelPlan = warm ? { from: 'study' as const, ...warm.source } : { from: 'seed' as const, seed: config.seed, sha256 };
      return { ...(await studyPlan(deps.db, config, [...creationWarnings(config), ...(warm?.warnings ?? [])])), initialModel: initialModelPlan };
    },
    /** An operator's stop (POST /v1/studies/:studyId/stop): idempotent, audited (stop-study.ts). */
    stopStudy: async (studyId: string, actor: string, reason?: string) => stopStudy({ ...deps, now: () => new Date() }, studyId, actor, reason, await models.getConfig(studyId)),
    /** The largest update body the study accepts (404 when there is no such study). */
    maxUpdateBytes: async (studyId: string) => maxUpdateBytes(await models.getConfig(studyId)),
    /** Throws 403 unless `p` may read the study's model weights. */
    authorizeModelRead: (p: Principal, studyId: string) => authorizeModelRead(p, studyId, (region) => regionHasNode(deps.db, studyId, region)),
  };
}
export type StudyService = ReturnType<typeof createStudyService>;

/** Creates a study and its round-0 model (seeded, so the configuration alone reproduces it). */
async function createStudy(deps: StudyDeps, requested: StudyConfig, actor: string, caller: Principal) {
  checkStudyConfig(requested);
  // A study that breaks the policy of a jurisdiction it plans is refused now, not stopped at round 1.
  const violations = await policyViolationsFor(deps.db, requested, requested.jurisdictions ?? []);
  if (violations.length > 0) {
    // Short enough for the error body's 300 characters: every rule by name, the first in full.
    const rules = violations.map((v) => `${v.jurisdiction}${v.version ? ` v${v.version}` : ''} ${v.rule}`).join(', ');
    throw new PolicyViolationError(`the study breaks ${rules}; first: ${violations[0].message}; POST /v1/studies/plan (fedmark study create --dry-run) lists every rule`, `body.${violationField(requested, violations[0])}`);
  }
  const id = newId('study');
  // Seeded, or a warm start's source model byte for byte (init-from.ts); the config records the source.
  const { bytes, sha256, warm } = await initialModel(deps.db, requested, caller);
  const config = recordedInitFrom(requested, warm);
  const { signature, fingerprint } = await deps.keyring.sign(bytes);
  await deps.db.transaction().execute(async (tx) => {
    await insertStudy(tx, { id, name: config.name, config: JSON.stringify(config), state: 'running', current_round: 0, latest_model_version: 0 });
    await insertModel(tx, { study_id: id, version: 0, weights: bytes, sha256, bytes: bytes.length, signature, signer_fingerprint: fingerprint });
    await appendAudit(tx, { actor, kind: 'study.created', studyId: id, data: { config, initialModelSha256: sha256, ...(warm ? { initializedFrom: warm.source } : {}) } });
  });
  deps.log.info({ studyId: id, name: config.name, model: config.model, rounds: config.rounds }, 'study created');
  const warnings = [...creationWarnings(config), ...(warm?.warnings ?? [])];
  for (const warning of warnings) deps.log.warn({ studyId: id }, warning);
  deps.onStudyCreated(id);
  return { id, modelSha256: sha256, ...(warm ? { initializedFrom: warm.source } : {}), ...(warnings.length ? { warnings } : {}) };
}

/** A study's round-0 model: its warm start's source (init-from.ts), else the seeded one (the configuration alone reproduces it). */
async function initialModel(db: Db, config: StudyConfig, caller: Principal) {
  const specs = studyTensorSpecs(config);
  const warm = await loadWarmStart(db, config, caller, specs);
  // A kind may start elsewhere than seeded Glorot (forecast: a zero output layer, the level forecast).
  const bytes = warm?.bytes ?? encodeWeights((modelKind(config.task.kind).initialWeights ?? initialWeights)(specs, config.seed));
  return { bytes, sha256: sha256Hex(bytes), warm };
}

/** What creating the study warns about (the POST response's `warnings`, and the plan's). */
function creationWarnings(config: StudyConfig): string[] {
  // bounds: null is the legacy, undefended behaviour (the attack demo's baseline): said loudly.
  const warnings = config.bounds === null ? ['bounds is null: node claims are not bounded (example counts are weights as claimed, update norms and published weights are unchecked); one node can take over this study'] : [];
  // Client-level noise that swamps the signal, and what adaptive clipping really charges: said with numbers.
  warnings.push(...privacyWarnings(config, totalParameters(studyTensorSpecs(config))));
  return warnings;
}

/** Every study as `fedmark study ls` lists it: kind, model, state (with the stop reason), rounds done of planned, created. */
async function listStudies(db: Db) {
  const [rows, closed] = await Promise.all([listStudyRows(db), closedRoundCounts(db)]);
  return rows.map((r) => {
    // Read loosely: a list must not fail on one study's stored configuration.
    const config = (r.config ?? {}) as { task?: { kind?: string }; model?: { kind?: string }; rounds?: number };
    return {
      id: r.id,
      name: r.name,
      state: r.state,
      task: config.task?.kind ?? 'binary',
      model: config.model?.kind ?? null,
      currentRound: r.current_round,
      roundsDone: closed.get(r.id) ?? 0,
      roundsPlanned: config.rounds ?? null,
      createdAt: new Date(r.created_at).toISOString(),
      ...stopFields(r),
    };
  });
}

/** A study row's stop reason, who stopped it and when (all null unless it was stopped). */
function stopFields(r: { stop_reason: string | null; stopped_by: string | null; stopped_at: Date | string | null }) {
  return { stopReason: r.stop_reason, stoppedBy: r.stopped_by, stoppedAt: r.stopped_at ? new Date(r.stopped_at).toISOString() : null };
}

export const MAX_CACHED_MODELS = 64;
/**
 * And at most this many bytes per cache: a count alone let 64 versions of a 1M-parameter model
 * (4 MB of bytes + 4 MB decoded each) hold ~512 MB, the growth seen across rounds of the 100 x 1M
 * simulation (issue 13). At 64 MB both caches still filled for 16 rounds (+8 MB a round of
 * 1M-parameter models, RSS 408 -> 447 MB over 5 rounds): the request path only asks for the
 * newest version and the one before it (a fit task's base, an owed evaluation), so 16 MB holds
 * four 1M-parameter versions and memory is flat from round 4 on.
 */
export const MAX_CACHED_MODEL_BYTES = 16 * 1024 * 1024;
/** The newest entries kept whatever their size: the two versions a round serves, so a large model is not re-read for every node. */
export const MIN_CACHED_MODELS = 2;

/** Insertion-ordered, bounded by count and by bytes (a size can be told later, once a read resolves). */
export class BoundedCache<V> {
  private readonly entries = new Map<string, { value: V; bytes: number }>();
  private total = 0;

  get(key: string): V | undefined {
    return this.entries.get(key)?.value;
  }

  set(key: string, value: V, bytes = 0): void {
    this.delete(key);
    this.entries.set(key, { value, bytes });
    this.total += bytes;
    this.evict();
  }

  /** The size of an entry known only now (the bytes of a read that resolved); ignored if it was evicted or replaced. */
  sized(key: string, value: V, bytes: number): void {
    const e = this.entries.get(key);
    if (!e || e.value !== value) return;
    this.total += bytes - e.bytes;
    e.bytes = bytes;
    this.evict();
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.total -= e.bytes;
    this.entries.delete(key);
  }

  private evict(): void {
    while (this.entries.size > MIN_CACHED_MODELS && (this.entries.size > MAX_CACHED_MODELS || this.total > MAX_CACHED_MODEL_BYTES)) this.delete(this.entries.keys().next().value!);
  }
}

/** A study's configuration and its published models never change once written: cached, so the request path skips a query and a parse. */
function createModelStore(db: Db) {
  const configs = new Map<string, StudyConfig>();
  const models = new BoundedCache<Promise<StoredModel>>();
  const decoded = new BoundedCache<WeightSet>();

  async function getConfig(studyId: string): Promise<StudyConfig> {
    const cached = configs.get(studyId);
    if (cached) return cached;
    const stored = await findStudyConfig(db, studyId);
    if (stored === undefined) throw new NotFoundError(`study ${studyId} does not exist`);
    const config = StudyConfig.parse(stored);
    configs.set(studyId, config);
    return config;
  }

  async function getModel(studyId: string, version?: number): Promise<StoredModel> {
    const v = version ?? (await latestModelVersion(db, studyId));
    if (v === undefined) throw new NotFoundError(`study ${studyId} does not exist`);
    const key = `${studyId}/${v}`;
    const cached = models.get(key);
    if (cached) return cached;
    // The read itself is remembered, not only its result: a new model is asked for by every node
    // at once (a round's long polls wake together), and each missed the cache and read the
    // weights again (149 reads for 21 versions in the demo, issue 13). A failed read is forgotten.
    const reading = readModel(studyId, v);
    models.set(key, reading);
    reading.then(
      (m) => models.sized(key, reading, m.bytes.byteLength),
      () => models.get(key) === reading && models.delete(key),
    );
    return reading;
  }

  async function readModel(studyId: string, v: number): Promise<StoredModel> {
    const row = await findModel(db, studyId, v);
    if (!row) throw new NotFoundError(`study ${studyId} has no model version ${v}`);
    return { version: row.version, bytes: new Uint8Array(row.weights), sha256: row.sha256, signature: row.signature, signerFingerprint: row.signer_fingerprint };
  }

  /** The decoded model, cached with its bytes (read-only: strategies never mutate the global model). */
  async function getModelWeights(studyId: string, version: number): Promise<WeightSet> {
    const key = `${studyId}/${version}`;
    const cached = decoded.get(key);
    if (cached) return cached;
    const weights = decodeWeights((await getModel(studyId, version)).bytes);
    decoded.set(key, weights, weights.reduce((n, t) => n + t.values.byteLength, 0));
    return weights;
  }

  return { getConfig, getModel, getModelWeights };
}

/**
 * A study's status: state, nodes, and a summary of each round. The config is the study's cached
 * parse (it never changes once written): the dashboard and the demo long-poll this once or twice
 * a round, and parsing the stored config each time was most of the coordinator's zod time.
 */
async function studyStatus(db: Db, studyId: string, getConfig: (studyId: string) => Promise<StudyConfig>, fromRound: number): Promise<StudyStatus> {
  const rows = await findStudyStatusRows(db, studyId, fromRound);
  if (!rows) throw new NotFoundError(`study ${studyId} does not exist`);
  const { study, rounds } = rows;
  const nodes = study.nodes;
  const summaries: RoundSummary[] = rounds.map((r) => ({
    round: r.round,
    phase: r.phase,
    participants: r.participants,
    updatesReceived: Number(r.updates_received ?? 0),
    numExamples: r.num_examples,
    meanLoss: r.mean_loss,
    validationAuc: r.validation_auc,
    validationLoss: r.validation_loss,
    validationMetrics: r.validation_metrics ?? null,
    // Regional personalization (fedmark node --personalize; close-evaluation.ts).
    personalizedMetrics: r.personalized_metrics ?? null,
    personalizedNodes: r.personalized_nodes ?? 0,
    globalOnPersonalizedMetrics: r.global_on_personalized_metrics ?? null,
    failureReason: r.failure_reason,
    startedAt: new Date(r.started_at).toISOString(),
    closedAt: r.closed_at ? new Date(r.closed_at).toISOString() : null,
    modelSha256: r.model_sha256 ?? null,
  }));
  return {
    id: study.id,
    name: study.name,
    state: study.state,
    ...stopFields(study),
    currentRound: study.current_round,
    latestModelVersion: study.latest_model_version,
    config: await getConfig(studyId),
    nodes: nodes.map((n) => ({ id: n.id, name: n.name, region: n.region, state: n.state, message: n.state_message })),
    rounds: summaries,
  };
}

/** A round's record: phase, participants, and each update's metadata (size, hash, norm; never values). */
async function roundDetail(db: Db, studyId: string, round: number) {
  const row = await findRound(db, studyId, round);
  if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
  const updates = await listRoundUpdates(db, studyId, round);
  return {
    studyId,
    round,
    phase: row.phase,
    participants: row.participants,
    mechanism: row.mechanism,
    clipNorm: row.clip_norm,
    failureReason: row.failure_reason,
    updates: updates.map((u) => {
      const meta = u.meta as { deltaNorm?: number; clipped?: boolean; dpSgd?: unknown };
      return { nodeId: u.node_id, name: u.name, region: u.region, sha256: u.sha256, bytes: u.bytes, numExamples: u.num_examples, loss: u.loss, deltaNorm: meta.deltaNorm ?? null, clipped: meta.clipped ?? false, dpSgd: meta.dpSgd ?? null, acceptedAt: new Date(u.accepted_at).toISOString() };
    }),
  };
}

/** Reads of a study's state: its status, its rounds, and what each role may see of them. */
function createStudyReads(db: Db, getConfig: (studyId: string) => Promise<StudyConfig>) {
  /** `fromRound`: only rounds from that one on in `rounds` (a follower that has the earlier ones; 0 or none: every round). */
  const getStatus = (studyId: string, fromRound = 0) => studyStatus(db, studyId, getConfig, fromRound);
  const getRound = (studyId: string, round: number) => roundDetail(db, studyId, round);

  return {
    getStatus,
    getRound,
    listStudies: () => listStudies(db),
    /** The study as `p` may see it (see auth/visibility.ts). */
    getStatusFor: async (p: Principal, studyId: string, fromRound = 0) => visibleStatus(p, await getStatus(studyId, fromRound)),
    /** A round as `p` may see it: 403 for a node that did not take part. */
    async getRoundFor(p: Principal, studyId: string, round: number) {
      const detail = await getRound(studyId, round);
      return visibleRound(p, detail, p.role === 'analyst' ? await nodeIdsInRegion(db, studyId, p.region) : undefined);
    },
    /** One node's submission in a round, if `p` may read it. */
    async getUpdateFor(p: Principal, studyId: string, round: number, nodeId: string) {
      const detail = await getRound(studyId, round);
      return visibleUpdate(p, nodeId, detail.updates.find((u) => u.nodeId === nodeId), { studyId, round, mechanism: detail.mechanism as Record<string, unknown> | null });
    },
    /** What a node reads of its own study (GET /v1/nodes/me/study): its state and configuration, `release` list included. */
    async getStudyForNode(studyId: string) {
      const study = await findStudyRow(db, studyId);
      if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
      return { studyId: study.id, state: study.state, ...stopFields(study), currentRound: study.current_round, config: await getConfig(studyId) };
    },
  };
}
