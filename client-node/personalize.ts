import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { encodedWidth } from '../protocols/feature-spec.ts';
import type { Task } from '../protocols/messages.ts';
import { poolStudyEvaluation, type PooledMetrics } from '../protocols/model-kinds/kind.ts';
import { dpSgdStepsPerRound, hasDp, stepDenominator } from '../protocols/privacy/study-privacy.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { encodeWeights } from '../protocols/weights-codec.ts';
import { loadKindWeights, readKindWeights } from '../models/kinds/index.ts';
import type { NodeModelKind, TrainArgs } from '../models/kinds/kind.ts';
import { splitRows, subset, type EncodedData } from '../models/encode.ts';
import type { KindModel } from '../models/dense-ops.ts';
import type { LoadedData } from './data.ts';
import { LedgerCeilingError, type NodePrivacyLedger } from './privacy-ledger.ts';
import type { EvaluatedFacts, Release } from './release.ts';
import { instructionsOf } from './task.ts';
import { evaluate } from './train.ts';

/**
 * Regional personalization (issue 9, `fedmark node --personalize`): at the evaluation task of the
 * study's final round, the node fine-tunes a copy of the final global model on its own training
 * rows for a few local epochs, through the study's model kind (so every kind works, binary,
 * regression, forecast, recommend, without a special case), evaluates it on the same validation
 * rows as the global model, and keeps its weights in a local file (logged, never sent).
 *
 * The method is FedAvg + local fine-tuning: Wang et al. 2019, "Federated Evaluation of On-device
 * Personalization" (arXiv:1910.10252), and Yu, Bagdasaryan and Shmatikov 2020, "Salvaging
 * Federated Learning by Local Adaptation" (arXiv:2002.04758), who find a few local epochs recover
 * most of what a node loses to the shared model on non-IID data. Not FedPer (Arivazhagan et al.
 * 2019: a personal head never aggregated) nor Ditto (Li et al. 2021: a regularized personal model
 * trained each round): both change what the study shares and how every round trains, and need
 * a kind-specific split into body and head; fine-tuning changes nothing that leaves the node,
 * works after any study and for every kind.
 *
 * What may leave: the personalized model's statistics (release field `evaluation.personalized`),
 * beside the global model's, only when the study's release list names it. Under DP they are
 * noised like evaluation.stats and charged as one more evaluation; and because they also depend
 * on the TRAINING rows through the fine-tuning, under DP-SGD the fine-tuning is itself one more
 * DP-SGD round charged to the ledger (otherwise a training row could move every validation score
 * without bound). A study with central DP only has no record-level mechanism on the node for that:
 * there the statistics are not released (the node says why) and the model is still kept.
 */

export interface PersonalizeSettings {
  personalize: boolean;
  personalizeEpochs: number;
  personalizeOut?: string;
  stateDir: string;
}

/** What the node logs (never sends): where the model is and both models' exact local metrics. */
export interface Personalized {
  path: string;
  /** What leaves, if anything: the released part of the evaluation report. */
  release?: NonNullable<EvaluatedFacts['personalized']>;
  /** Why nothing leaves, when nothing does. */
  withheld?: string;
  globalMetrics: PooledMetrics;
  personalizedMetrics: PooledMetrics;
}

/** Is this the task to personalize at: the evaluation of the study's final round, with --personalize? */
export function personalizesAt(settings: Pick<PersonalizeSettings, 'personalize'>, task: Task): boolean {
  return settings.personalize && task.kind === 'evaluate' && task.round === task.config.rounds;
}

/** Where the personalized weights go: --personalize-out, else <state-dir>/personalized/<study>-v<version>.fmw. */
export function personalizedPath(settings: PersonalizeSettings, task: Task): string {
  return resolve(settings.personalizeOut ?? join(settings.stateDir, 'personalized', `${task.studyId}-v${task.modelVersion}.fmw`));
}

/** Why the personalized statistics cannot leave for this study, if they cannot. */
export function withheldReason(release: Release, task: Task): string | undefined {
  if (!release.allows('evaluation.personalized')) return `study ${task.studyId}'s release list does not name evaluation.personalized (a study created before it, or one that leaves it out): the personalized statistics stay on this node`;
  const privacy = task.config.privacy;
  if (hasDp(privacy) && !privacy?.dpSgd) return `study ${task.studyId} runs central DP without DP-SGD: the fine-tuning would have no record-level protection on the node, so the personalized statistics stay on this node`;
  return undefined;
}

/**
 * Fine-tunes a copy of `global` on the node's training rows, saves it, evaluates both models
 * locally, and (when releasable) the personalized one as the study releases evaluations (noised
 * and charged under DP: `ledger` is then the data source's ledger). A refused charge (the ledger's
 * ceiling) withholds the personalized part; the global evaluation is sent all the same.
 */
export async function personalize(kind: NodeModelKind, task: Task, data: LoadedData, global: WeightSet, settings: PersonalizeSettings, release: Release, ledger: NodePrivacyLedger | undefined, log: Logger): Promise<Personalized> {
  const study = task.config;
  let withheld = withheldReason(release, task);
  const model = kind.createModel(study, encodedWidth(study.features));
  try {
    loadKindWeights(kind, model, global);
    const dpSgd = !withheld && hasDp(study.privacy) ? study.privacy?.dpSgd : undefined;
    const args = { study, instructions: { ...instructionsOf(task), localEpochs: settings.personalizeEpochs, proximalMu: 0 }, global, seed: study.training.seed + study.rounds + 1 };
    let charged = false;
    if (dpSgd && ledger) {
      // One more DP-SGD round, charged before it runs (as client-node/train.ts does); the ceiling
      // may refuse it: then nothing is released and the fine-tuning is plain (it stays here).
      try {
        ledger.record({ studyId: task.studyId, round: task.round, samplingRate: dpSgd.samplingRate, noiseMultiplier: dpSgd.noiseMultiplier, steps: dpSgdStepsPerRound(dpSgd) });
        charged = true;
      } catch (err) {
        if (!(err instanceof LedgerCeilingError)) throw err;
        withheld = `the DP-SGD fine-tuning would pass this node's privacy ceiling (${err.message}): the personalized statistics stay on this node`;
      }
    }
    if (dpSgd && charged) await kind.train(model, data.train, { ...args, dpSgd: { ...dpSgd, expectedBatchSize: stepDenominator(dpSgd, study.training.batchSize) } });
    else await fineTune(kind, model, data.train, args);
    const weights = readKindWeights(kind, model);
    const path = savePersonalized(personalizedPath(settings, task), weights);
    const globalMetrics = localMetrics(kind, model, data, global, task);
    const personalizedMetrics = localMetrics(kind, model, data, weights, task);
    let released: Personalized['release'];
    if (!withheld) {
      try {
        const facts = evaluate(kind, model, data, weights, release.dp && ledger ? { ledger, task } : undefined, log);
        released = { numExamples: facts.numExamples, stats: facts.stats, ...(facts.spent ? { spent: facts.spent } : {}) };
      } catch (err) {
        if (!(err instanceof LedgerCeilingError)) throw err;
        withheld = `its evaluation would pass this node's privacy ceiling (${err.message}): the personalized statistics stay on this node`;
      }
    }
    return { path, globalMetrics, personalizedMetrics, ...(released ? { release: released } : {}), ...(withheld ? { withheld } : {}) };
  } finally {
    (model as { dispose?: () => void }).dispose?.();
  }
}

/**
 * Plain fine-tuning at a tenth of the study's learning rate (the usual practice when adapting a
 * trained model: a fresh optimizer's first steps at the full rate undo what the federation
 * learned), one local epoch at a time, keeping the epoch (1 to --personalize-epochs) with the
 * lowest loss on a fifth of the TRAINING rows held out for it (never the validation rows the
 * report is measured on): early stopping, so local adaptation does little harm where the node's
 * market is much like the federation's (Yu et al. 2020: fine-tuning can also lose accuracy).
 * Measured (scripts/measure-personalization.ts, churn in 10 state groups, nearly IID): at the
 * full rate without early stopping 3 epochs cost 0.021 AUC; this way 0.000-0.001. A kind whose
 * data is not plain rows (recommendation's interactions, forecasting's series) cannot be split
 * that way: it fine-tunes for all the epochs at its own rate.
 */
export async function fineTune(kind: NodeModelKind, model: KindModel, train: EncodedData, args: TrainArgs): Promise<void> {
  const epochs = args.instructions.localEpochs;
  // A forecast kind's training rows look plain, but it scores only rows that carry their series'
  // seasonal-naive values and scales (the validation rows): it fine-tunes without the split.
  const plainRows = Object.keys(train).every((k) => PLAIN_ROW_KEYS.has(k)) && args.study.task.kind !== 'forecast';
  if (!plainRows || train.n < 10) {
    await kind.train(model, train, args);
    return;
  }
  const [fitRows, checkRows] = splitRows(train.n, [0.8, 0.2], args.seed, args.study.task.kind === 'binary' ? train.y : undefined);
  const [fit, check] = [subset(train, fitRows), subset(train, checkRows)];
  const instructions = { ...args.instructions, localEpochs: 1, learningRate: args.instructions.learningRate * FINE_TUNE_RATE };
  let best: { loss: number; weights: WeightSet } | undefined;
  for (let e = 1; e <= epochs; e++) {
    await kind.train(model, fit, { ...args, instructions, seed: args.seed + e });
    const loss = kind.evaluate(model, check).loss;
    if (!best || loss < best.loss || !Number.isFinite(best.loss)) best = { loss, weights: readKindWeights(kind, model) };
  }
  if (best) loadKindWeights(kind, model, best.weights);
}
const PLAIN_ROW_KEYS = new Set(['x', 'y', 'n', 'width', 'report', 'filled']);
const FINE_TUNE_RATE = 0.1;

/** Both models' exact metrics on this node's validation rows, for its own log only. */
function localMetrics(kind: NodeModelKind, model: KindModel, data: LoadedData, weights: WeightSet, task: Task): PooledMetrics {
  loadKindWeights(kind, model, weights);
  return poolStudyEvaluation(task.config, [kind.evaluate(model, data.validation).stats]);
}

/** Writes the weights (protocols/weights-codec.ts, FMW1) atomically, readable by this user only. */
export function savePersonalized(path: string, weights: WeightSet): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, encodeWeights(weights), { mode: 0o600 });
  renameSync(tmp, path);
  return path;
}

/**
 * The node's evaluation with its personalized part added when it may leave: personalizes, logs
 * where the model is and both models' local metrics, and says why when nothing leaves. A failed
 * personalization is logged and the global evaluation goes as it is: it never costs the round.
 */
export async function withPersonalized(evaluation: EvaluatedFacts, run: () => Promise<Personalized>, task: Task, log: Logger): Promise<EvaluatedFacts> {
  try {
    const p = await run();
    log.info({ round: task.round, path: p.path, globalMetrics: p.globalMetrics, personalizedMetrics: p.personalizedMetrics, released: p.release !== undefined }, 'personalized model kept on this node (never sent)');
    if (p.withheld) log.warn({ round: task.round, reason: p.withheld }, 'personalized statistics not sent');
    return p.release ? { ...evaluation, personalized: p.release } : evaluation;
  } catch (err) {
    log.error({ round: task.round, err: err instanceof Error ? err.message : String(err) }, 'personalization failed; the global evaluation is sent without it');
    return evaluation;
  }
}
