import { BinaryStats, EvaluationStats } from '../../protocols/model-kinds/kind.ts';
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

export { poolStudyEvaluation } from '../../protocols/model-kinds/kind.ts';
