import type { StudyConfig } from '../../protocols/messages.ts';
import type { PooledMetrics } from '../../protocols/model-kinds/kind.ts';
import type { Strategy } from '../../protocols/strategies/strategy.ts';
import { appendAudits } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import { meanLossOf } from '../regions/regional-models.ts';
import { poolStudyEvaluation, poolWhatPools, screenEvaluations, type ExcludedEvaluation, type PoolableEvaluation } from './evaluation-pooling.ts';
import { listRoundEvaluations, listUpdaterIds, updateRound, type RoundRow } from './round-repository.ts';
import { hasDp } from '../../protocols/privacy/study-privacy.ts';
import { cannotTrain, EVALUATION_STATES } from './round-state.ts';
import { poolPersonalized } from './personalized-evaluation.ts';

export type EvaluationClosing = { kind: 'completed'; auc: number; evaluations: number; excluded: ExcludedEvaluation[]; refused: string[] };

/**
 * Node states in which a node that trained can still evaluate. Under DP an evaluation is a noised
 * release charged to the node's ledger (client-node/train.ts evaluate), so a node at its privacy
 * ceiling cannot evaluate either: it said so (client-node/task.ts refuseForBudget) and the round
 * does not wait for it. Without DP evaluating spends nothing, and such a node still reports.
 */
const DP_EVALUATION_STATES: ReadonlySet<string> = new Set([...EVALUATION_STATES].filter((s) => s !== 'privacy-ceiling'));
export function evaluationStates(config: StudyConfig): ReadonlySet<string> {
  return hasDp(config.privacy) ? DP_EVALUATION_STATES : EVALUATION_STATES;
}

/** The reason an `evaluation.refused` audit entry gives: the node's privacy budget would be passed. */
export const REFUSED_FOR_BUDGET = 'privacy-budget';

/**
 * Closes the evaluation phase of a round whose row the caller's transaction locked, when every
 * node that trained reported (or can no longer) or the deadline passed: pools the reports into
 * the round's validation metrics and completes the round. Undefined: the round still waits.
 *
 * No single report can keep the round open: one that cannot be pooled (wrong kind or bins, rows
 * that do not add up, anything that makes pooling throw) is excluded, with an
 * `evaluation.excluded` audit entry naming the node and why, and the round completes without it.
 */
export async function closeEvaluation(tx: Db, row: Pick<RoundRow, 'study_id' | 'round' | 'evaluation_deadline'>, config: StudyConfig, strategy: Strategy, t: Date): Promise<EvaluationClosing | undefined> {
  const { study_id: studyId, round } = row;
  const evaluations = await listRoundEvaluations(tx, studyId, round);
  const updaters = await listUpdaterIds(tx, studyId, round);
  // A node that lost its data (or left) since it trained cannot evaluate: do not wait for it.
  const unable = await cannotTrain(tx, updaters.filter((id) => !evaluations.some((e) => e.node_id === id)), evaluationStates(config));
  const allIn = evaluations.length + unable.length >= updaters.length;
  if (!allIn && t < new Date(row.evaluation_deadline!)) return undefined;
  const screened = screenEvaluations(config, evaluations);
  // Flower's aggregate_evaluate, with the nodes that could not report (and those excluded) as
  // failures; by default the kind's sufficient statistics, summed: the metrics of the pooled
  // held-out rows.
  const failures = [
    ...updaters.filter((id) => !evaluations.some((e) => e.node_id === id)).map((nodeId) => ({ nodeId, reason: unable.find((u) => u.nodeId === nodeId)?.state ?? 'late' })),
    ...screened.excluded.map((e) => ({ nodeId: e.nodeId, reason: 'excluded' })),
  ];
  const aggregate = (reports: PoolableEvaluation[]): PooledMetrics =>
    strategy.aggregateEvaluate(
      round,
      reports.map((e) => ({ nodeId: e.node_id, numExamples: e.num_examples, stats: e.stats })),
      failures,
      (stats) => poolStudyEvaluation(config, stats),
    );
  const pooling = poolWhatPools(screened.usable, aggregate);
  const excluded = [...screened.excluded, ...pooling.excluded];
  // Nodes whose privacy budget could not pay for the evaluation (their node.status entry has the ledger's words).
  const refused = unable.filter((u) => u.state === 'privacy-ceiling').map((u) => u.nodeId);
  const metrics = pooling.metrics ?? {};
  const auc = typeof metrics.auc === 'number' ? metrics.auc : Number.NaN;
  const loss = meanLossOf(pooling.pooled);
  // fedmark node --personalize: the fine-tuned copies' metrics, and the global model's over the same nodes.
  const personal = poolPersonalized(config, pooling.pooled, evaluations);
  const personalized = personal.personalizedNodes > 0 ? { personalizedMetrics: personal.personalizedMetrics, personalizedNodes: personal.personalizedNodes, globalOnPersonalizedMetrics: personal.globalOnPersonalizedMetrics } : {};
  const personalizedExcluded = personal.excluded.length > 0 ? { personalizedExcluded: personal.excluded } : {};
  await updateRound(tx, studyId, round, { phase: 'completed', validation_auc: Number.isFinite(auc) ? auc : null, validation_loss: loss, validation_metrics: JSON.stringify(metrics), closed_at: t, personalized_metrics: personal.personalizedMetrics ? JSON.stringify(personal.personalizedMetrics) : null, personalized_nodes: personal.personalizedNodes, global_on_personalized_metrics: personal.globalOnPersonalizedMetrics ? JSON.stringify(personal.globalOnPersonalizedMetrics) : null });
  // The transition's entries in one append (issue 13): exclusions, refusals, then the completion.
  await appendAudits(tx, [
    ...excluded.map((e) => ({ actor: 'coordinator', kind: 'evaluation.excluded', studyId, round, data: { nodeId: e.nodeId, reason: e.reason } })),
    ...refused.map((nodeId) => ({ actor: 'coordinator', kind: 'evaluation.refused', studyId, round, data: { nodeId, reason: REFUSED_FOR_BUDGET } })),
    {
      actor: 'coordinator',
      kind: 'round.completed',
      studyId,
      round,
      data: { validationAuc: Number.isFinite(auc) ? auc : null, validationLoss: loss, validationMetrics: metrics, evaluations: pooling.pooled.length, ...(excluded.length ? { excluded: excluded.length } : {}), ...(refused.length ? { refused: refused.length } : {}), ...personalized, ...personalizedExcluded, closedBy: allIn ? 'all-in' : 'deadline' },
    },
  ]);
  return { kind: 'completed', auc, evaluations: pooling.pooled.length, excluded, refused };
}
