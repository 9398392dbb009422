import { randomInt } from 'node:crypto';
import type { Transaction } from 'kysely';
import { evaluationScheduleOf, type StudyConfig } from '../../protocols/messages.ts';
import { encodeServerState } from '../../protocols/strategies/server-state.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { appendAudit, appendAudits } from '../audit/audit-log.ts';
import type { Database } from '../db/schema.ts';
import { ConflictError, NotFoundError } from '../errors.ts';
import { checkParticipants } from '../policies/policy-service.ts';
import { chargeRound, type Charge } from '../privacy/privacy-ledger.ts';
import { policiesInForce } from '../policies/policy-service.ts';
import { getModel, listStudyOpenRounds, insertRound, listReadyNodeIds, lockStudy, nodeRegions, updateStudy } from './round-repository.ts';
import { clipNormIn, startingServerState, type RoundDeps } from './round-state.ts';

export type OpenMode = 'auto' | 'manual';

/** What opening did: a round started, or the study ended (done, or stopped by a policy or the budget). */
export type RoundOpening =
  | { round: number; fitDeadline: Date; participants: string[]; charge: Charge | undefined }
  | { completed: true; rounds: number; reason: string | undefined };

/**
 * An early end: the study becomes `stopped` (not `completed`: it did not run its rounds), with the
 * reason every view shows and who stopped it. Callers hold the study row's lock.
 */
export async function markStudyStopped(tx: Transaction<Database>, studyId: string, stop: { reason: string; by: string; at: Date }): Promise<void> {
  await updateStudy(tx, studyId, { state: 'stopped', stop_reason: stop.reason, stopped_by: stop.by, stopped_at: stop.at });
}

/**
 * The transaction body of `openNextRound` (see round-service.ts): with the study row locked,
 * decides whether the next round may open and opens it, or ends the study. Undefined: nothing to
 * do now (the automatic path waits); a `manual` caller gets every refusal as an error instead.
 */
export async function openRound(tx: Transaction<Database>, deps: RoundDeps, studyId: string, config: StudyConfig, mode: OpenMode): Promise<RoundOpening | undefined> {
  const refuse = (code: string, message: string) => {
    if (mode === 'manual') throw new ConflictError(code, message);
    return undefined;
  };
  const study = await lockStudy(tx, studyId);
  if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
  // An operator asking for a round the budget cannot pay for hears that first, whatever else
  // stands in the way (a round still open, a study the automatic path already stopped for
  // budget): exhaustion is permanent, the rest is transient. Checked under the study lock, so
  // it sees every charge committed before it.
  if (mode === 'manual' && config.privacy?.central && config.privacy.budgetEpsilon !== undefined && study.current_round < config.rounds) {
    const check = await chargeRound(tx, studyId, study.current_round + 1, config, { dryRun: true });
    if (!check.ok) throw new ConflictError('BUDGET_EXCEEDED', check.reason);
  }
  if (study.state !== 'running') return refuse('STUDY_ENDED', `study ${studyId} has ended${study.stop_reason ? `: ${study.stop_reason}` : ''}`);
  const open = await listStudyOpenRounds(tx, studyId);
  const blocking = roundInTheWay(open, study.current_round, config);
  if (blocking !== undefined) return refuse('ROUND_OPEN', `round ${blocking} of study ${studyId} is still open`);
  // Only 'with-next-fit' gets here with a round open: the latest one, still evaluating.
  const evaluating = open.length > 0;
  if (study.current_round >= config.rounds) {
    // The study ends when its last round has closed, evaluation included.
    if (evaluating) return refuse('ROUND_OPEN', `round ${study.current_round} of study ${studyId} is still open`);
    await updateStudy(tx, studyId, { state: 'completed' });
    await appendAudit(tx, { actor: 'coordinator', kind: 'study.completed', studyId, data: { rounds: study.current_round } });
    return { completed: true, rounds: study.current_round, reason: undefined };
  }
  if (mode === 'auto' && !config.autoAdvance) return undefined;
  const ready = await listReadyNodeIds(tx, studyId);
  const needed = study.current_round === 0 ? (config.minNodesToStart ?? config.minNodesPerRound) : config.minNodesPerRound;
  if (ready.length < needed) return refuse('NOT_ENOUGH_NODES', `${ready.length} nodes are ready; study ${studyId} needs ${needed} to start a round`);
  const round = study.current_round + 1;
  const refused = await refuseByPolicy(tx, { studyId, round, config, mode, ready, completedRounds: study.current_round, now: deps.now(), evaluating });
  if (refused) return 'wait' in refused ? undefined : refused;
  const budget = await chargeBudget(tx, { studyId, round, config, mode, completedRounds: study.current_round, now: deps.now(), evaluating });
  if (budget.wait) return undefined;
  if (budget.stopped) return budget.stopped;
  return startFitRound(tx, deps, { studyId, round, config, mode, ready, charge: budget.charge });
}

/**
 * The open round that keeps the next one from opening, if any. 'own-phase': any open round.
 * 'with-next-fit': the next round may open while the latest round evaluates (its model is
 * published), but not beside a fit phase, nor beside an older round still evaluating: at most
 * one round evaluates beside one fit (nodes evaluate model r at the start of fit r+1).
 */
function roundInTheWay(open: Array<{ round: number; phase: string }>, currentRound: number, config: StudyConfig): number | undefined {
  if (open.length === 0) return undefined;
  const lone = open.length === 1 && open[0].phase === 'evaluate' && open[0].round === currentRound;
  return evaluationScheduleOf(config) === 'with-next-fit' && lone ? undefined : open[open.length - 1].round;
}

/** Every candidate's jurisdiction policy, checked before any privacy is charged or any node trains. */
async function refuseByPolicy(
  tx: Transaction<Database>,
  input: { studyId: string; round: number; config: StudyConfig; mode: OpenMode; ready: string[]; completedRounds: number; now: Date; evaluating: boolean },
): Promise<RoundOpening | { wait: true } | undefined> {
  const { studyId, round, mode } = input;
  const violations = await checkParticipants(tx, input.config, input.ready);
  if (violations.length === 0) return undefined;
  const first = violations[0];
  const reason = `round ${round} refused by policy: ${violations.map((v) => v.message).join('; ')}`;
  if (mode === 'manual') throw new ConflictError('POLICY_VIOLATION', `${reason} (rule ${first.rule} of ${first.jurisdiction} v${first.version})`);
  // The study is stopped only once the round still evaluating has closed (its reports count):
  // the automatic path asks again then, and stops it as 'own-phase' would have.
  if (input.evaluating) return { wait: true };
  await appendAudit(tx, { actor: 'coordinator', kind: 'round.refused', studyId, round, data: { violations } });
  await markStudyStopped(tx, studyId, { reason, by: 'coordinator', at: input.now });
  return { completed: true, rounds: input.completedRounds, reason };
}

/**
 * Under central DP, charges the round to the privacy ledger (in the transaction holding the study
 * lock). A budget that cannot pay stops the study on the automatic path; `manual` hears it as 409.
 */
async function chargeBudget(
  tx: Transaction<Database>,
  input: { studyId: string; round: number; config: StudyConfig; mode: OpenMode; completedRounds: number; now: Date; evaluating: boolean },
): Promise<{ charge: Charge | undefined; stopped?: undefined; wait?: undefined } | { stopped: RoundOpening; wait?: undefined } | { wait: true }> {
  const { studyId, round, config } = input;
  if (!config.privacy?.central) return { charge: undefined };
  // Beside a round still evaluating, a budget that cannot pay stops the study only once that
  // round closed (as refuseByPolicy): asked first without charging.
  if (input.evaluating && input.mode === 'auto' && !(await chargeRound(tx, studyId, round, config, { dryRun: true })).ok) return { wait: true };
  const result = await chargeRound(tx, studyId, round, config);
  if (result.ok) return { charge: result.charge };
  if (input.mode === 'manual') throw new ConflictError('BUDGET_EXCEEDED', result.reason);
  await markStudyStopped(tx, studyId, { reason: result.reason, by: 'coordinator', at: input.now });
  await appendAudit(tx, { actor: 'coordinator', kind: 'study.stopped', studyId, round, data: { reason: result.reason } });
  return { stopped: { completed: true, rounds: input.completedRounds, reason: result.reason } };
}

/** Samples the participants, fixes the round's server state and instructions, and inserts the round in its fit phase. */
async function startFitRound(
  tx: Transaction<Database>,
  deps: RoundDeps,
  input: { studyId: string; round: number; config: StudyConfig; mode: OpenMode; ready: string[]; charge: Charge | undefined },
): Promise<RoundOpening> {
  const { studyId, round, config, ready, charge } = input;
  const central = config.privacy?.central;
  // Poisson sampling of nodes (the accountant's q): each ready node joins with probability q.
  // The sample is recorded (audit, round record) and shown to admins and auditors: the
  // amplification by subsampling assumes the sample is secret from the adversary, and those
  // two roles are trusted with it (the auditor must be able to check who was asked). Analysts
  // see only their own region's nodes and never the accumulator. README "Differential privacy"
  // says what an auditor-level observer is then guaranteed.
  const q = central?.nodeSamplingRate ?? 1;
  const participants = q >= 1 ? [...ready] : ready.filter(() => randomInt(0, 2 ** 32) / 2 ** 32 < q);
  const strategy = deps.strategyFor(config);
  const previousModel = await getModel(tx, studyId, round - 1);
  const global = decodeWeights(new Uint8Array(previousModel.weights));
  // The server state (momentum, moments, adaptive clip norm) the previous round handed on.
  const serverState = await startingServerState(tx, studyId, round, strategy, global);
  const clipNorm = central ? clipNormIn(serverState) : null;
  const fitDeadline = new Date(deps.now().getTime() + config.roundDeadlineSeconds * 1000);
  // The round record carries the whole privacy configuration in force (central and DP-SGD).
  const mechanism = { strategy: strategy.name, strategyConfig: config.strategy, privacy: config.privacy ?? null, expectedParticipants: q * ready.length, ...(charge ? { epsilonRound: charge.epsilonRound, epsilonTotal: charge.epsilonTotal } : {}) };
  // Each participant's instructions (FedProx's mu...), fixed now so every retry gets the same.
  const nodeRows = await nodeRegions(tx, participants);
  const instructions = Object.fromEntries(strategy.configureFit(round, serverState, nodeRows, config.training));
  // The aggregation begins now, not at the first arrival: a privacy wrapper draws its noise in
  // aggregateFit(), so the state persisted after any update is already noised (issue 3: only
  // noised aggregates are ever stored).
  // Only central DP's (noised) opening state is stored: any other round opens with an empty fold, built in memory (fold-cache.ts), not 8 bytes a parameter of zeros read back with the locked round row on every update (issue 13).
  const accumulator = central ? strategy.aggregateFit(global, serverState, { round, participants: Math.max(1, q * ready.length) }).state() : null;
  await insertRound(tx, { study_id: studyId, round, phase: 'fit', participants: JSON.stringify(participants), fit_deadline: fitDeadline, evaluation_deadline: null, accumulator, num_examples: 0, mean_loss: null, validation_auc: null, validation_loss: null, failure_reason: null, closed_at: null, started_at: deps.now(), clip_norm: clipNorm, mechanism: JSON.stringify(mechanism), server_state: encodeServerState(serverState), next_server_state: null, instructions: JSON.stringify(instructions), validation_metrics: null });
  await updateStudy(tx, studyId, { current_round: round });
  const started = { actor: input.mode === 'manual' ? 'admin' : 'coordinator', kind: 'round.started', studyId, round, data: { participants, policies: await policiesInForce(tx, participants), fitDeadline: fitDeadline.toISOString(), clipNorm, mechanism, instructions, config } };
  await appendAudits(tx, charge ? [started, { actor: 'coordinator', kind: 'privacy.charged', studyId, round, data: { ...charge } }] : [started]);
  return { round, fitDeadline, participants, charge };
}
