import type { Logger } from 'pino';
import type { NodePrivacySpend, Task } from '../protocols/messages.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { getWeights, setWeights } from '../models/index.ts';
import type * as tf from '../models/tf.ts';
import type { NodeModelKind } from '../models/kinds/kind.ts';
import type { LoadedData } from './data.ts';
import type { NodePrivacyLedger } from './privacy-ledger.ts';
import type { Spend } from './policy.ts';
import type { EvaluatedFacts, TrainedFacts } from './release.ts';
import { instructionsOf } from './task.ts';

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
  model: tf.LayersModel,
  data: LoadedData,
  task: Task,
  global: WeightSet,
  privacy: { ledger: NodePrivacyLedger; spend?: Spend; delta: number },
  log: Logger,
): Promise<Trained> {
  const study = task.config;
  const dpSgd = study.privacy?.dpSgd;
  setWeights(model, global);
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
    result = await kind.train(model, data.train, { ...args, dpSgd });
    spent = { accountant: ledger.accountant, delta: privacy.delta, epsilonRound: total - before, epsilonTotal: total, noiseMultiplier: dpSgd.noiseMultiplier, samplingRate: dpSgd.samplingRate, steps: result.steps, clipNorm: dpSgd.clipNorm };
    log.info({ round: task.round, epsilonRound: spent.epsilonRound, epsilonTotal: total, delta: privacy.delta, clippedFraction: result.clippedFraction, accountant: ledger.accountant }, 'DP-SGD privacy spent');
  } else {
    result = await kind.train(model, data.train, args);
  }
  const trainSeconds = (performance.now() - started) / 1000;
  const weights = getWeights(model);
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
export function evaluate(kind: NodeModelKind, model: tf.LayersModel, data: LoadedData, global: WeightSet): EvaluatedFacts {
  setWeights(model, global);
  const { loss, stats } = kind.evaluate(model, data.validation);
  return { numExamples: data.validation.n, ...(Number.isFinite(loss) ? { loss } : {}), stats };
}
