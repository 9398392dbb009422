import type { EvaluationReport, StudyConfig } from '../../protocols/messages.ts';
import { poolStudyEvaluation, type PooledMetrics } from '../../protocols/model-kinds/kind.ts';
import { AppError, BadRequestError } from '../errors.ts';
import { checkEvaluationCount, ClaimOutOfBoundsError } from './claims.ts';
import { poolWhatPools, screenEvaluations, type ExcludedEvaluation, type PoolableEvaluation, type StoredEvaluation } from './evaluation-pooling.ts';

/**
 * Regional personalization at the coordinator (issue 9; the node half is client-node/personalize.ts).
 * A node that ran `fedmark node --personalize` adds to its evaluation of the final global model
 * `personalized: { numExamples, stats }`: the same kind's statistics for its locally fine-tuned
 * copy on the same validation rows (release field `evaluation.personalized`). The weights of that
 * copy never come here. The part is checked exactly like `stats` (kind, bins, noised iff the study
 * runs DP, rows that add up, the node's validation share), stored beside the report, and pooled
 * at the round's close next to the global model pooled over the SAME nodes: comparing the
 * personalized metrics with the global ones over every node would mix two populations.
 */

/**
 * Checks the `personalized` part of a report with the checks of `stats` (`check`, intake.ts's
 * checkEvaluationReport), its fields named under `personalized.`; without DP its count must be the
 * report's (the same validation rows). Nothing to check when the part is absent.
 */
export function checkPersonalizedReport(config: StudyConfig, report: EvaluationReport, check: (config: StudyConfig, report: EvaluationReport) => void): void {
  const p = report.personalized;
  if (!p) return;
  try {
    check(config, { numExamples: p.numExamples, stats: p.stats });
  } catch (err) {
    if (err instanceof AppError && err.status === 400) throw new BadRequestError(err.message.replace(/^evaluation refused: /, 'evaluation refused: personalized: '), `personalized.${err.field ?? 'stats'}`, err.code);
    throw err;
  }
  if (config.evaluation === 'exact' && p.numExamples !== report.numExamples) {
    throw new BadRequestError(`evaluation refused: personalized.numExamples ${p.numExamples} differs from numExamples ${report.numExamples}; the personalized model is evaluated on the same validation rows`, 'personalized.numExamples', 'INVALID_EVALUATION');
  }
}

/** The personalized count against the node's validation share, like the report's own (claims.ts). */
export function checkPersonalizedCount(config: StudyConfig, report: EvaluationReport, declared: number | undefined): void {
  const p = report.personalized;
  if (!p) return;
  try {
    checkEvaluationCount(config, { numExamples: p.numExamples, stats: p.stats }, declared);
  } catch (err) {
    if (err instanceof ClaimOutOfBoundsError) throw new ClaimOutOfBoundsError(err.message.replace(/^evaluation refused: /, 'evaluation refused: personalized: '), 'personalized.numExamples', err.code);
    throw err;
  }
}

/** The columns a report's personalized part is stored in (null when it has none). */
export function personalizedColumns(report: EvaluationReport): { personalized_stats: string | null; personalized_num_examples: number | null } {
  return report.personalized ? { personalized_stats: JSON.stringify(report.personalized.stats), personalized_num_examples: report.personalized.numExamples } : { personalized_stats: null, personalized_num_examples: null };
}

/** A stored evaluation row with its personalized columns (migration 0019). */
export type StoredWithPersonalized = StoredEvaluation & { personalized_stats?: unknown; personalized_num_examples?: number | null };

export interface PersonalizedPooling {
  personalizedMetrics: PooledMetrics | null;
  personalizedNodes: number;
  globalOnPersonalizedMetrics: PooledMetrics | null;
  excluded: ExcludedEvaluation[];
}

/**
 * Pools the personalized statistics of the nodes whose global evaluation was pooled (`pooled`)
 * and that sent one, with the kind's pool function, and the global statistics of exactly those
 * nodes. A personalized part that cannot be pooled is screened out like a report (its node then
 * counts in neither): it never keeps the round open and never throws.
 */
export function poolPersonalized(config: StudyConfig, pooled: PoolableEvaluation[], rows: StoredWithPersonalized[]): PersonalizedPooling {
  const pooledIds = new Set(pooled.map((e) => e.node_id));
  const parts: StoredEvaluation[] = rows
    .filter((r) => pooledIds.has(r.node_id) && r.personalized_stats !== null && r.personalized_stats !== undefined)
    .map((r) => ({ node_id: r.node_id, num_examples: Number(r.personalized_num_examples), loss: null, stats: r.personalized_stats }));
  const screened = screenEvaluations(config, parts);
  const pool = (reports: PoolableEvaluation[]) => poolStudyEvaluation(config, reports.map((r) => r.stats));
  const personal = poolWhatPools(screened.usable, pool);
  const nodes = new Set(personal.pooled.map((r) => r.node_id));
  const excluded = [...screened.excluded, ...personal.excluded].map((e) => ({ nodeId: e.nodeId, reason: `personalized: ${e.reason}` }));
  if (nodes.size === 0 || !personal.metrics) return { personalizedMetrics: null, personalizedNodes: 0, globalOnPersonalizedMetrics: null, excluded };
  const sameNodes = pooled.filter((e) => nodes.has(e.node_id));
  return { personalizedMetrics: personal.metrics, personalizedNodes: nodes.size, globalOnPersonalizedMetrics: pool(sameNodes), excluded };
}
