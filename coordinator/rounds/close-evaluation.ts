import type { StudyConfig } from '../../protocols/messages.ts';
import type { Strategy } from '../../protocols/strategies/strategy.ts';
import { appendAudit } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import { meanLossOf } from '../regions/regional-models.ts';
import { evaluationStatsOf, poolStudyEvaluation } from './evaluation-pooling.ts';
import { listRoundEvaluations, listUpdaterIds, updateRound, type RoundRow } from './round-repository.ts';
import { cannotTrain, EVALUATION_STATES } from './round-state.ts';

export type EvaluationClosing = { kind: 'completed'; auc: number; evaluations: number };

/**
 * Closes the evaluation phase of a round whose row the caller's transaction locked, when every
 * node that trained reported (or can no longer) or the deadline passed: pools the reports into
 * the round's validation metrics and completes the round. Undefined: the round still waits.
 */
export async function closeEvaluation(tx: Db, row: RoundRow, config: StudyConfig, strategy: Strategy, t: Date): Promise<EvaluationClosing | undefined> {
  const { study_id: studyId, round } = row;
  const evaluations = await listRoundEvaluations(tx, studyId, round);
  const updaters = await listUpdaterIds(tx, studyId, round);
  // A node that lost its data (or left) since it trained cannot evaluate: do not wait for it.
  const unable = await cannotTrain(tx, updaters.filter((id) => !evaluations.some((e) => e.node_id === id)), EVALUATION_STATES);
  const allIn = evaluations.length + unable.length >= updaters.length;
  if (!allIn && t < new Date(row.evaluation_deadline!)) return undefined;
  // Flower's aggregate_evaluate, with the nodes that could not report as failures; by default
  // the kind's sufficient statistics, summed: the metrics of the pooled held-out rows.
  const results = evaluations.map((e) => ({ nodeId: e.node_id, numExamples: e.num_examples, stats: evaluationStatsOf(e) }));
  const failures = updaters.filter((id) => !evaluations.some((e) => e.node_id === id)).map((nodeId) => ({ nodeId, reason: unable.find((u) => u.nodeId === nodeId)?.state ?? 'late' }));
  const metrics = strategy.aggregateEvaluate(round, results, failures, (stats) => poolStudyEvaluation(config, stats));
  const auc = typeof metrics.auc === 'number' ? metrics.auc : Number.NaN;
  const loss = meanLossOf(evaluations);
  await updateRound(tx, studyId, round, { phase: 'completed', validation_auc: Number.isFinite(auc) ? auc : null, validation_loss: loss, validation_metrics: JSON.stringify(metrics), closed_at: t });
  await appendAudit(tx, { actor: 'coordinator', kind: 'round.completed', studyId, round, data: { validationAuc: Number.isFinite(auc) ? auc : null, validationLoss: loss, validationMetrics: metrics, evaluations: evaluations.length } });
  return { kind: 'completed', auc, evaluations: evaluations.length };
}
