import type { StudyConfig } from '../../protocols/messages.ts';
import { BinaryStats, EvaluationStats, poolEvaluation, type PooledMetrics } from '../../protocols/model-kinds/kind.ts';
import { ScoreHistogram } from '../../protocols/metrics.ts';

/**
 * The stored statistics of one evaluation row. Rows written before model kinds hold a bare score
 * histogram (binary, no Brier or log-loss sums): they pool into AUC like new ones, with the sums
 * taken as unknown (zero), which only matters for rounds stored before the upgrade.
 */
export function evaluationStatsOf(row: { stats?: unknown; histogram?: unknown }): EvaluationStats {
  if (row.stats !== null && row.stats !== undefined) return EvaluationStats.parse(row.stats);
  return BinaryStats.parse({ kind: 'binary', histogram: ScoreHistogram.parse(row.histogram), brierSum: 0, logLossSum: 0 });
}

/** The baseline a regression study's metrics are compared with: the target center of its spec. */
export function baselineCenter(config: StudyConfig): number {
  const target = config.features.target as { kind?: string; center?: number };
  return target.kind === 'numeric' && typeof target.center === 'number' ? target.center : 0;
}

/** Pools a round's evaluations with the study's model kind (exact: sums of sufficient statistics). */
export function poolStudyEvaluation(config: StudyConfig, stats: EvaluationStats[]): PooledMetrics {
  return poolEvaluation(config.task.kind, stats, baselineCenter(config));
}
