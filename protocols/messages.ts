import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FeatureSpec, isNumericTarget } from './feature-spec.ts';
import { ModelSpec } from './model-spec.ts';
import { TrainingConfig } from './training-config.ts';
import { evaluationDp, hasDp, StudyPrivacy } from './privacy/study-privacy.ts';
import { EVERY_UPDATE_STRATEGIES, minimumUpdates, StrategyConfig } from './strategies/config.ts';
import { FitInstructions } from './strategies/strategy.ts';
import { Checkpoint } from './audit/audit-chain.ts';
import { EvaluationStats, regressionTargetProblem, TaskSpec } from './model-kinds/kind.ts';
import { forecastStudyProblems } from './model-kinds/forecast.ts';
import { recommendStudyProblems } from './model-kinds/recommend.ts';

/**
 * Every message between coordinator, nodes and operators. Both sides parse with these schemas,
 * so a field renamed here breaks the build on both sides rather than in production.
 */

/**
 * An id (study, node, token): the coordinator makes them from letters, digits and `_`. Anything
 * outside a URL-safe set (a NUL, a control or non-ASCII character, a space, `%`) is refused by the
 * schema, so it never reaches a query, a log line or a path (a NUL made PostgreSQL fail: a 500).
 */
export const Id = z.string().min(1).max(200).regex(/^[A-Za-z0-9._:~-]+$/, 'must be letters, digits and . _ : ~ - only');

/**
 * Everything a node may send, by name. A study declares which of these its nodes release (the
 * `release` list, shown to partners at GET /v1/nodes/me/study and to auditors); the node's single
 * release step sends nothing that is not on it. The first four are required: without them there is
 * no model to aggregate and no evaluation to pool.
 */
export const RELEASE_FIELDS = [
  'update.weights',
  'update.numExamples',
  'evaluation.numExamples',
  'evaluation.stats',
  'update.loss',
  'update.steps',
  'update.trainSeconds',
  'update.data',
  'update.dpSgd',
  'evaluation.loss',
  'status.data',
  'evaluation.personalized',
] as const;
export const ReleaseField = z.enum(RELEASE_FIELDS);
export type ReleaseField = z.infer<typeof ReleaseField>;
export const REQUIRED_RELEASE: readonly ReleaseField[] = ['update.weights', 'update.numExamples', 'evaluation.numExamples', 'evaluation.stats'];
export const ReleaseList = z
  .array(ReleaseField)
  .max(RELEASE_FIELDS.length)
  .refine((list) => new Set(list).size === list.length, { message: 'release lists a field twice' })
  .refine((list) => REQUIRED_RELEASE.every((f) => list.includes(f)), { message: `release must include ${REQUIRED_RELEASE.join(', ')}` });

/**
 * How each release is protected under DP (issue 10). A study with DP (privacy.central and/or
 * privacy.dpSgd) may release a field only if it is noised by a stated mechanism and charged, or
 * public by construction, or declared public by the study (privacy.publicFields, which partners
 * read at GET /v1/nodes/me/study before they enroll): an 'exact' field not declared public is
 * refused at creation (400, field `release`). Without DP every field is exact, and the study says
 * so (GET /v1/studies/:id: `evaluation: 'exact'`).
 */
export type ReleaseMechanism = 'noised-gaussian' | 'public' | 'exact';
export const RELEASE_UNDER_DP: Readonly<Record<ReleaseField, { mechanism: ReleaseMechanism; how: string }>> = {
  'update.weights': { mechanism: 'noised-gaussian', how: "DP-SGD on the node (noised clipped gradient sums, charged to the node's ledger) and/or central DP at the coordinator (clipped, summed and noised before anything is published, charged to the study's ledger)" },
  'update.numExamples': { mechanism: 'public', how: 'the constant 1 (every update weighs the same under DP); the node\'s row count never leaves' },
  'evaluation.numExamples': { mechanism: 'noised-gaussian', how: 'the noised evaluation count (binary: the sum of the noised histogram counts; regression: the noised count; recommend: the noised user count), clamped at 0 (post-processing of evaluation.stats, no extra cost)' },
  'evaluation.stats': { mechanism: 'noised-gaussian', how: "privacy.evaluation: binary, a per-label score histogram of `bins` bins, discrete Gaussian noise of std noiseMultiplier on every count (sensitivity 1); regression, the count and the sums of residuals, absolute and squared residuals, each residual clipped to residualClip, one discrete Gaussian mechanism of L2 sensitivity 2 (std 2 noiseMultiplier on the normalized sums); recommend, per evaluated USER (1, hit, ndcg) summed, one discrete Gaussian mechanism of L2 sensitivity sqrt(3) (std sqrt(3) noiseMultiplier); each charged to the node's ledger as (q = 1, z, 1 step)" },
  'update.dpSgd': { mechanism: 'public', how: "the node's spend: a function of the study's public DP-SGD parameters and of its ledger's history, no row value" },
  'update.loss': { mechanism: 'exact', how: 'mean training loss of the sampled rows, not noised' },
  'update.steps': { mechanism: 'exact', how: 'optimizer steps (with plain training a function of the row count), not noised' },
  'update.trainSeconds': { mechanism: 'exact', how: 'wall-clock seconds (grow with the row count), not noised' },
  'update.data': { mechanism: 'exact', how: 'data-quality counts (rows, fills, unseen categories, consent drops), not noised' },
  'evaluation.loss': { mechanism: 'exact', how: 'mean validation loss, not noised' },
  'status.data': { mechanism: 'exact', how: 'data-quality counts in status reports, not noised' },
  'evaluation.personalized': { mechanism: 'noised-gaussian', how: "the statistics of the node's locally fine-tuned copy of the final global model (fedmark node --personalize) on the same validation rows, noised exactly like evaluation.stats and charged to the node's ledger as one more evaluation; the personalized weights never leave the node" },
};

/** update.numExamples under DP: a public constant (RELEASE_UNDER_DP), never the node's rows. */
export const DP_UPDATE_COUNT = 1;

/**
 * What an evaluation report of this study looks like: without DP the kind's exact statistics
 * (binary: DEFAULT_HISTOGRAM_BINS bins); under DP the noised binary histogram of
 * privacy.evaluation's bins with that noise std. The node builds it, the coordinator checks it.
 */
export function expectedEvaluation(privacy: StudyPrivacy | undefined): { noised: false } | { noised: true; bins: number; noiseStd: number } {
  const dp = evaluationDp(privacy);
  return dp ? { noised: true, bins: dp.bins, noiseStd: dp.noiseMultiplier } : { noised: false };
}

/** The release list a study gets by default: every field without DP; under DP the fields that are not exact, plus those it declares public. */
export function defaultRelease(privacy: StudyPrivacy | undefined): ReleaseField[] {
  if (!hasDp(privacy)) return [...RELEASE_FIELDS];
  const declared = new Set(privacy?.publicFields ?? []);
  return RELEASE_FIELDS.filter((f) => RELEASE_UNDER_DP[f].mechanism !== 'exact' || declared.has(f));
}

/** How `field` leaves a node of this study: 'exact' without DP; under DP the table's mechanism, 'public' when the study declares it. */
export function releaseMechanism(privacy: StudyPrivacy | undefined, field: ReleaseField): ReleaseMechanism {
  if (!hasDp(privacy)) return 'exact';
  const m = RELEASE_UNDER_DP[field].mechanism;
  return m === 'exact' && (privacy?.publicFields ?? []).includes(field) ? 'public' : m;
}

/**
 * Largest example count one message may carry (2^31 - 1). A count is a node's own claim: anything
 * larger is refused by the schema (a 400 naming the field), never passed on to arithmetic or to
 * the database. Sums of counts over nodes and rounds are stored as BIGINT (migration 0013).
 */
export const MAX_EXAMPLE_COUNT = 2 ** 31 - 1;
/**
 * Default bound on the L2 norm of one update's delta (update - global model). Measured on the
 * shipped demos (the deltaNorm of every update.received audit entry, 20 rounds x 10 nodes):
 * honest nodes of `npm start` (churn, MLP 32-16) reach at most 2.06 (round 1; <= 1.6 after),
 * of `npm start -- --task regression` (customer value, tweedie) at most 3.43 (round 1; <= 2.4
 * after), of `npm start -- --model logreg --local-epochs 5` at most 1.28, of `npm start --
 * --dp-sgd` (epsilon 3: the DP noise is most of the delta) at most 4.40. 20 is 4.5x the largest
 * honest delta seen: a partner with other data or settings has room, while the issue's scaled
 * update (-1000 x the honest delta, norm ~1000-2000) is cut to 1-2% of its size. DP-SGD at a much
 * smaller epsilon adds more noise and may reach it: clipping then only removes noise at the
 * coordinator (post-processing: the node's guarantee stands); raise the bound for such a study.
 */
export const DEFAULT_MAX_UPDATE_NORM = 20;
/** Default bound on every published global weight; the node applies it too when a study has none. */
export const DEFAULT_MAX_ABS_WEIGHT = 1e4;

/**
 * What one node's claims may weigh, and what a model may look like (README, "Node claims are
 * bounded"). A node's example count, its update and its evaluation are its own word: these bounds
 * keep one node from taking over the federation with a large count or a large update, and keep an
 * absurd model from ever being published.
 */
export const StudyBounds = z.strictObject({
  /**
   * Cap on one node's aggregation weight: an update counts min(numExamples, this) examples. A
   * count above the node's declared rows (its `ready` status report, its update's data report)
   * is refused outright; this caps what a node may declare.
   */
  maxExamplesPerNode: z.number().int().positive().max(MAX_EXAMPLE_COUNT).default(1_000_000),
  /**
   * Cap on the L2 norm of one update's delta (update - global model), enforced with or without
   * DP. Honest deltas of the shipped demos stay under 4.4 (DEFAULT_MAX_UPDATE_NORM: 20).
   */
  maxUpdateNorm: z.number().positive().finite().default(DEFAULT_MAX_UPDATE_NORM),
  /** An update over maxUpdateNorm: scaled down to it ('clip', audited) or refused with 400 ('refuse'). */
  onOversizedUpdate: z.enum(['clip', 'refuse']).default('clip'),
  /**
   * A global model with any |w| above this (or any non-finite value) is never published: the
   * round fails and the previous model stays current. Nodes refuse such a model too.
   */
  maxAbsWeight: z.number().positive().finite().default(DEFAULT_MAX_ABS_WEIGHT),
});
export type StudyBounds = z.infer<typeof StudyBounds>;

/**
 * A warm start: the new study's round-0 model is `version` (default: the latest) of `study`,
 * copied byte for byte and signed again by the coordinator (coordinator/studies/init-from.ts).
 * The coordinator stores the version and the weights' sha256 it used, so the config (whose hash
 * the signed model statement carries) and the audit log name the source; a `sha256` given at
 * creation pins it (refused when the source's weights hash to anything else).
 */
export const InitFrom = z.strictObject({
  study: Id,
  version: z.number().int().nonnegative().max(1_000_000).optional(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (the source model sha256)').optional(),
});
export type InitFrom = z.infer<typeof InitFrom>;

/** "initialized from study X version V (sha256 ...)": how reports and lineages name a warm start's source. */
export function describeInitFrom(source: { study: string; version?: number; sha256?: string }): string {
  return `initialized from study ${source.study} version ${source.version ?? 'latest'}${source.sha256 ? ` (sha256 ${source.sha256})` : ''}`;
}

export const StudyConfig = z.object({
  name: z.string().min(1).max(200),
  /** The model kind: binary classification (default) or regression, with its loss. */
  task: TaskSpec.default({ kind: 'binary' }),
  model: ModelSpec,
  /** How the coordinator aggregates: `{ name, ...params }` (README, "Strategies"). */
  strategy: StrategyConfig.default({ name: 'fedavg' }),
  /**
   * What nodes release, by name (RELEASE_FIELDS); default: all of them without DP; under DP the
   * noised and public ones (defaultRelease, RELEASE_UNDER_DP) and those privacy.publicFields names.
   */
  release: ReleaseList.optional(),
  features: FeatureSpec,
  training: TrainingConfig.default(TrainingConfig.parse({})),
  rounds: z.number().int().positive().max(100_000),
  minNodesPerRound: z.number().int().positive().max(100_000).default(2),
  /** Nodes that must be enrolled and ready before round 1 opens (default: minNodesPerRound). */
  minNodesToStart: z.number().int().positive().max(100_000).optional(),
  /** Seconds nodes have, from a round's start, to submit their update. */
  roundDeadlineSeconds: z.number().positive().max(7 * 24 * 3600).default(120),
  /** Seconds nodes have to report their evaluation of a freshly aggregated model. */
  evaluationDeadlineSeconds: z.number().positive().max(7 * 24 * 3600).default(60),
  /** Seed of the round-0 model. */
  seed: z.number().int().nonnegative().default(42),
  /** Open the next round as soon as the last one ends (otherwise an operator starts each round). */
  autoAdvance: z.boolean().default(true),
  /**
   * When nodes evaluate round r's new model (issue 13). 'own-phase' (absent: stored studies keep
   * it): an evaluation phase of its own, the next round opens once it closes. 'with-next-fit': the
   * next round opens as soon as round r aggregates, and each node evaluates model r at the start of
   * its fit task of round r+1 (the model it trains from: one download, one task poll); round r
   * completes when those evaluations are in or its evaluation deadline passes. A node not in round
   * r+1, and the last round, get a standalone evaluation task as before.
   */
  evaluationSchedule: z.enum(['own-phase', 'with-next-fit']).optional(),
  /** Layered consent: the purpose of the model and the column holding each row's consent level. */
  consent: z.object({ purpose: z.enum(['basic', 'personalization']), column: z.string().min(1) }).optional(),
  /** Differential privacy: central (client-level) at the coordinator, DP-SGD on the nodes, budget. */
  privacy: StudyPrivacy.optional(),
  /**
   * Bounds on node claims (StudyBounds; every field defaults). `null`: no bounds at all, the
   * legacy behaviour, for the attack demo's undefended baseline only; creating such a study warns.
   */
  bounds: StudyBounds.nullable().default(() => StudyBounds.parse({})),
  /**
   * The jurisdictions (policy profile names, e.g. EU-GDPR) of the partners the study expects:
   * creation is refused when the study breaks the current policy of any of them (issue 12).
   */
  jurisdictions: z.array(z.string().min(1).max(50)).max(100).refine((list) => new Set(list).size === list.length, { message: 'jurisdictions lists a jurisdiction twice' }).optional(),
  /** Warm start (issue 9, quarterly recalibration): round 0 is this study's model, not the seeded one (InitFrom). */
  initFrom: InitFrom.optional(),
}).superRefine((study, ctx) => {
  const strategy = study.strategy;
  if (study.privacy?.central && EVERY_UPDATE_STRATEGIES.has(strategy.name)) {
    ctx.addIssue({
      code: 'custom',
      path: ['strategy', 'name'],
      message: `central DP cannot wrap ${strategy.name}: the DP wrapper clips, sums and noises the mean delta, and ${strategy.name} does not aggregate through a mean; use fedavg, fedprox, fedavgm, fedadam, fedyogi or fedadagrad`,
    });
  }
  const needed = minimumUpdates(strategy);
  if (needed > study.minNodesPerRound) {
    const field = strategy.name === 'trimmed-mean' ? 'trimFraction' : strategy.name === 'krum' && strategy.select > 2 * strategy.byzantine + 3 ? 'select' : 'byzantine';
    const why =
      strategy.name === 'trimmed-mean'
        ? `trims floor(${strategy.trimFraction} x n) values at each end, which is 0 below ${needed} updates: it would be a plain mean, not robust`
        : `needs n > 2f + 2 and n >= select`;
    ctx.addIssue({
      code: 'custom',
      path: ['strategy', field],
      message: `${strategy.name} ${why}, but minNodesPerRound is ${study.minNodesPerRound}; raise minNodesPerRound to ${needed} or change strategy.${field}`,
    });
  }
  const release = study.release ?? defaultRelease(study.privacy);
  if (hasDp(study.privacy)) {
    const unknown = (study.privacy?.publicFields ?? []).find((f) => !(RELEASE_FIELDS as readonly string[]).includes(f));
    if (unknown !== undefined) ctx.addIssue({ code: 'custom', path: ['privacy', 'publicFields'], message: `"${unknown}" is not a release field (${RELEASE_FIELDS.join(', ')})` });
    const exact = release.filter((f) => releaseMechanism(study.privacy, f) === 'exact');
    if (exact.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['release'],
        message: `under DP every released field must be noised or declared public, but ${exact.join(', ')} ${exact.length === 1 ? 'is' : 'are'} sent exactly (${exact.map((f) => `${f}: ${RELEASE_UNDER_DP[f].how}`).join('; ')}); drop ${exact.length === 1 ? 'it' : 'them'} from release, or list ${exact.length === 1 ? 'it' : 'them'} in privacy.publicFields to publish ${exact.length === 1 ? 'it' : 'them'} outside the epsilon`,
      });
    }
  }
  if (study.privacy?.dpSgd && !release.includes('update.dpSgd')) {
    ctx.addIssue({ code: 'custom', path: ['release'], message: 'a study with DP-SGD must release update.dpSgd: the per-node privacy report is built from what each node says it spent' });
  }
  const target = study.features.target;
  const numericTarget = isNumericTarget(target);
  if ((study.task.kind === 'regression' || study.task.kind === 'forecast') !== numericTarget) {
    ctx.addIssue({
      code: 'custom',
      path: ['features', 'target'],
      message: study.task.kind === 'regression' || study.task.kind === 'forecast' ? `a ${study.task.kind} study needs a numeric target ({ column, kind: "numeric", center, scale })` : 'a binary study needs a target with a positive class ({ column, positive })',
    });
  }
  // Forecast (issue 9): no noised evaluation yet (refused under DP), target and columns checked.
  for (const issue of forecastStudyProblems(study)) ctx.addIssue({ code: 'custom', ...issue });
  // Recommend (issue 9): model, feature spec and privacy checked against the task (recommend.ts).
  for (const issue of recommendStudyProblems(study)) ctx.addIssue({ code: 'custom', ...issue });
  const targetProblem = isNumericTarget(target) ? regressionTargetProblem(study.task, target) : undefined;
  if (targetProblem) ctx.addIssue({ code: 'custom', ...targetProblem });
}).transform((study) => ({
  ...study,
  release: study.release ?? defaultRelease(study.privacy),
  /**
   * Derived, never taken from the input: how evaluations are released. 'exact' without DP (the
   * kind's exact sufficient statistics); 'noised' under DP (privacy.evaluation's mechanism).
   */
  evaluation: (evaluationDp(study.privacy) ? 'noised' : 'exact') as 'noised' | 'exact',
}));
export type StudyConfig = z.infer<typeof StudyConfig>;

/** The study's evaluation schedule ('own-phase' when the config does not say). */
export function evaluationScheduleOf(config: Pick<StudyConfig, 'evaluationSchedule'>): 'own-phase' | 'with-next-fit' {
  return config.evaluationSchedule ?? 'own-phase';
}
export type StudyConfigInput = z.input<typeof StudyConfig>;

export const CreateEnrollmentToken = z.object({
  studyId: Id,
  nodeName: z.string().min(1).max(200),
  region: z.string().min(1).max(100),
  /**
   * The law the node's data falls under (a policy profile the coordinator has, e.g. EU-GDPR):
   * set by the operator, binding on the node. Without it, the node must name a known one itself.
   */
  jurisdiction: z.string().min(1).max(50).optional(),
  expiresInSeconds: z.number().int().positive().max(30 * 24 * 3600).default(3600),
});
export type CreateEnrollmentToken = z.infer<typeof CreateEnrollmentToken>;

export const EnrollRequest = z.object({
  token: z.string().min(16).max(200),
  /** The node's OpenPGP public key (armored); the coordinator pins it to the node id. */
  publicKey: z.string().min(100).max(20_000),
  /**
   * The law the node's data falls under, as the node's operator configured it (a policy profile
   * name, e.g. EU-GDPR). Must match the token's jurisdiction when the token has one.
   */
  jurisdiction: z.string().min(1).max(50).optional(),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export const EnrollResponse = z.object({ nodeId: Id, apiKey: z.string(), studyId: Id, name: z.string(), region: z.string(), jurisdiction: z.string().optional(), coordinatorFingerprint: z.string(), coordinatorPublicKey: z.string() });
export type EnrollResponse = z.infer<typeof EnrollResponse>;

/** What a node pulls: train on the global model of `modelVersion`, or evaluate it. */
export const Task = z.object({
  kind: z.enum(['fit', 'evaluate']),
  studyId: Id,
  round: z.number().int().positive(),
  /** Global model version to download (round r trains on version r-1 and evaluates version r). */
  modelVersion: z.number().int().nonnegative(),
  modelSha256: z.string().length(64),
  deadline: z.string(),
  config: StudyConfig,
  /** This node's instructions for a fit task (the strategy's configureFit). */
  instructions: FitInstructions.optional(),
  /**
   * A fit task of a study with evaluationSchedule 'with-next-fit': first evaluate this task's
   * starting model (version `round`, the same download) for that earlier round, by its deadline,
   * and report it as an evaluation of that round; then train.
   */
  evaluate: z
    .object({
      round: z.number().int().positive(),
      deadline: z.string(),
      /**
       * The coordinator takes this evaluation on the update request itself (UPDATE_WITH_EVALUATION_TYPE,
       * protocols/update-frame.ts): one signed request a round instead of two. Absent (an older
       * coordinator): the evaluation goes on its own, before training.
       */
      withUpdate: z.boolean().optional(),
    })
    .optional(),
  /**
   * The coordinator's latest signed audit checkpoint: the node checks its signature with the
   * pinned key and keeps it (client-node/witness.ts), so a rewritten log is caught against its copy.
   * One the node cannot read is dropped, never the task with it.
   */
  auditCheckpoint: Checkpoint.optional().catch(undefined),
  /**
   * sha256 of the study config (JSON) the task was built with. A node that sends it back on its
   * next poll (`GET /v1/tasks/next?config=HASH`) gets its tasks without `config` (TaskMessage):
   * the config never changes once written, and parsing it on every poll was most of a node's
   * zod time (issue 13). Nodes that do not send it get the full config, as before.
   */
  configSha256: z.string().length(64).optional(),
  /**
   * The policy profile version in force for the node's jurisdiction when the task was built
   * (null: none). A node re-reads `/v1/nodes/me/policy` only when this differs from the version
   * it last read (profiles are immutable per version), instead of once per fit task.
   */
  policyInForce: z.object({ jurisdiction: z.string().nullable(), version: z.number().int().nullable() }).optional(),
  /**
   * The task's model (`modelVersion`) itself, when small enough (the coordinator's
   * FEDMARK_TASK_MODEL_INLINE_BYTES): the binary codec's bytes in base64 and the coordinator's
   * signature over them, exactly what `GET /v1/studies/{id}/models/{version}` answers. The node
   * checks them as it checks a download (hash against `modelSha256`, signature against its pinned
   * key) and skips the download: one signed request fewer per node and round (issue 13). Absent:
   * the node downloads the model as before.
   */
  model: z.object({ bytes: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64'), signature: z.string().nullable() }).optional(),
});
export type Task = z.infer<typeof Task>;

/** A task as sent: `config` is left out when the node echoed its `configSha256` (see Task.configSha256). */
export const TaskMessage = Task.extend({ config: StudyConfig.optional() });
export type TaskMessage = z.infer<typeof TaskMessage>;

/**
 * Counts, never rows: what a node tells the coordinator about its data. Strict: no statistic of a
 * column (the target's class balance included, which would tell a partner's churn rate) may ride
 * along; a report carrying anything else is refused.
 */
export const DataReport = z.strictObject({
  rows: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  /** Rows left out because their consent does not cover the study's purpose. */
  droppedNoConsent: z.number().int().nonnegative().optional(),
  /** Features the node's own policy forbids: their inputs are zeroed, never used. */
  droppedFeatures: z.array(z.string()).optional(),
  missingFilled: z.record(z.string(), z.number().int().nonnegative()),
  unseenCategories: z.record(z.string(), z.number().int().nonnegative()),
});
export type DataReport = z.infer<typeof DataReport>;

/** Sent in the `fedmark-update` header beside the binary weights body. */
/** What a node reports of its own record-level privacy spending (DP-SGD), never its data. */
export const NodePrivacySpend = z.object({
  accountant: z.enum(['rdp', 'pld']),
  delta: z.number(),
  epsilonRound: z.number().nonnegative(),
  epsilonTotal: z.number().nonnegative(),
  noiseMultiplier: z.number(),
  samplingRate: z.number(),
  steps: z.number().int(),
  clipNorm: z.number(),
});
export type NodePrivacySpend = z.infer<typeof NodePrivacySpend>;

/** What rides beside an update's weights; each field is a release (RELEASE_FIELDS 'update.*'). */
export const UpdateMeta = z.strictObject({
  /** Training rows: checked against the node's declared rows, capped as a weight (StudyBounds). */
  numExamples: z.number().int().positive().max(MAX_EXAMPLE_COUNT),
  dpSgd: NodePrivacySpend.optional(),
  loss: z.number().finite().nonnegative().optional(),
  steps: z.number().int().nonnegative().optional(),
  trainSeconds: z.number().nonnegative().optional(),
  data: DataReport.optional(),
});
export type UpdateMeta = z.infer<typeof UpdateMeta>;
export const UPDATE_META_HEADER = 'fedmark-update';

/**
 * The round binding a node signs into a request (the signature's "round" field). An update also
 * binds the SHA-256 of its metadata header, so the counts it reports are signed with its weights.
 */
export function roundBinding(studyId: string, round: number, updateMetaHeader?: string): string {
  const base = `${studyId}/${round}`;
  return updateMetaHeader === undefined ? base : `${base}#${createHash('sha256').update(updateMetaHeader).digest('hex')}`;
}

/**
 * What became of an evaluation that rode on an update request: stored (or the same one again), or
 * refused with the status, code and message the evaluation route would have answered. The update
 * is judged on its own either way.
 */
export const RiddenEvaluation = z.object({
  round: z.number().int().positive(),
  stored: z.boolean().optional(),
  refused: z.object({ status: z.number().int(), code: z.string(), message: z.string() }).optional(),
});
export type RiddenEvaluation = z.infer<typeof RiddenEvaluation>;

export const UpdateReceipt = z.object({
  studyId: Id,
  round: z.number().int(),
  nodeId: Id,
  sha256: z.string(),
  bytes: z.number().int(),
  acceptedAt: z.string(),
  /** The outcome of the evaluation the request carried (UPDATE_WITH_EVALUATION_TYPE), if it carried one. */
  evaluation: RiddenEvaluation.optional(),
  /**
   * The node's next task, when the request asked for it (?wait=S, as GET /v1/tasks/next) and one
   * came within the wait: the round's update and the next task poll in one signed request.
   */
  next: TaskMessage.optional(),
});
export type UpdateReceipt = z.infer<typeof UpdateReceipt>;

/** A node's evaluation of a global model: the kind's sufficient statistics (model-kinds/kind.ts). */
export const EvaluationReport = z.strictObject({
  /** Validation rows: at most the node's validation share of its declared rows. */
  numExamples: z.number().int().nonnegative().max(MAX_EXAMPLE_COUNT),
  loss: z.number().finite().nonnegative().optional(),
  stats: EvaluationStats,
  /**
   * `fedmark node --personalize`, final round only: the same statistics for the node's locally
   * fine-tuned copy of this global model, on the same validation rows (its weights never leave).
   */
  personalized: z.strictObject({ numExamples: z.number().int().nonnegative().max(MAX_EXAMPLE_COUNT), stats: EvaluationStats }).optional(),
});
export type EvaluationReport = z.infer<typeof EvaluationReport>;

export const NodeStatusReport = z.object({
  /**
   * model-rejected: the node refused a verified global model (non-finite or out-of-range weights);
   * training-failed: local training diverged (a non-finite loss or weights); no update was sent.
   * Like data-error, the round does not wait for such a node.
   */
  state: z.enum(['ready', 'data-error', 'privacy-ceiling', 'policy-refused', 'model-rejected', 'training-failed']),
  message: z.string().max(2000).optional(),
  data: DataReport.optional(),
});
export type NodeStatusReport = z.infer<typeof NodeStatusReport>;

export const RoundPhase = z.enum(['fit', 'evaluate', 'completed', 'failed']);
export type RoundPhase = z.infer<typeof RoundPhase>;

export const RoundSummary = z.object({
  round: z.number().int(),
  phase: RoundPhase,
  /** Nodes selected (invited) for the round. */
  participants: z.array(z.string()),
  /** Updates accepted in the round: the nodes that actually took part (at most participants). */
  updatesReceived: z.number().int().nonnegative(),
  numExamples: z.number().int(),
  meanLoss: z.number().nullable(),
  validationAuc: z.number().nullable(),
  validationLoss: z.number().nullable(),
  /** The model kind's pooled metrics (binary: auc, logLoss, brier; regression: rmse, mae, r2, bias, baselineRmse, baselineMae), with n. */
  validationMetrics: z.record(z.string(), z.number().nullable()).nullable().default(null),
  /**
   * Regional personalization (fedmark node --personalize, final round): the kind's pooled metrics
   * of the nodes' locally fine-tuned models, how many nodes sent them, and the global model's
   * metrics pooled over those same nodes (the fair comparison).
   */
  personalizedMetrics: z.record(z.string(), z.number().nullable()).nullable().default(null),
  personalizedNodes: z.number().int().nonnegative().default(0),
  globalOnPersonalizedMetrics: z.record(z.string(), z.number().nullable()).nullable().default(null),
  failureReason: z.string().nullable(),
  startedAt: z.string(),
  closedAt: z.string().nullable(),
  modelSha256: z.string().nullable(),
});
export type RoundSummary = z.infer<typeof RoundSummary>;

/**
 * A study's state: `completed` ran all its rounds; `stopped` ended early (privacy budget, policy
 * refusal, no eligible nodes, an operator's stop) and carries a stop reason in every view.
 */
export const StudyState = z.enum(['running', 'completed', 'stopped']);
export type StudyState = z.infer<typeof StudyState>;

export const StudyStatus = z.object({
  id: Id,
  name: z.string(),
  state: StudyState,
  /** Why a `stopped` study ended (null otherwise), who stopped it (`coordinator` or the operator's actor) and when. */
  stopReason: z.string().nullable().default(null),
  stoppedBy: z.string().nullable().default(null),
  stoppedAt: z.string().nullable().default(null),
  currentRound: z.number().int(),
  latestModelVersion: z.number().int(),
  config: StudyConfig,
  nodes: z.array(z.object({ id: Id, name: z.string(), region: z.string(), state: z.string(), message: z.string().nullable() })),
  rounds: z.array(RoundSummary),
  /** Changes seen so far; pass it back as `seen` with `wait` to long-poll for the next one. */
  changeCount: z.number().int().optional(),
});
export type StudyStatus = z.infer<typeof StudyStatus>;

/** Every error body: a stable code for scripts, a sentence for people, the field at fault if any. */
export const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string(), field: z.string().optional(), requestId: z.string().optional() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/**
 * Which message field is which release (RELEASE_FIELDS): the node's release step builds its
 * messages from these tables and the coordinator checks what arrives against them.
 */
export const UPDATE_META_RELEASE = {
  numExamples: 'update.numExamples',
  loss: 'update.loss',
  steps: 'update.steps',
  trainSeconds: 'update.trainSeconds',
  data: 'update.data',
  dpSgd: 'update.dpSgd',
} as const satisfies Record<keyof UpdateMeta, ReleaseField>;
export const EVALUATION_RELEASE = {
  numExamples: 'evaluation.numExamples',
  loss: 'evaluation.loss',
  stats: 'evaluation.stats',
  personalized: 'evaluation.personalized',
} as const satisfies Record<keyof EvaluationReport, ReleaseField>;
export const STATUS_RELEASE = { data: 'status.data' } as const satisfies Partial<Record<keyof NodeStatusReport, ReleaseField>>;

/**
 * The fields of a node's message that the study's release list does not allow (the coordinator's
 * second line of defence after the node's own release step): names of RELEASE_FIELDS.
 */
export function unreleasedFields(release: readonly ReleaseField[], message: { kind: 'update'; meta: UpdateMeta } | { kind: 'evaluation'; report: EvaluationReport } | { kind: 'status'; report: NodeStatusReport }): ReleaseField[] {
  const present = (table: Record<string, ReleaseField>, fields: object): ReleaseField[] =>
    Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .flatMap(([key]) => (key in table ? [table[key]] : []));
  const fields = message.kind === 'update' ? present(UPDATE_META_RELEASE, message.meta) : message.kind === 'evaluation' ? present(EVALUATION_RELEASE, message.report) : present(STATUS_RELEASE, message.report);
  return fields.filter((f) => !release.includes(f));
}
