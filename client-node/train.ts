import type { Logger } from 'pino';
import type { NodePrivacySpend, Task } from '../protocols/messages.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { loadKindWeights, readKindWeights } from '../models/kinds/index.ts';
import type { KindModel } from '../models/dense-ops.ts';
import type { NodeModelKind } from '../models/kinds/kind.ts';
import type { LoadedData } from './data.ts';
import type { NodePrivacyLedger } from './privacy-ledger.ts';
import type { Spend } from './policy.ts';
import type { EvaluatedFacts, TrainedFacts } from './release.ts';
import { instructionsOf } from './task.ts';
import { evaluationDp, stepDenominator } from '../protocols/privacy/study-privacy.ts';
import { statsRows } from '../protocols/model-kinds/kind.ts';

/**
 * The train stage, through the study's model kind (models/kinds: binary or regression): local
 * training from the global model under the strategy's instructions (FedProx needs both), plain
 * or DP-SGD; and the evaluation of a global model as the kind's sufficient statistics. What comes
 * out is everything the node knows; the release step decides what of it leaves.
 */

export interface Trained {
  weights: WeightSet;
  facts: Omit<TrainedFacts, 'data'>;
  /** DP-SGD only: fraction of sampled rows whose gradient was clipped (this node's log). */
  clippedFraction?: number;
}

export async function train(
  kind: NodeModelKind,
  model: KindModel,
  data: LoadedData,
  task: Task,
  global: WeightSet,
  privacy: { ledger: NodePrivacyLedger; spend?: Spend; delta: number },
  log: Logger,
): Promise<Trained> {
  const study = task.config;
  const dpSgd = study.privacy?.dpSgd;
  loadKindWeights(kind, model, global);
  const args = { study, instructions: instructionsOf(task), global, seed: study.training.seed + task.round };
  const started = performance.now();
  let spent: NodePrivacySpend | undefined;
  let result;
  if (dpSgd && privacy.spend) {
    // The node's ledger is charged before training, so before the update can leave: a crash
    // after sending must not forget the spend.
    const { ledger, spend } = privacy;
    const before = ledger.epsilon();
    ledger.record(spend);
    const total = ledger.epsilon();
    // The public denominator (study-privacy.ts stepDenominator), never q x this node's rows.
    result = await kind.train(model, data.train, { ...args, dpSgd: { ...dpSgd, expectedBatchSize: stepDenominator(dpSgd, study.training.batchSize) } });
    spent = { accountant: ledger.accountant, delta: privacy.delta, epsilonRound: total - before, epsilonTotal: total, noiseMultiplier: dpSgd.noiseMultiplier, samplingRate: dpSgd.samplingRate, steps: result.steps, clipNorm: dpSgd.clipNorm };
    log.info({ round: task.round, epsilonRound: spent.epsilonRound, epsilonTotal: total, delta: privacy.delta, clippedFraction: result.clippedFraction, accountant: ledger.accountant }, 'DP-SGD privacy spent');
  } else {
    result = await kind.train(model, data.train, args);
  }
  const trainSeconds = (performance.now() - started) / 1000;
  const weights = readKindWeights(kind, model);
  checkTrainingOutcome(task.round, result.loss, weights);
  return {
    // Every tensor: the release step keeps the ones the model kind shares.
    weights,
    facts: { numExamples: result.numExamples, loss: result.loss, steps: result.steps, trainSeconds, ...(spent ? { dpSgd: spent } : {}) },
    ...(result.clippedFraction !== undefined ? { clippedFraction: result.clippedFraction } : {}),
  };
}

/**
 * Local training that diverged (a non-finite loss, or weights): nothing of it is sent. The node
 * reports `training-failed` with this message, which names what diverged, never a value of its data.
 */
export class TrainingFailedError extends Error {}

/** A diverged training is a failure, never an update (and never a loss of 0). */
function checkTrainingOutcome(round: number, loss: number, weights: WeightSet): void {
  if (!Number.isFinite(loss)) throw new TrainingFailedError(`local training in round ${round} diverged: the training loss is ${loss}; no update was sent`);
  for (const t of weights) {
    for (let i = 0; i < t.values.length; i++) {
      if (!Number.isFinite(t.values[i])) throw new TrainingFailedError(`local training in round ${round} diverged: tensor "${t.name}" is not finite; no update was sent`);
    }
  }
}

/**
 * Evaluates a global model on the node's validation rows: the kind's statistics and mean loss.
 * A loss that is not finite is left out (the report's loss is optional), never reported as 0.
 */
export function evaluate(kind: NodeModelKind, model: KindModel, data: LoadedData, global: WeightSet, privacy?: EvaluationPrivacy, log?: Logger): EvaluatedFacts {
  loadKindWeights(kind, model, global);
  const dp = evaluationDp(privacy?.task.config.privacy);
  if (!dp) {
    const { loss, stats } = kind.evaluate(model, data.validation);
    return { numExamples: data.validation.n, ...(Number.isFinite(loss) ? { loss } : {}), stats };
  }
  // Under DP (issue 10): charged to the data source's ledger first (appended and fsynced; the
  // ceiling checked under its lock), then the noised statistics. One evaluation is a Gaussian
  // mechanism on the validation rows with multiplier z and no subsampling: (q = 1, z, 1 step),
  // RDP alpha / (2 z^2), composed with DP-SGD's spends as RDP curves. Validation and training rows
  // are disjoint (the keyed-hash split), so the per-row cost is in fact the larger of the two;
  // the ledger's sum is an upper bound.
  if (!privacy) throw new Error('evaluation under DP needs the node ledger');
  const { ledger, task } = privacy;
  const spend = { studyId: task.studyId, round: task.round, samplingRate: 1, noiseMultiplier: dp.noiseMultiplier, steps: 1 };
  const before = ledger.epsilon();
  ledger.record(spend);
  const total = ledger.epsilon();
  log?.info({ round: task.round, epsilonEvaluation: total - before, epsilonTotal: total, delta: ledger.delta, bins: dp.bins, noiseMultiplier: dp.noiseMultiplier }, 'evaluation privacy spent (noised histogram)');
  const { stats } = kind.evaluate(model, data.validation, dp);
  return { numExamples: statsRows(stats), stats, spent: { epsilonEvaluation: total - before, epsilonTotal: total } };
}

/** What a DP evaluation needs: the data source's ledger and the task (study, round, privacy config). */
export interface EvaluationPrivacy {
  ledger: NodePrivacyLedger;
  task: Task;
}
