import type { Transaction } from 'kysely';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { FitFailure } from '../../protocols/strategies/strategy.ts';
import { modelOutOfRange } from '../../protocols/model-bounds.ts';
import { encodeServerState } from '../../protocols/strategies/server-state.ts';
import { decodeWeights, encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import { appendAudit } from '../audit/audit-log.ts';
import type { Database } from '../db/schema.ts';
import { meanLossOf, publishRegionalModels } from '../regions/regional-models.ts';
import { dropRegionalAccumulators } from '../regions/repository.ts';
import { dropKeptUpdates, getModel, insertModel, listUpdateContributions, updateRound, updateStudy, type RoundRow } from './round-repository.ts';
import { cannotTrain, TRAINING_STATES, type RoundDeps } from './round-state.ts';
import { forgetFold, persistsRunningState, roundFold } from './fold-cache.ts';

/** How a fit phase closed: aggregated (the evaluation phase begins) or failed. */
export type FitClosing =
  | { kind: 'aggregated'; evaluationDeadline: Date; sha256: string; nodes: number; meanLoss: number | null; droppedBytes: number }
  | { kind: 'failed'; reason: string; droppedBytes: number };

type Contribution = { node_id: string; num_examples: number; loss: number | null };
type Failure = { nodeId: string; state: string };

/**
 * Closes the fit phase of a round whose row the caller's transaction locked, when every
 * participant reported (or said it cannot train) or the deadline passed: aggregates, or fails the
 * round when too few updates came. Undefined: the round still waits.
 */
export async function closeFit(tx: Transaction<Database>, deps: RoundDeps, row: RoundRow, config: StudyConfig, t: Date): Promise<FitClosing | undefined> {
  const { study_id: studyId, round, participants } = row;
  const updates = await listUpdateContributions(tx, studyId, round);
  // Participants that said they cannot train (data error, policy refusal, privacy ceiling, a
  // rejected model, a failed training, withdrawn, revoked) are the round's failures, as in Flower's aggregate_fit(results,
  // failures): the round does not wait for them.
  const failures = await cannotTrain(tx, participants.filter((id) => !updates.some((u) => u.node_id === id)), TRAINING_STATES);
  const allIn = updates.length + failures.length >= participants.length;
  const deadlinePassed = t >= new Date(row.fit_deadline);
  if (!allIn && !deadlinePassed) return undefined;
  if (updates.length < config.minNodesPerRound) return failFit(tx, deps, { row, config, t, updates, failures, deadlinePassed });
  return aggregateFit(tx, deps, { row, config, t, updates, failures });
}

/**
 * Too few updates (or, with `reason`, an aggregation that cannot finish: see round-service.ts):
 * the round fails and the model and server state carry over unchanged.
 */
export async function failFit(
  tx: Transaction<Database>,
  deps: RoundDeps,
  input: { row: RoundRow; config: StudyConfig; t: Date; updates: Contribution[]; failures: Failure[]; deadlinePassed: boolean; reason?: string },
): Promise<FitClosing> {
  const { row, updates, failures, t } = input;
  const { study_id: studyId, round, participants } = row;
  // Counts only: the reason is shown to every reader of the round, while who could not train
  // (which reveals who was sampled) is in mechanism.failures, filtered per reader.
  const failureNote = failures.length ? `; ${failures.length} could not train (${[...new Set(failures.map((f) => f.state))].sort().join(', ')})` : '';
  const when = input.deadlinePassed ? `by the deadline ${new Date(row.fit_deadline).toISOString()}` : 'and every other participant said it cannot train';
  const reason = input.reason ?? `only ${updates.length} of ${participants.length} nodes reported ${when}${failureNote}; the study requires at least ${input.config.minNodesPerRound}`;
  // "No new weights": the model AND the server state carry over unchanged.
  await updateRound(tx, studyId, round, { phase: 'failed', failure_reason: reason, closed_at: t, accumulator: null, next_server_state: row.server_state });
  await dropRegionalAccumulators(tx, studyId, round);
  const droppedBytes = await dropKeptUpdates(tx, studyId, round);
  forgetFold(deps.db, studyId, round);
  // "No new parameters" means "keep the global model": version `round` is version
  // round-1, so the next round has a model to start from.
  const kept = await getModel(tx, studyId, round - 1);
  const keptBytes = new Uint8Array(kept.weights);
  const signed = await deps.keyring.sign(keptBytes);
  await insertModel(tx, { study_id: studyId, version: round, weights: keptBytes, sha256: kept.sha256, bytes: kept.bytes, signature: signed.signature, signer_fingerprint: signed.fingerprint });
  await updateStudy(tx, studyId, { latest_model_version: round });
  await appendAudit(tx, { actor: 'coordinator', kind: 'round.failed', studyId, round, data: { reason, updates: updates.length, participants: participants.length, failures, modelKept: kept.sha256 } });
  return { kind: 'failed', reason, droppedBytes };
}

/** Enough updates: the strategy finishes the aggregate, which is signed and published; evaluation begins. */
async function aggregateFit(tx: Transaction<Database>, deps: RoundDeps, input: { row: RoundRow; config: StudyConfig; t: Date; updates: Contribution[]; failures: Failure[] }): Promise<FitClosing> {
  const { row, config, updates, failures } = input;
  const { study_id: studyId, round, participants } = row;
  const previous = await getModel(tx, studyId, round - 1);
  const global = decodeWeights(new Uint8Array(previous.weights));
  const strategy = deps.strategyFor(config);
  // The in-memory fold (rebuilt from the stored updates if it is not in step: fold-cache.ts).
  const aggregation = (await roundFold(tx, deps.db, strategy, global, row, persistsRunningState(config), 'finish')).aggregation;
  // Flower's aggregate_fit(results, failures): who could not train, and who was late.
  const fitFailures: FitFailure[] = [
    ...failures.map((f) => ({ nodeId: f.nodeId, reason: f.state })),
    ...participants.filter((id) => !updates.some((u) => u.node_id === id) && !failures.some((f) => f.nodeId === id)).map((nodeId) => ({ nodeId, reason: 'late' })),
  ];
  const outcome = aggregation.finish(fitFailures);
  forgetFold(deps.db, studyId, round); // finished: a retried close rebuilds it
  // "No new weights" (e.g. Krum with too few updates) keeps the global model.
  const next = outcome.weights ?? global;
  // Never published: a model with a non-finite or out-of-range weight. The round fails, the
  // previous model stays current (failFit audits the reason).
  const outOfRange = config.bounds ? modelOutOfRange(next, config.bounds.maxAbsWeight) : undefined;
  if (outOfRange) {
    const reason = `model-out-of-range: the aggregate's ${outOfRange} (bounds.maxAbsWeight ${config.bounds!.maxAbsWeight}); it was not published and model version ${round - 1} stays current`;
    return failFit(tx, deps, { ...input, deadlinePassed: false, reason });
  }
  const bytes = encodeWeights(next);
  const sha256 = sha256Hex(bytes);
  const { signature, fingerprint } = await deps.keyring.sign(bytes);
  const numExamples = updates.reduce((s, u) => s + u.num_examples, 0);
  const meanLoss = meanLossOf(updates);
  // Folded from the stored updates, before they are dropped below (regional-models.ts).
  const regionalModels = await publishRegionalModels(tx, { studyId, round, config, global, keyring: deps.keyring, contributors: updates });
  await insertModel(tx, { study_id: studyId, version: round, weights: bytes, sha256, bytes: bytes.length, signature, signer_fingerprint: fingerprint });
  await updateStudy(tx, studyId, { latest_model_version: round });
  await appendAudit(tx, { actor: 'coordinator', kind: 'aggregate.published', studyId, round, data: { modelVersion: round, modelSha256: sha256, bytes: bytes.length, signerFingerprint: fingerprint, nodes: updates.map((u) => u.node_id), failures, numExamples, mechanism: outcome.details, regionalModels } });
  const evaluationDeadline = new Date(input.t.getTime() + config.evaluationDeadlineSeconds * 1000);
  // The partial sum is dropped once the aggregate exists: only published models persist.
  await updateRound(tx, studyId, round, {
    phase: 'evaluate',
    evaluation_deadline: evaluationDeadline,
    accumulator: null,
    next_server_state: encodeServerState(outcome.serverState),
    num_examples: numExamples,
    mean_loss: meanLoss,
    mechanism: JSON.stringify({ ...(row.mechanism ?? {}), ...outcome.details, ...(failures.length ? { failures } : {}), ...(regionalModels.length ? { regionalModels } : {}) }),
  });
  const droppedBytes = await dropKeptUpdates(tx, studyId, round);
  return { kind: 'aggregated', evaluationDeadline, sha256, nodes: updates.length, meanLoss, droppedBytes };
}
