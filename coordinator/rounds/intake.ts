import { createHash } from 'node:crypto';
import type { Transaction } from 'kysely';
import { DEFAULT_HISTOGRAM_BINS } from '../../protocols/metrics.ts';
import { expectedEvaluation, unreleasedFields, type EvaluationReport, type StudyConfig, type UpdateMeta, type UpdateReceipt } from '../../protocols/messages.ts';
import { EvaluationStats, isNoised, statsRows } from '../../protocols/model-kinds/kind.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeWeightsView, sha256Hex, WeightsCodecError } from '../../protocols/weights-codec.ts';
import { appendAudits, type AuditFields } from '../audit/audit-log.ts';
import type { Database } from '../db/schema.ts';
import { AppError, BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../errors.ts';
import { NORMS_WITHHELD_REASON, perNodeNormsWithheld } from '../privacy/readers.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { studyTensorSpecs } from '../studies/study-service.ts';
import { aggregationWeight, boundUpdate, checkEvaluationCount, checkUpdateCount, declaredRowsOf, type BoundedUpdate } from './claims.ts';
import { evaluationStatsOf, expectedResidualClip } from './evaluation-pooling.ts';
import { recommendEvaluationNoiseStd } from '../../protocols/privacy/noised-recommend.ts';
import { insertEvaluationReport, lockIntakeRound, readEvaluationIntake, readUpdateIntake, recordUpdate, type IntakeRound, type PreviousUpdate } from './round-repository.ts';
import { TRAINING_STATES, type RoundDeps } from './round-state.ts';
import { foldedFrame, foldStored, forgetFold, persistsRunningState, roundFold } from './fold-cache.ts';
import { evaluationStates } from './close-evaluation.ts';
import { checkPersonalizedCount, checkPersonalizedReport, personalizedColumns } from './personalized-evaluation.ts';

/**
 * What nodes send into a round: their trained model (fit phase) and their evaluation report
 * (evaluation phase). Each is checked in full before anything is stored, and stored in one
 * transaction with the round row locked. The round service logs and moves the round on.
 */

/** JSON with object keys sorted, so equal values hash equal whatever order they were sent in. */
function canonicalJson(value: unknown): string {
  if (value === undefined) return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

type UpdateIntake = Awaited<ReturnType<typeof readUpdateIntake>>;
type UpdateSubmission = { node: AuthenticatedNode; studyId: string; round: number; meta: UpdateMeta; body: Uint8Array; sha256: string; metaSha256: string };

/**
 * Accepts one node's model for a round, exactly once. A retry of the same bytes gets the
 * original receipt; different bytes for the same node and round are refused; nothing of a
 * refused update is stored. `allIn`: every participant has now either sent its update or said it
 * cannot train.
 *
 * Three statements besides the audit entry (issue 13: there were nine): the round row locked
 * (FOR UPDATE orders the arrivals), then everything the update is checked against
 * (readUpdateIntake), then one write (recordUpdate). Every refusal comes before that write.
 */
export async function acceptUpdate(deps: RoundDeps, node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array): Promise<UpdateOutcome> {
  const prepared = await prepareUpdate(deps, node, studyId, round, meta, body);
  return deps.db.transaction().execute(async (tx) => {
    const audit: AuditFields[] = [];
    const outcome = await updateInTransaction(tx, deps, prepared, audit);
    await appendAudits(tx, audit);
    return outcome;
  }).catch((err: unknown) => {
    // Rolled back (or failed to commit) after the fold may have taken the update: rebuild next time.
    // Not for a refusal: every one comes before the fold takes anything (a node resending a refused
    // update must not make each honest accept rebuild the round's fold from every stored update).
    if (!isRefusal(err)) forgetFold(deps.db, studyId, round);
    throw err;
  });
}

export type UpdateOutcome = { replay: true; receipt: UpdateReceipt } | { replay: false; allIn: boolean; deltaNorm: number; receipt: UpdateReceipt };
type PreparedUpdate = UpdateSubmission & { config: StudyConfig; weights: WeightSet; global: WeightSet | undefined; withState: boolean };

/** An update's checks that need no transaction: the study's release list, the weights' shapes, the hashes; the round's starting model fetched. */
async function prepareUpdate(deps: RoundDeps, node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array): Promise<PreparedUpdate> {
  if (studyId !== node.studyId) throw new ForbiddenError(`node ${node.id} is not enrolled in study ${studyId}`);
  const config = await deps.studies.getConfig(studyId);
  const unreleased = unreleasedFields(config.release, { kind: 'update', meta });
  if (unreleased.length > 0) throw new BadRequestError(`update refused: ${unreleased.join(', ')} ${unreleased.length === 1 ? 'is' : 'are'} not on study ${studyId}'s release list; nothing of it was stored`, unreleased[0], 'NOT_RELEASED');
  const sha256 = sha256Hex(body);
  // A retry is the same weights AND the same metadata: the counts are part of the submission.
  const metaSha256 = createHash('sha256').update(canonicalJson(meta)).digest('hex');
  let weights;
  try {
    // Views over the received body (nothing changes it after this): no 4 MB copy per 1M-parameter update.
    weights = decodeWeightsView(body, { expected: studyTensorSpecs(config), dtype: 'float32' });
  } catch (err) {
    if (err instanceof WeightsCodecError) throw new BadRequestError(`update refused: ${err.message}`, 'body', 'INVALID_WEIGHTS');
    throw err;
  }
  // Fetched before the transaction (cached, immutable): on PGlite the transaction holds the only connection.
  const global = await deps.studies.getModelWeights(studyId, round - 1).catch(() => undefined);
  // The state blobs only when every accept starts from them (fold-cache.ts initialAggregation).
  const withState = persistsRunningState(config) || deps.strategyFor(config).input === 'every-update';
  return { node, studyId, round, meta, body, sha256, metaSha256, config, weights, global, withState };
}

/** The update's part of a transaction: the round locked, the intake read, every refusal, then the one write; its audit entry pushed to `audit`. */
async function updateInTransaction(tx: Transaction<Database>, deps: RoundDeps, p: PreparedUpdate, audit: AuditFields[]): Promise<UpdateOutcome> {
  const { node, studyId, round } = p;
  const row = await lockIntakeRound(tx, studyId, round, p.withState);
  if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
  if (!row.participants.includes(node.id)) throw new ForbiddenError(`node ${node.id} is not a participant of round ${round}`);
  const intake = await readUpdateIntake(tx, { studyId, round, nodeId: node.id, participants: row.participants, allowed: TRAINING_STATES });
  if (intake.state === 'withdrawn' || intake.state === 'revoked') throw new ForbiddenError(`node ${node.id} is ${intake.state}; its updates are no longer accepted`);
  const replay = replayOf(intake.previous, p);
  if (replay) return replay;
  const t = deps.now();
  if (row.phase !== 'fit' || t > new Date(row.fit_deadline)) {
    throw new ConflictError('ROUND_CLOSED', `round ${round} no longer accepts updates (phase ${row.phase}, deadline ${new Date(row.fit_deadline).toISOString()}); this late update was not stored`);
  }
  if (!p.global) throw new NotFoundError(`study ${studyId} has no model version ${round - 1}`);
  return storeUpdate(tx, deps, { ...p, row, global: p.global, t, intake }, audit);
}

/**
 * The node's earlier update for this round, if any: the same weights and header are a retry
 * (the original receipt); anything else is refused.
 */
function replayOf(previous: PreviousUpdate | undefined, s: UpdateSubmission): { replay: true; receipt: UpdateReceipt } | undefined {
  const { node, studyId, round, sha256 } = s;
  if (!previous) return undefined;
  const previousMeta = previous.meta as Record<string, unknown> & { metaSha256?: string };
  if (previous.sha256 === sha256 && previousMeta.metaSha256 === s.metaSha256) {
    return { replay: true, receipt: { studyId, round, nodeId: node.id, sha256, bytes: previous.bytes, acceptedAt: new Date(previous.accepted_at).toISOString() } };
  }
  if (previous.sha256 === sha256) {
    const fields = Object.keys(s.meta).filter((k) => canonicalJson((s.meta as Record<string, unknown>)[k]) !== canonicalJson(previousMeta[k]));
    throw new ConflictError(
      'DUPLICATE_UPDATE',
      `node ${node.id} already submitted these weights for round ${round} with different metadata (${fields.join(', ') || 'the update header'} differ); a retry must resend the same header, and a corrected count is a new update, which one node may send once per round`,
    );
  }
  throw new ConflictError('DUPLICATE_UPDATE', `node ${node.id} already submitted a different update for round ${round} (sha256 ${previous.sha256.slice(0, 12)}...); one update per node and round`);
}

/** Folds a new update into the round's persisted aggregation and records it (never its values). */
async function storeUpdate(tx: Transaction<Database>, deps: RoundDeps, s: UpdateSubmission & { row: IntakeRound; config: StudyConfig; global: WeightSet; weights: WeightSet; t: Date; intake: UpdateIntake }, audit: AuditFields[]): Promise<UpdateOutcome> {
  const { node, studyId, round, meta, body, sha256, row, t } = s;
  // The node's claims first (README, "Node claims are bounded"): nothing is stored when one fails.
  checkUpdateCount(s.config, meta, declaredRowsOf(s.intake.statusRows, meta));
  const bounded = boundUpdate(s.config, s.global, s.weights);
  const weight = aggregationWeight(s.config, meta.numExamples);
  const strategy = deps.strategyFor(s.config);
  // The round's fold in memory, checked against (or rebuilt from) the stored updates (fold-cache.ts).
  const persisted = persistsRunningState(s.config);
  const fold = await roundFold(tx, deps.db, strategy, s.global, row, persisted, 'accept', s.intake.keptNodeIds);
  // deltaNorm: the norm of what entered the aggregate (after clipping, under central DP).
  const { deltaNorm, clipped, kept } = fold.aggregation.accept(bounded.weights, weight);
  // Each update stored once, as folded: O(update) written; the round row is not rewritten (issue 13).
  // Under central DP only the noised running state is stored, as before.
  const normBound = normBoundRecord(s.config, bounded);
  await recordUpdate(tx, {
    update: { study_id: studyId, round, node_id: node.id, sha256, bytes: body.length, num_examples: meta.numExamples, loss: meta.loss ?? null, meta: JSON.stringify({ ...meta, deltaNorm, clipped: clipped ?? false, weight, ...normBound, metaSha256: s.metaSha256 }), accepted_at: t },
    at: t,
    ...(persisted ? { accumulator: fold.aggregation.state() } : { kept: { seq: s.intake.keptNodeIds.length, bytes: foldedFrame({ kept, body, received: s.weights, folded: bounded.weights }), weight } }),
  });
  if (!persisted) foldStored(fold, node.id);
  // Size, hash, clipped norm, counts and the weight used: never the values. Under central DP not
  // the norm or the clip either (exact per-node values: privacy/readers.ts perNodeNormsWithheld);
  // the hash and size still bind the entry to the stored update.
  const norms = perNodeNormsWithheld(s.config.privacy) ? { normsWithheld: NORMS_WITHHELD_REASON } : { deltaNorm, clipped: clipped ?? false, ...normBound };
  audit.push({ actor: `node:${node.id}`, kind: 'update.received', studyId, round, data: { nodeId: node.id, bytes: body.length, sha256, numExamples: meta.numExamples, weight, ...norms, dpSgd: meta.dpSgd ?? null } });
  // All in: every other participant either sent its update or said it cannot train (read with the intake).
  const allIn = s.intake.awaitedOthers === 0;
  return { replay: false as const, allIn, deltaNorm, receipt: { studyId, round, nodeId: node.id, sha256, bytes: body.length, acceptedAt: t.toISOString() } };
}

/**
 * What the audit and the update record say of the norm bound: nothing when the update was within
 * it; otherwise the bound it was scaled to (`clippedTo`) and its raw delta norm (`deltaNormBefore`),
 * except under central DP, where a raw per-node norm would be a release outside the mechanism
 * (the DP wrapper records only clipped norms for the same reason).
 */
function normBoundRecord(config: StudyConfig, bounded: BoundedUpdate): { deltaNormBefore?: number; clippedTo?: number } {
  if (bounded.clippedTo === undefined) return {};
  return config.privacy?.central ? { clippedTo: bounded.clippedTo } : { deltaNormBefore: bounded.clippedFrom, clippedTo: bounded.clippedTo };
}

/**
 * Stores one node's evaluation report for a round. False: a retry of the report already stored;
 * 'all-in': stored, and every node that trained has now evaluated or can no longer. Three
 * statements besides the audit entry (issue 13: there were six): the round row locked, what the
 * report is checked against (readEvaluationIntake), the insert.
 */
export async function acceptEvaluation(deps: RoundDeps, node: AuthenticatedNode, studyId: string, round: number, report: EvaluationReport): Promise<EvaluationOutcome> {
  const config = await checkedEvaluation(deps, node, studyId, report);
  return deps.db.transaction().execute(async (tx) => {
    const audit: AuditFields[] = [];
    const outcome = await evaluationInTransaction(tx, deps, { node, studyId, round, report, config }, audit);
    await appendAudits(tx, audit);
    return outcome;
  });
}

export type EvaluationOutcome = boolean | 'all-in';

/** An evaluation report's checks that need no transaction (the study's config, returned for the rest). */
async function checkedEvaluation(deps: RoundDeps, node: AuthenticatedNode, studyId: string, report: EvaluationReport): Promise<StudyConfig> {
  if (studyId !== node.studyId) throw new ForbiddenError(`node ${node.id} is not enrolled in study ${studyId}`);
  const config = await deps.studies.getConfig(studyId);
  checkEvaluationReport(config, report);
  checkPersonalizedReport(config, report, checkEvaluationReport); // fedmark node --personalize (personalized-evaluation.ts)
  return config;
}

/** The evaluation's part of a transaction: the round locked, the intake read, every refusal, then the insert; its audit entry pushed to `audit`. */
async function evaluationInTransaction(tx: Transaction<Database>, deps: RoundDeps, e: { node: AuthenticatedNode; studyId: string; round: number; report: EvaluationReport; config: StudyConfig }, audit: AuditFields[]): Promise<EvaluationOutcome> {
  const { node, studyId, round, report, config } = e;
  const row = await lockIntakeRound(tx, studyId, round, false);
  if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
  const { update, previous, statusRows, awaitedOthers } = await readEvaluationIntake(tx, { studyId, round, nodeId: node.id, allowed: evaluationStates(config) });
  if (!update) throw new ForbiddenError(`node ${node.id} did not train in round ${round}, so it has no evaluation to report`);
  if (previous) {
    // jsonb reorders keys: compare canonical forms, not the serialization.
    const same = canonicalJson(evaluationStatsOf(previous)) === canonicalJson(report.stats) && previous.num_examples === report.numExamples && (previous.loss ?? undefined) === report.loss && canonicalJson(previous.personalized_stats ?? null) === canonicalJson(report.personalized?.stats ?? null);
    if (same) return false;
    throw new ConflictError('DUPLICATE_EVALUATION', `node ${node.id} already reported a different evaluation for round ${round}`);
  }
  if (row.phase !== 'evaluate' || deps.now() > new Date(row.evaluation_deadline!)) {
    throw new ConflictError('ROUND_CLOSED', `round ${round} no longer accepts evaluations (phase ${row.phase})`);
  }
  // Its validation share of the rows it declared (its status report, its update of this round).
  const declared = declaredRowsOf(statusRows, update.meta as UpdateMeta);
  checkEvaluationCount(config, report, declared);
  checkPersonalizedCount(config, report, declared);
  await insertEvaluationReport(tx, { study_id: studyId, round, node_id: node.id, num_examples: report.numExamples, loss: report.loss ?? null, histogram: null, stats: JSON.stringify(report.stats), ...personalizedColumns(report) });
  audit.push({ actor: `node:${node.id}`, kind: 'evaluation.received', studyId, round, data: { nodeId: node.id, numExamples: report.numExamples, kind: report.stats.kind, ...(report.stats.kind === 'binary' ? { bins: report.stats.histogram.bins } : {}), ...(report.personalized ? { personalizedNumExamples: report.personalized.numExamples } : {}) } });
  // All in: every other node that trained has evaluated, or can no longer (read with the intake; see advanceRound).
  return awaitedOthers === 0 ? 'all-in' : true;
}

/** An outcome, or the refusal (a 4xx AppError) that took its place. */
export type Judged<T> = { ok: T } | { refused: AppError };

/**
 * An update and the evaluation riding on it (of the round before: its starting model), in ONE
 * transaction (issue 13: a begin, a commit and an audit statement fewer per node and round; the
 * two audit entries are appended in one statement, evaluation first, as when they came apart).
 * Each is judged on its own, as two requests would be: a refusal of either (every refusal comes
 * before its part writes anything) is returned, not thrown, and the other part is still stored.
 * Anything else (a database error) rolls back both: the request fails whole and its retry is
 * judged afresh. The rounds are locked oldest first, as every transition locks them; round r-1's
 * row then stays locked through the update's part too (a few ms for the demo's model), so an
 * evaluation arriving on its own for r-1 waits that long more than it did.
 */
export async function acceptUpdateWithEvaluation(
  deps: RoundDeps,
  node: AuthenticatedNode,
  studyId: string,
  update: { round: number; meta: UpdateMeta; body: Uint8Array },
  evaluation: { round: number; report: EvaluationReport },
): Promise<{ evaluation: Judged<EvaluationOutcome>; update: Judged<UpdateOutcome> }> {
  const config = await judged(() => checkedEvaluation(deps, node, studyId, evaluation.report));
  const prepared = await judged(() => prepareUpdate(deps, node, studyId, update.round, update.meta, update.body));
  // Both refused on their face: no transaction (on PGlite an empty one would still hold the only connection).
  if ('refused' in config && 'refused' in prepared) return { evaluation: config, update: prepared };
  return deps.db.transaction().execute(async (tx) => {
    const audit: AuditFields[] = [];
    const e = 'ok' in config ? await judged(() => evaluationInTransaction(tx, deps, { node, studyId, ...evaluation, config: config.ok }, audit)) : config;
    const u = 'ok' in prepared ? await judged(() => updateInTransaction(tx, deps, prepared.ok, audit)) : prepared;
    await appendAudits(tx, audit);
    return { evaluation: e, update: u };
  }).catch((err: unknown) => {
    forgetFold(deps.db, studyId, update.round);
    throw err;
  });
}

/** `fn`'s result, or its refusal (an AppError below 500); anything else is thrown. */
async function judged<T>(fn: () => Promise<T>): Promise<Judged<T>> {
  try {
    return { ok: await fn() };
  } catch (err) {
    if (isRefusal(err)) return { refused: err };
    throw err;
  }
}

/** A refusal: an AppError below 500 (the request's fault, judged before anything of it was written). */
function isRefusal(err: unknown): err is AppError {
  return err instanceof AppError && err.status < 500;
}

/**
 * An evaluation report's statistics are checked before anything is stored: the study's kind, as
 * many rows as the report claims, and (binary) the histogram resolution every honest node uses,
 * so one report cannot make the round's pooling fail.
 */
function checkEvaluationReport(config: StudyConfig, report: EvaluationReport): void {
  const unreleased = unreleasedFields(config.release, { kind: 'evaluation', report });
  if (unreleased.length > 0) throw new BadRequestError(`evaluation refused: ${unreleased.join(', ')} is not on the study's release list`, unreleased[0], 'NOT_RELEASED');
  const stats: EvaluationStats = report.stats;
  if (stats.kind !== config.task.kind) throw new BadRequestError(`evaluation refused: stats.kind is ${stats.kind} but the study is ${config.task.kind}`, 'stats.kind', 'INVALID_EVALUATION');
  const expected = expectedEvaluation(config.privacy);
  if (expected.noised || isNoised(stats)) {
    checkNoisedEvaluation(config, report);
    return;
  }
  if (stats.kind === 'binary' && stats.histogram.bins !== DEFAULT_HISTOGRAM_BINS) {
    throw new BadRequestError(`evaluation refused: stats.histogram.bins must be ${DEFAULT_HISTOGRAM_BINS}, got ${stats.histogram.bins}`, 'stats.histogram.bins', 'INVALID_EVALUATION');
  }
  const rows = statsRows(stats);
  if (rows !== report.numExamples) throw new BadRequestError(`evaluation refused: the statistics cover ${rows} rows but numExamples is ${report.numExamples}`, 'numExamples', 'INVALID_EVALUATION');
}

/**
 * The DP branch of the evaluation checks (issue 10). Under DP every count carries discrete
 * Gaussian noise (privacy.evaluation), so the exact checks cannot hold: the report must be the
 * noised form with the study's bins and noise std, and its count must be the clamped sum of its
 * noised counts (which the node computes exactly); noise is never accepted in a study without DP
 * (there the exact checks above stay strict). The count against the node's validation share
 * (when it declared rows publicly) is checked with 10 sigma of slack for the 2 x bins noised cells.
 */
function checkNoisedEvaluation(config: StudyConfig, report: EvaluationReport): void {
  const stats = report.stats;
  const expected = expectedEvaluation(config.privacy);
  if (!expected.noised) throw new BadRequestError('evaluation refused: noised statistics in a study without DP (its evaluations are exact)', 'stats.noise', 'INVALID_EVALUATION');
  if (!isNoised(stats)) throw new BadRequestError(`evaluation refused: study ${config.name} runs DP, so its evaluations must be noised (privacy.evaluation: ${expected.bins} bins, noise std ${expected.noiseStd}); exact statistics would release the node's validation rows`, 'stats', 'INVALID_EVALUATION');
  if (stats.kind === 'regression') {
    // Noised regression sums (protocols/privacy/noised-regression.ts): the study's z and clip B.
    const clip = expectedResidualClip(config);
    if (stats.noise.noiseMultiplier !== expected.noiseStd) throw new BadRequestError(`evaluation refused: stats.noise.noiseMultiplier must be ${expected.noiseStd} (privacy.evaluation.noiseMultiplier), got ${stats.noise.noiseMultiplier}`, 'stats.noise.noiseMultiplier', 'INVALID_EVALUATION');
    if (stats.noise.residualClip !== clip) throw new BadRequestError(`evaluation refused: stats.noise.residualClip must be ${clip} (privacy.evaluation.residualClip, default 2 x features.target.scale), got ${stats.noise.residualClip}`, 'stats.noise.residualClip', 'INVALID_EVALUATION');
  } else if (stats.kind === 'recommend') {
    // Noised user-level ranking sums (protocols/privacy/noised-recommend.ts): std z sqrt(3), the study's k.
    const std = recommendEvaluationNoiseStd(expected.noiseStd);
    if (stats.noise.noiseStd !== std) throw new BadRequestError(`evaluation refused: stats.noise.noiseStd must be ${std} (privacy.evaluation.noiseMultiplier x sqrt(3)), got ${stats.noise.noiseStd}`, 'stats.noise.noiseStd', 'INVALID_EVALUATION');
    if (config.task.kind === 'recommend' && stats.k !== config.task.k) throw new BadRequestError(`evaluation refused: stats.k must be the study's task.k ${config.task.k}, got ${stats.k}`, 'stats.k', 'INVALID_EVALUATION');
  } else if (stats.histogram.bins !== expected.bins) throw new BadRequestError(`evaluation refused: stats.histogram.bins must be ${expected.bins} (privacy.evaluation.bins), got ${stats.histogram.bins}`, 'stats.histogram.bins', 'INVALID_EVALUATION');
  else if (stats.noise.noiseStd !== expected.noiseStd) throw new BadRequestError(`evaluation refused: stats.noise.noiseStd must be ${expected.noiseStd} (privacy.evaluation.noiseMultiplier), got ${stats.noise.noiseStd}`, 'stats.noise.noiseStd', 'INVALID_EVALUATION');
  const rows = statsRows(stats);
  if (rows !== report.numExamples) throw new BadRequestError(`evaluation refused: numExamples must be the clamped sum of the noised counts, ${rows}, got ${report.numExamples}`, 'numExamples', 'INVALID_EVALUATION');
}

