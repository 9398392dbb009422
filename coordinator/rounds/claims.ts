import { expectedEvaluation, type EvaluationReport, type StudyConfig, type UpdateMeta } from '../../protocols/messages.ts';
import { REGRESSION_EVALUATION_SENSITIVITY } from '../../protocols/privacy/noised-regression.ts';
import { recommendEvaluationNoiseStd } from '../../protocols/privacy/noised-recommend.ts';
import { clipToNorm, distanceNorm, subtract, type WeightSet } from '../../protocols/tensors.ts';
import { BadRequestError } from '../errors.ts';

/**
 * Node claims, bounded and checked (issue 11; README, "Node claims are bounded"). Everything a
 * node says about its data (example counts, evaluation counts) and the size of what it sends is
 * its own word: these checks keep one node from taking over, stalling or fooling the federation
 * with a large count, a large update or a fabricated evaluation. They run before anything of the
 * message is stored. A study with `bounds: null` (the attack demo's undefended baseline) keeps
 * only the schema's checks.
 */

/** A node claim outside the study's bounds or the node's own declarations: 400 naming the field. */
export class ClaimOutOfBoundsError extends BadRequestError {}

export const CLAIM_CODES = {
  count: 'COUNT_OUT_OF_BOUNDS',
  norm: 'UPDATE_NORM_OUT_OF_BOUNDS',
  evaluation: 'EVALUATION_OUT_OF_BOUNDS',
} as const;

/** Under DP (central or DP-SGD) counts are not weights: a count is unverifiable, and one node's weight must not exceed everyone else's. */
export function usesEqualWeights(config: StudyConfig): boolean {
  return config.privacy?.central !== undefined || config.privacy?.dpSgd !== undefined;
}

/** An update's weight in the aggregate: 1 under DP; otherwise its count, capped by the study. */
export function aggregationWeight(config: StudyConfig, numExamples: number): number {
  if (usesEqualWeights(config)) return 1;
  return config.bounds ? Math.min(numExamples, config.bounds.maxExamplesPerNode) : numExamples;
}

/**
 * The rows a node declared: the smaller of its latest status report's `data.rows` (`fromStatus`,
 * read with the rest of an update's or evaluation's intake: round-repository.ts readUpdateIntake)
 * and, for an update, the `data.rows` beside it (a node is held to every declaration it made).
 * Undefined when the study releases neither.
 */
export function declaredRowsOf(fromStatus: number | undefined, meta?: UpdateMeta): number | undefined {
  const declared = [fromStatus, meta?.data?.rows].filter((r): r is number => typeof r === 'number' && Number.isFinite(r));
  return declared.length ? Math.min(...declared) : undefined;
}

/** An update's count may not exceed the rows the node declared (nothing is stored when it does). */
export function checkUpdateCount(config: StudyConfig, meta: UpdateMeta, declared: number | undefined): void {
  if (!config.bounds || declared === undefined || meta.numExamples <= declared) return;
  throw new ClaimOutOfBoundsError(`update refused: numExamples ${meta.numExamples} is more than the ${declared} rows this node declared; nothing of it was stored`, 'numExamples', CLAIM_CODES.count);
}

export interface BoundedUpdate {
  weights: WeightSet;
  /** The raw delta norm when it was over the bound (the update was scaled down to `clippedTo`). */
  clippedFrom?: number;
  clippedTo?: number;
}

/**
 * The study's update-norm bound: an update whose delta (update - global) is longer than
 * bounds.maxUpdateNorm is scaled down to it ('clip') or refused ('refuse', 400 naming the norm,
 * which the refusal's audit entry carries). Decoding already refused non-finite values.
 */
export function boundUpdate(config: StudyConfig, global: WeightSet, update: WeightSet): BoundedUpdate {
  const bounds = config.bounds;
  if (!bounds) return { weights: update };
  const norm = distanceNorm(update, global);
  if (!Number.isFinite(norm)) throw new ClaimOutOfBoundsError('update refused: its distance to the global model is not finite', 'body', CLAIM_CODES.norm);
  if (norm <= bounds.maxUpdateNorm) return { weights: update };
  if (bounds.onOversizedUpdate === 'refuse') {
    throw new ClaimOutOfBoundsError(
      `update refused: its delta from the global model has L2 norm ${norm.toPrecision(6)}, above the study's bound ${bounds.maxUpdateNorm} (bounds.maxUpdateNorm, onOversizedUpdate 'refuse'); nothing of it was stored`,
      'body',
      CLAIM_CODES.norm,
    );
  }
  // Only an oversized update pays for a delta array.
  const { clipped } = clipToNorm(subtract(update, global), bounds.maxUpdateNorm);
  const byName = new Map(global.map((t) => [t.name, t.values] as const));
  // global + clipped delta, in float64: the aggregate sees exactly the bounded update.
  const weights = clipped.map((t) => {
    const g = byName.get(t.name)!;
    const values = new Float64Array(t.values.length);
    for (let i = 0; i < values.length; i++) values[i] = g[i] + t.values[i];
    return { name: t.name, shape: [...t.shape], values };
  });
  return { weights, clippedFrom: norm, clippedTo: bounds.maxUpdateNorm };
}

/**
 * Validation rows a node may report: its validation share of its declared rows. The node puts
 * each row on the validation side when a keyed hash of the row is below the fraction
 * (client-node/data.ts validationSplit), so an honest count is Binomial(rows, fraction). The bound
 * is the mean plus 6 standard deviations plus 2: an honest node exceeds it with probability below
 * 1e-6 at every size (test/coordinator/claims.test.ts sums the exact binomial tail), while a
 * fabricated report can claim at most that many rows.
 */
export function maxValidationRows(config: StudyConfig, rows: number): number {
  // Recommendation evaluates leave-last-out: one report row per user with at least two
  // interactions (client-node/data-recommend.ts), so never more than half the declared rows,
  // whatever validationFraction says (it does not apply to that split).
  if (config.task.kind === 'recommend') return Math.floor(rows / 2);
  const f = config.training.validationFraction;
  return Math.min(rows, Math.ceil(f * rows + 6 * Math.sqrt(rows * f * (1 - f))) + 2);
}

/** Slack on a noised evaluation count (under DP): 10 sigma of the sum of 2 x bins noised cells (binary) or of the noised count (regression); 0 without DP. */
export function noisedCountSlack(config: StudyConfig): number {
  const expected = expectedEvaluation(config.privacy);
  if (!expected.noised) return 0;
  // Regression: one noised count of std z x sensitivity 2 (protocols/privacy/noised-regression.ts).
  // Recommend: one noised user count of std z sqrt(3) (protocols/privacy/noised-recommend.ts).
  if (config.task.kind === 'recommend') return 10 * recommendEvaluationNoiseStd(expected.noiseStd);
  return config.task.kind === 'regression' ? 10 * REGRESSION_EVALUATION_SENSITIVITY * expected.noiseStd : 10 * expected.noiseStd * Math.sqrt(2 * expected.bins);
}

/**
 * An evaluation's count against the rows the node declared (checked once the round is locked):
 * its validation share, plus, under DP, noisedCountSlack (every count carries noise there, so the
 * exact bound would refuse honest reports).
 */
export function checkEvaluationCount(config: StudyConfig, report: EvaluationReport, declared: number | undefined): void {
  if (!config.bounds || declared === undefined) return;
  const slack = noisedCountSlack(config);
  const allowed = maxValidationRows(config, declared) + slack;
  if (report.numExamples <= allowed) return;
  const bound = slack > 0 ? `plus 10 sigma of evaluation noise (at most ${Math.floor(allowed)})` : `(at most ${allowed} with validationFraction ${config.training.validationFraction})`;
  throw new ClaimOutOfBoundsError(`evaluation refused: numExamples ${report.numExamples} is more than this node's validation share of its ${declared} declared rows ${bound}; nothing of it was stored`, 'numExamples', CLAIM_CODES.evaluation);
}
