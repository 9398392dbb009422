import { z } from 'zod';
import { NOISE_MULTIPLIER_FLOOR, NOISE_MULTIPLIER_FLOOR_REASON } from './calibrate.ts';
import { ClientLevelDpConfig } from './client-level-dp.ts';

/** Largest expected batch size a study may declare. */
const MAX_EXPECTED_BATCH = 1e7;

/** A study's noise multiplier: finite and at least the floor (calibrate.ts says why). */
const FlooredNoiseMultiplier = z
  .number()
  .finite()
  .min(NOISE_MULTIPLIER_FLOOR, { message: `noiseMultiplier must be at least ${NOISE_MULTIPLIER_FLOOR}: ${NOISE_MULTIPLIER_FLOOR_REASON}` });

/**
 * A study's privacy configuration: which mechanisms run, their parameters, the accountant, and
 * the study's total budget. Everything here goes into each round's record.
 */
export const CentralDpConfig = ClientLevelDpConfig.extend({
  noiseMultiplier: FlooredNoiseMultiplier,
  /** Poisson sampling rate of nodes per round (each ready node is selected with this probability). */
  nodeSamplingRate: z.number().gt(0).max(1).default(1),
});
export type CentralDpConfig = z.infer<typeof CentralDpConfig>;

/** Record-level DP-SGD run by each node on its own rows (Abadi et al. 2016). */
export const DpSgdConfig = z.object({
  noiseMultiplier: FlooredNoiseMultiplier,
  /** Per-example gradient L2 clip norm. */
  clipNorm: z.number().positive().finite(),
  /** Poisson sampling rate of examples per step; expected batch = rate x rows. */
  samplingRate: z.number().gt(0).max(1),
  /** Steps per round; default: one epoch in expectation (1 / samplingRate). */
  stepsPerRound: z.number().int().positive().max(1_000_000).optional(),
  learningRate: z.number().positive().max(100).default(0.1),
  /**
   * The fixed, public denominator of each step's noised gradient sum (the expected batch size,
   * Opacus's `expected_batch_size`: make_private(..., poisson_sampling=True) divides the noised
   * sum by it, not by the sampled batch). Dividing by q n instead would put the node's private
   * row count n into every released update (add/remove adjacency treats n as private). Default:
   * the study's training.batchSize (stepDenominator()).
   */
  expectedBatchSize: z.number().positive().finite().max(MAX_EXPECTED_BATCH).optional(),
});
export type DpSgdConfig = z.infer<typeof DpSgdConfig>;

/**
 * Federated evaluation under DP (issue 10): each node releases a coarse score histogram per label
 * (binary kind) with discrete Gaussian noise of std noiseMultiplier on every count. Adding or
 * removing one validation row changes one count by 1: L2 sensitivity 1, so one evaluation is a
 * Gaussian mechanism with multiplier z (no subsampling), RDP alpha / (2 z^2) (Mironov 2017,
 * Prop. 7), charged to the node's record-level ledger as (q = 1, z, 1 step). The report's
 * numExamples is the sum of the noised counts (post-processing: no extra cost). Defaults: 20 bins,
 * z = 5: epsilon 0.80 per evaluation at delta 1e-5 (RDP), 4.16 over 20 rounds on its own.
 */
export const EvaluationDpConfig = z.strictObject({
  bins: z.number().int().min(2).max(1000).default(20),
  noiseMultiplier: FlooredNoiseMultiplier.default(5),
  /**
   * Regression studies: the public bound B (target units) each validation residual is clipped to
   * before its noised sums leave (noised-regression.ts: sensitivity 2 of the normalized vector).
   * Default: DEFAULT_RESIDUAL_CLIP_SCALES (2) x features.target.scale (residualClipOf).
   */
  residualClip: z.number().positive().finite().optional(),
});
export type EvaluationDpConfig = z.infer<typeof EvaluationDpConfig>;
export const DEFAULT_EVALUATION_DP: EvaluationDpConfig = { bins: 20, noiseMultiplier: 5 };

export const StudyPrivacy = z
  .object({
    accountant: z.enum(['rdp', 'pld']).default('rdp'),
    delta: z.number().gt(0).lt(1).default(1e-5),
    /** Total client-level epsilon the study may spend; a round that would exceed it is refused. */
    budgetEpsilon: z.number().positive().finite().optional(),
    central: CentralDpConfig.optional(),
    dpSgd: DpSgdConfig.optional(),
    /** Evaluation under DP (EvaluationDpConfig; defaults when a DP study leaves it out). */
    evaluation: EvaluationDpConfig.optional(),
    /**
     * Release fields (RELEASE_FIELDS in protocols/messages.ts) the study declares public: sent in
     * the clear under DP, outside the epsilon. Partners see this list (GET /v1/nodes/me/study)
     * before they enroll. A DP study may release an un-noised field only if it is listed here.
     */
    publicFields: z.array(z.string().max(100)).max(50).optional(),
  })
  .refine((p) => p.budgetEpsilon === undefined || p.central !== undefined, {
    message: 'a study budget (budgetEpsilon) needs central DP: without it the coordinator cannot account client-level epsilon',
    path: ['budgetEpsilon'],
  });
export type StudyPrivacy = z.infer<typeof StudyPrivacy>;

/** Does the study run DP (central and/or DP-SGD)? Then evaluation and counts are noised too. */
export function hasDp(privacy: StudyPrivacy | undefined): boolean {
  return privacy?.central !== undefined || privacy?.dpSgd !== undefined;
}

/** The study's evaluation noise under DP (its declaration, else the defaults); undefined without DP. */
export function evaluationDp(privacy: StudyPrivacy | undefined): EvaluationDpConfig | undefined {
  if (!hasDp(privacy)) return undefined;
  return privacy!.evaluation ?? DEFAULT_EVALUATION_DP;
}

/**
 * DP-SGD's fixed, public denominator: the declared expectedBatchSize, else the study's
 * training.batchSize. Never q x the node's row count (see expectedBatchSize).
 */
export function stepDenominator(config: DpSgdConfig, trainingBatchSize: number): number {
  return config.expectedBatchSize ?? trainingBatchSize;
}

/** Steps of DP-SGD one round takes on a node. */
export function dpSgdStepsPerRound(config: DpSgdConfig): number {
  return config.stepsPerRound ?? Math.max(1, Math.round(1 / config.samplingRate));
}
