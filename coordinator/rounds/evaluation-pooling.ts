import { BinaryStats, EvaluationStats, isNoised, poolStudyEvaluation, statsRows } from '../../protocols/model-kinds/kind.ts';
import { isNumericTarget } from '../../protocols/feature-spec.ts';
import { residualClipOf } from '../../protocols/privacy/noised-regression.ts';
import { evaluationDp } from '../../protocols/privacy/study-privacy.ts';
import { DEFAULT_HISTOGRAM_BINS, ScoreHistogram } from '../../protocols/metrics.ts';
import { expectedEvaluation, type StudyConfig } from '../../protocols/messages.ts';

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

/** A stored evaluation row as the closing reads it. */
export interface StoredEvaluation {
  node_id: string;
  num_examples: number;
  loss: number | null;
  stats?: unknown;
  histogram?: unknown;
}
export type PoolableEvaluation = StoredEvaluation & { stats: EvaluationStats };
export interface ExcludedEvaluation {
  nodeId: string;
  reason: string;
}

/** Long enough to say what is wrong; bounded, because it goes into the audit log. */
const REASON_CHARS = 300;
const bounded = (text: string) => (text.length > REASON_CHARS ? `${text.slice(0, REASON_CHARS)}...` : text);
const messageOf = (err: unknown) => bounded(err instanceof Error ? err.message : String(err));

/**
 * The histogram resolution the study's binary reports must have: the one every honest node uses,
 * or under DP the coarser one of privacy.evaluation (declared, else its default: expectedEvaluation).
 */
function expectedBins(config: StudyConfig): number {
  const expected = expectedEvaluation(config.privacy);
  return expected.noised ? expected.bins : DEFAULT_HISTOGRAM_BINS;
}

/** A regression study's residual clip B under DP: declared, else 2 x the target's scale (noised-regression.ts). */
export function expectedResidualClip(config: StudyConfig): number {
  const target = config.features.target;
  return residualClipOf(evaluationDp(config.privacy), isNumericTarget(target) ? target.scale : 1);
}

/** What makes one parsed report unfit for this study's pooling, if anything. */
function reportProblem(config: StudyConfig, row: StoredEvaluation, stats: EvaluationStats): string | undefined {
  if (stats.kind !== config.task.kind) return `a ${stats.kind} report in a ${config.task.kind} study`;
  const bins = expectedBins(config);
  if (stats.kind === 'binary' && stats.histogram.bins !== bins) return `histogram of ${stats.histogram.bins} bins; the study pools ${bins}`;
  if (stats.kind === 'regression' && isNoised(stats) && stats.noise.residualClip !== expectedResidualClip(config)) return `residuals clipped to ${stats.noise.residualClip}; the study clips to ${expectedResidualClip(config)}`;
  const rows = statsRows(stats);
  if (rows !== Number(row.num_examples)) return `the statistics cover ${rows} rows but numExamples is ${row.num_examples}`;
  if (row.loss !== null && !Number.isFinite(row.loss)) return `loss ${row.loss} is not finite`;
  return undefined;
}

/**
 * Splits a round's stored reports into those that can be pooled and those that cannot, with why.
 * Intake refuses bad reports, but a row stored by an older version (or by a bug) must not keep
 * the round open: whatever one report does, it is excluded, never pooled, and never thrown.
 */
export function screenEvaluations(config: StudyConfig, rows: StoredEvaluation[]): { usable: PoolableEvaluation[]; excluded: ExcludedEvaluation[] } {
  const usable: PoolableEvaluation[] = [];
  const excluded: ExcludedEvaluation[] = [];
  for (const row of rows) {
    try {
      const stats = evaluationStatsOf(row);
      const problem = reportProblem(config, row, stats);
      if (problem) {
        excluded.push({ nodeId: row.node_id, reason: bounded(problem) });
        continue;
      }
      // Alone it must pool: anything the kind's pooling cannot take is found here, per node.
      poolStudyEvaluation(config, [stats]);
      usable.push({ ...row, stats });
    } catch (err) {
      excluded.push({ nodeId: row.node_id, reason: messageOf(err) });
    }
  }
  return { usable, excluded };
}

/**
 * Pools `usable` with `pool`; should the whole set still fail (reports that pool alone but not
 * together), reports are added one at a time in node order and each one whose addition fails is
 * excluded. Returns the metrics (undefined when nothing pools) and the reports that went in.
 */
export function poolWhatPools<T>(usable: PoolableEvaluation[], pool: (reports: PoolableEvaluation[]) => T): { metrics: T | undefined; pooled: PoolableEvaluation[]; excluded: ExcludedEvaluation[] } {
  try {
    return { metrics: pool(usable), pooled: usable, excluded: [] };
  } catch {
    // Fall through: find the reports that break it.
  }
  const pooled: PoolableEvaluation[] = [];
  const excluded: ExcludedEvaluation[] = [];
  let metrics: T | undefined;
  for (const report of [...usable].sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0))) {
    try {
      metrics = pool([...pooled, report]);
      pooled.push(report);
    } catch (err) {
      excluded.push({ nodeId: report.node_id, reason: `cannot be pooled with the other reports: ${messageOf(err)}` });
    }
  }
  return { metrics, pooled, excluded };
}
