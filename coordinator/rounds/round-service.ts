import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { DEFAULT_HISTOGRAM_BINS } from '../../protocols/metrics.ts';
import { unreleasedFields, type EvaluationReport, type StudyConfig, type Task, type UpdateMeta, type UpdateReceipt } from '../../protocols/messages.ts';
import { EvaluationStats, statsRows } from '../../protocols/model-kinds/kind.ts';
import { createHash, randomInt } from 'node:crypto';
import { chargeRound, type Charge } from '../privacy/privacy-ledger.ts';
import { FitInstructions, type FitAggregation, type FitFailure, type ServerState, type Strategy } from '../../protocols/strategies/strategy.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeServerState, encodeServerState } from '../../protocols/strategies/server-state.ts';
import { dropKeptUpdates, keepUpdate, keptUpdates, lockRound, previousRound, type RoundRow } from './round-repository.ts';
import { evaluationStatsOf, poolStudyEvaluation } from './evaluation-pooling.ts';
import { decodeWeights, encodeWeights, sha256Hex, WeightsCodecError } from '../../protocols/weights-codec.ts';
import type { Db } from '../db/database.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { appendAudit, checkpointAudit } from '../audit/audit-log.ts';
import { checkParticipants } from '../policies/policy-service.ts';
import { dropRegionalAccumulators, foldRegionalUpdate, makesRegionalModels, meanLossOf, publishRegionalModels } from '../regions/regional-models.ts';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../errors.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { studyTensorSpecs, type StudyService } from '../studies/study-service.ts';


/** Node states in which a participant can still train, and still evaluate what it trained. */
const TRAINING_STATES: ReadonlySet<string> = new Set(['ready']);
// A node past its privacy ceiling or refusing by policy no longer trains but still holds its
// data; evaluating a published model spends nothing of its record-level budget.
const EVALUATION_STATES: ReadonlySet<string> = new Set(['ready', 'privacy-ceiling', 'policy-refused']);

/** JSON with object keys sorted, so equal values hash equal whatever order they were sent in. */
function canonicalJson(value: unknown): string {
  if (value === undefined) return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/**
 * The round state machine: fit -> evaluate -> completed, or fit -> failed. Every transition is a
 * database transaction that locks the round row, so concurrent submissions, deadline timers and a
 * coordinator restart all see one consistent history. Timers are only a way to be on time: on
 * start-up `resume()` re-arms them from the deadlines stored in the database.
 */
export function createRoundService(deps: { db: Db; log: Logger; studies: StudyService; strategyFor: (config: StudyConfig) => Strategy; keyring: CoordinatorKeyring; now?: () => Date }) {
  const { db, log, studies, strategyFor } = deps;
  const now = deps.now ?? (() => new Date());
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const timers = new Map<string, NodeJS.Timeout>();
  let stopped = false;
  const background = new Set<Promise<unknown>>();

  const changeCounts = new Map<string, number>();
  function notify(studyId: string) {
    changeCounts.set(studyId, (changeCounts.get(studyId) ?? 0) + 1);
    changes.emit(studyId);
  }

  /** Runs a transition in the background (after a response, or from a timer), logging failures. */
  function spawn(what: string, fn: () => Promise<unknown>) {
    if (stopped) return;
    const p = fn()
      .catch((err) => log.error({ err, what }, 'round transition failed'))
      .finally(() => background.delete(p));
    background.add(p);
  }

  function schedule(studyId: string, round: number, at: Date) {
    const key = `${studyId}/${round}`;
    clearTimeout(timers.get(key));
    const delay = Math.max(0, at.getTime() - now().getTime()) + 5;
    timers.set(
      key,
      setTimeout(() => {
        timers.delete(key);
        spawn('deadline', () => advanceRound(studyId, round));
      }, Math.min(delay, 2 ** 31 - 1)),
    );
  }

  /** The public facts of a round a strategy may use: its number and its denominator. */
  function roundContext(row: RoundRow) {
    const expected = (row.mechanism as { expectedParticipants?: number } | null)?.expectedParticipants;
    return { round: row.round, participants: Math.max(1, expected ?? row.participants.length) };
  }

  /** The server state a round starts from: what the round before handed on, or the initial one. */
  async function startingServerState(tx: Db, studyId: string, round: number, strategy: Strategy, global: WeightSet): Promise<ServerState> {
    const previous = await previousRound(tx, studyId, round);
    const bytes = previous?.next_server_state ?? previous?.server_state;
    return bytes ? decodeServerState(new Uint8Array(bytes)) : strategy.initialServerState(global);
  }

  /**
   * The round's aggregation as persisted: its server state, its running state and (for strategies
   * that need every update) the updates kept so far, in arrival order. A restart resumes exactly.
   */
  async function aggregationOf(tx: Db, strategy: Strategy, global: WeightSet, row: RoundRow): Promise<FitAggregation> {
    const serverState = row.server_state ? decodeServerState(new Uint8Array(row.server_state)) : strategy.initialServerState(global);
    if (!row.accumulator) return strategy.beginFit(global, serverState, roundContext(row));
    const kept = strategy.input === 'every-update' ? await keptUpdates(tx, row.study_id, row.round) : [];
    return strategy.resumeFit(global, serverState, new Uint8Array(row.accumulator), kept, roundContext(row));
  }

  /**
   * Opens the next round if it may: none open, rounds left, enough ready nodes, and (with central
   * DP) the privacy budget covers it. The budget check and the charge happen in the transaction
   * that holds the study row's lock, so two starts at the same moment cannot both spend the last
   * of a budget. `manual` callers get the refusal as an error; the automatic path just waits.
   */
  async function openNextRound(studyId: string, mode: 'auto' | 'manual' = 'auto'): Promise<{ round: number } | undefined> {
    // Read outside the transaction: on PGlite the transaction holds the only connection.
    const config = await studies.getConfig(studyId);
    const refuse = (code: string, message: string) => {
      if (mode === 'manual') throw new ConflictError(code, message);
      return undefined;
    };
    const opened = await db.transaction().execute(async (tx) => {
      const study = await tx.selectFrom('studies').selectAll().where('id', '=', studyId).forUpdate().executeTakeFirst();
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
      const open = await tx.selectFrom('rounds').select('round').where('study_id', '=', studyId).where('phase', 'in', ['fit', 'evaluate']).executeTakeFirst();
      if (open) return refuse('ROUND_OPEN', `round ${open.round} of study ${studyId} is still open`);
      if (study.current_round >= config.rounds) {
        await tx.updateTable('studies').set({ state: 'completed' }).where('id', '=', studyId).execute();
        await appendAudit(tx, { actor: 'coordinator', kind: 'study.completed', studyId, data: { rounds: study.current_round } });
        return { completed: true as const, rounds: study.current_round, reason: undefined as string | undefined };
      }
      if (mode === 'auto' && !config.autoAdvance) return undefined;
      const ready = await tx.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('state', '=', 'ready').orderBy('id').execute();
      const needed = study.current_round === 0 ? (config.minNodesToStart ?? config.minNodesPerRound) : config.minNodesPerRound;
      if (ready.length < needed) return refuse('NOT_ENOUGH_NODES', `${ready.length} nodes are ready; study ${studyId} needs ${needed} to start a round`);
      const round = study.current_round + 1;
      // Every candidate's jurisdiction policy, checked before any privacy is charged or any node trains.
      const violations = await checkParticipants(tx, config, ready.map((n) => n.id));
      if (violations.length > 0) {
        const first = violations[0];
        const reason = `round ${round} refused by policy: ${violations.map((v) => v.message).join('; ')}`;
        if (mode === 'manual') throw new ConflictError('POLICY_VIOLATION', `${reason} (rule ${first.rule} of ${first.jurisdiction} v${first.version})`);
        await appendAudit(tx, { actor: 'coordinator', kind: 'round.refused', studyId, round, data: { violations } });
        await tx.updateTable('studies').set({ state: 'completed', stop_reason: reason }).where('id', '=', studyId).execute();
        return { completed: true as const, rounds: study.current_round, reason };
      }
      const central = config.privacy?.central;
      let charge: Charge | undefined;
      if (central) {
        const result = await chargeRound(tx, studyId, round, config);
        if (!result.ok) {
          if (mode === 'manual') throw new ConflictError('BUDGET_EXCEEDED', result.reason);
          await tx.updateTable('studies').set({ state: 'completed', stop_reason: result.reason }).where('id', '=', studyId).execute();
          await appendAudit(tx, { actor: 'coordinator', kind: 'study.stopped', studyId, round, data: { reason: result.reason } });
          return { completed: true as const, rounds: study.current_round, reason: result.reason };
        }
        charge = result.charge;
      }
      // Poisson sampling of nodes (the accountant's q): each ready node joins with probability q.
      // The sample is recorded (audit, round record) and shown to admins and auditors: the
      // amplification by subsampling assumes the sample is secret from the adversary, and those
      // two roles are trusted with it (the auditor must be able to check who was asked). Analysts
      // see only their own region's nodes and never the accumulator. README "Differential privacy"
      // says what an auditor-level observer is then guaranteed.
      const q = central?.nodeSamplingRate ?? 1;
      const participants = q >= 1 ? ready.map((n) => n.id) : ready.filter(() => randomInt(0, 2 ** 32) / 2 ** 32 < q).map((n) => n.id);
      const strategy = strategyFor(config);
      const previousModel = await tx.selectFrom('models').select('weights').where('study_id', '=', studyId).where('version', '=', round - 1).executeTakeFirstOrThrow();
      const global = decodeWeights(new Uint8Array(previousModel.weights));
      // The server state (momentum, moments, adaptive clip norm) the previous round handed on.
      const serverState = await startingServerState(tx, studyId, round, strategy, global);
      const clipNorm = central ? clipNormIn(serverState) : null;
      const fitDeadline = new Date(now().getTime() + config.roundDeadlineSeconds * 1000);
      // The round record carries the whole privacy configuration in force (central and DP-SGD).
      const mechanism = { strategy: strategy.name, strategyConfig: config.strategy, privacy: config.privacy ?? null, expectedParticipants: q * ready.length, ...(charge ? { epsilonRound: charge.epsilonRound, epsilonTotal: charge.epsilonTotal } : {}) };
      // Each participant's instructions (FedProx's mu...), fixed now so every retry gets the same.
      const nodeRows = participants.length ? await tx.selectFrom('nodes').select(['id', 'region']).where('id', 'in', participants).orderBy('id').execute() : [];
      const instructions = Object.fromEntries(strategy.configureFit(round, serverState, nodeRows, config.training));
      // The aggregation begins now, not at the first arrival: a privacy wrapper draws its noise in
      // beginFit(), so the state persisted after any update is already noised (issue 3: only
      // noised aggregates are ever stored).
      const accumulator = strategy.beginFit(global, serverState, { round, participants: Math.max(1, q * ready.length) }).state();
      await tx
        .insertInto('rounds')
        .values({ study_id: studyId, round, phase: 'fit', participants: JSON.stringify(participants), fit_deadline: fitDeadline, evaluation_deadline: null, accumulator, num_examples: 0, mean_loss: null, validation_auc: null, validation_loss: null, failure_reason: null, closed_at: null, started_at: now(), clip_norm: clipNorm, mechanism: JSON.stringify(mechanism), server_state: encodeServerState(serverState), next_server_state: null, instructions: JSON.stringify(instructions), validation_metrics: null })
        .execute();
      await tx.updateTable('studies').set({ current_round: round }).where('id', '=', studyId).execute();
      await appendAudit(tx, { actor: mode === 'manual' ? 'admin' : 'coordinator', kind: 'round.started', studyId, round, data: { participants, fitDeadline: fitDeadline.toISOString(), clipNorm, mechanism, instructions, config } });
      if (charge) await appendAudit(tx, { actor: 'coordinator', kind: 'privacy.charged', studyId, round, data: { ...charge } });
      return { round, fitDeadline, participants, charge };
    });
    if (opened && 'completed' in opened) {
      if (opened.reason) log.warn({ studyId, rounds: opened.rounds, reason: opened.reason }, 'study stopped');
      else log.info({ studyId, rounds: opened.rounds }, 'study completed');
      // A study's end (stopped by a policy or the budget, or done) is a checkpoint too: the
      // refusal entries just written are then covered by a signature without waiting for another
      // study's round.
      await checkpointAudit(db, deps.keyring).catch((err) => log.error({ err, studyId }, 'audit checkpoint failed'));
      notify(studyId);
      return undefined;
    }
    if (opened) {
      log.info({ studyId, round: opened.round, participants: opened.participants.length, deadline: opened.fitDeadline, privacy: opened.charge }, 'round started');
      schedule(studyId, opened.round, opened.fitDeadline);
      notify(studyId);
      // Poisson sampling can select nobody: such a round has nothing to wait for.
      if (opened.participants.length === 0) spawn('empty-sample', () => advanceRound(studyId, opened.round));
      return { round: opened.round };
    }
    return undefined;
  }

  async function maybeStartNextRound(studyId: string): Promise<void> {
    await openNextRound(studyId, 'auto');
  }

  /**
   * Moves a round forward if it can: closes the fit phase when every participant reported or the
   * deadline passed, closes the evaluation the same way. Idempotent: calling it twice is harmless.
   */
  async function advanceRound(studyId: string, round: number): Promise<void> {
    const config = await studies.getConfig(studyId);
    const transitionStarted = performance.now();
    const outcome = await db.transaction().execute(async (tx) => {
      const row = await lockRound(tx, studyId, round);
      if (!row) return undefined;
      const participants = row.participants;
      const t = now();
      if (row.phase === 'fit') {
        const updates = await tx.selectFrom('updates').select(['node_id', 'num_examples', 'loss']).where('study_id', '=', studyId).where('round', '=', round).execute();
        // Participants that said they cannot train (data error, policy refusal, privacy ceiling,
        // withdrawn, revoked) are the round's failures, as in Flower's aggregate_fit(results,
        // failures): the round does not wait for them.
        const failures = await cannotTrain(tx, participants.filter((id) => !updates.some((u) => u.node_id === id)), TRAINING_STATES);
        const allIn = updates.length + failures.length >= participants.length;
        const deadlinePassed = t >= new Date(row.fit_deadline);
        if (!allIn && !deadlinePassed) return undefined;
        // Counts only: the reason is shown to every reader of the round, while who could not train
        // (which reveals who was sampled) is in mechanism.failures, filtered per reader.
        const failureNote = failures.length ? `; ${failures.length} could not train (${[...new Set(failures.map((f) => f.state))].sort().join(', ')})` : '';
        if (updates.length < config.minNodesPerRound) {
          const when = deadlinePassed ? `by the deadline ${new Date(row.fit_deadline).toISOString()}` : 'and every other participant said it cannot train';
          const reason = `only ${updates.length} of ${participants.length} nodes reported ${when}${failureNote}; the study requires at least ${config.minNodesPerRound}`;
          // "No new weights": the model AND the server state carry over unchanged.
          await tx.updateTable('rounds').set({ phase: 'failed', failure_reason: reason, closed_at: t, accumulator: null, next_server_state: row.server_state }).where('study_id', '=', studyId).where('round', '=', round).execute();
          await dropRegionalAccumulators(tx, studyId, round);
          await dropKeptUpdates(tx, studyId, round);
          // "No new parameters" means "keep the global model": version `round` is version
          // round-1, so the next round has a model to start from.
          const kept = await tx.selectFrom('models').select(['weights', 'sha256', 'bytes']).where('study_id', '=', studyId).where('version', '=', round - 1).executeTakeFirstOrThrow();
          const keptBytes = new Uint8Array(kept.weights);
          const signed = await deps.keyring.sign(keptBytes);
          await tx.insertInto('models').values({ study_id: studyId, version: round, weights: keptBytes, sha256: kept.sha256, bytes: kept.bytes, signature: signed.signature, signer_fingerprint: signed.fingerprint }).execute();
          await tx.updateTable('studies').set({ latest_model_version: round }).where('id', '=', studyId).execute();
          await appendAudit(tx, { actor: 'coordinator', kind: 'round.failed', studyId, round, data: { reason, updates: updates.length, participants: participants.length, failures, modelKept: kept.sha256 } });
          return { kind: 'failed' as const, reason };
        }
        const previous = await tx.selectFrom('models').select('weights').where('study_id', '=', studyId).where('version', '=', round - 1).executeTakeFirstOrThrow();
        const global = decodeWeights(new Uint8Array(previous.weights));
        const strategy = strategyFor(config);
        const aggregation = await aggregationOf(tx, strategy, global, row);
        // Flower's aggregate_fit(results, failures): who could not train, and who was late.
        const fitFailures: FitFailure[] = [
          ...failures.map((f) => ({ nodeId: f.nodeId, reason: f.state })),
          ...participants.filter((id) => !updates.some((u) => u.node_id === id) && !failures.some((f) => f.nodeId === id)).map((nodeId) => ({ nodeId, reason: 'late' })),
        ];
        const outcome = aggregation.finish(fitFailures);
        // "No new weights" (e.g. Krum with too few updates) keeps the global model.
        const next = outcome.weights ?? global;
        const bytes = encodeWeights(next);
        const sha256 = sha256Hex(bytes);
        const { signature, fingerprint } = await deps.keyring.sign(bytes);
        const numExamples = updates.reduce((s, u) => s + u.num_examples, 0);
        const meanLoss = meanLossOf(updates);
        const regionalModels = await publishRegionalModels(tx, { studyId, round, global, keyring: deps.keyring, contributors: updates });
        await tx.insertInto('models').values({ study_id: studyId, version: round, weights: bytes, sha256, bytes: bytes.length, signature, signer_fingerprint: fingerprint }).execute();
        await tx.updateTable('studies').set({ latest_model_version: round }).where('id', '=', studyId).execute();
        await appendAudit(tx, { actor: 'coordinator', kind: 'aggregate.published', studyId, round, data: { modelVersion: round, modelSha256: sha256, bytes: bytes.length, signerFingerprint: fingerprint, nodes: updates.map((u) => u.node_id), failures, numExamples, mechanism: outcome.details, regionalModels } });
        const evaluationDeadline = new Date(t.getTime() + config.evaluationDeadlineSeconds * 1000);
        await tx
          .updateTable('rounds')
          // The partial sum is dropped once the aggregate exists: only published models persist.
          .set({ phase: 'evaluate', evaluation_deadline: evaluationDeadline, accumulator: null, next_server_state: encodeServerState(outcome.serverState), num_examples: numExamples, mean_loss: meanLoss, mechanism: JSON.stringify({ ...(row.mechanism ?? {}), ...outcome.details, ...(failures.length ? { failures } : {}), ...(regionalModels.length ? { regionalModels } : {}) }) })
          .where('study_id', '=', studyId)
          .where('round', '=', round)
          .execute();
        await dropKeptUpdates(tx, studyId, round);
        return { kind: 'aggregated' as const, evaluationDeadline, sha256, nodes: updates.length, meanLoss };
      }
      if (row.phase === 'evaluate') {
        const evaluations = await tx.selectFrom('evaluations').select(['node_id', 'num_examples', 'loss', 'histogram', 'stats']).where('study_id', '=', studyId).where('round', '=', round).execute();
        const updaters = await tx.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute();
        // A node that lost its data (or left) since it trained cannot evaluate: do not wait for it.
        const unable = await cannotTrain(tx, updaters.map((u) => u.node_id).filter((id) => !evaluations.some((e) => e.node_id === id)), EVALUATION_STATES);
        const allIn = evaluations.length + unable.length >= updaters.length;
        if (!allIn && t < new Date(row.evaluation_deadline!)) return undefined;
        // The kind's sufficient statistics, summed: the metrics of the pooled held-out rows.
        const metrics = poolStudyEvaluation(config, evaluations.map(evaluationStatsOf));
        const auc = typeof metrics.auc === 'number' ? metrics.auc : Number.NaN;
        const loss = meanLossOf(evaluations);
        await tx
          .updateTable('rounds')
          .set({ phase: 'completed', validation_auc: Number.isFinite(auc) ? auc : null, validation_loss: loss, validation_metrics: JSON.stringify(metrics), closed_at: t })
          .where('study_id', '=', studyId)
          .where('round', '=', round)
          .execute();
        await appendAudit(tx, { actor: 'coordinator', kind: 'round.completed', studyId, round, data: { validationAuc: Number.isFinite(auc) ? auc : null, validationLoss: loss, validationMetrics: metrics, evaluations: evaluations.length } });
        return { kind: 'completed' as const, auc, evaluations: evaluations.length };
      }
      return undefined;
    });
    if (!outcome) return;
    if (outcome.kind === 'aggregated') {
      log.info({ studyId, round, nodes: outcome.nodes, meanLoss: outcome.meanLoss, modelSha256: outcome.sha256, aggregateMs: performance.now() - transitionStarted }, 'round aggregated');
      schedule(studyId, round, outcome.evaluationDeadline);
      notify(studyId);
      return;
    }
    if (outcome.kind === 'failed') log.warn({ studyId, round, reason: outcome.reason }, 'round failed');
    else log.info({ studyId, round, validationAuc: outcome.auc, evaluations: outcome.evaluations }, 'round completed');
    clearTimeout(timers.get(`${studyId}/${round}`));
    // The round's end is a checkpoint: the coordinator signs the chain head (a failure is logged;
    // the next checkpoint covers these entries too, and the study must not stall on it).
    await checkpointAudit(db, deps.keyring).catch((err) => log.error({ err, studyId, round }, 'audit checkpoint failed'));
    notify(studyId);
    await maybeStartNextRound(studyId);
  }

  /** Of these nodes, those whose state rules out the work (with their state), in id order. */
  async function cannotTrain(tx: Db, nodeIds: string[], allowed: ReadonlySet<string>): Promise<Array<{ nodeId: string; state: string }>> {
    if (nodeIds.length === 0) return [];
    const rows = await tx.selectFrom('nodes').select(['id', 'state']).where('id', 'in', nodeIds).orderBy('id').execute();
    return rows.filter((r) => !allowed.has(r.state)).map((r) => ({ nodeId: r.id, state: r.state }));
  }

  /** The task waiting for this node, if any: fit in the fit phase, evaluate in the evaluation phase. */
  async function findTask(node: AuthenticatedNode): Promise<Task | undefined> {
    const row = await db
      .selectFrom('rounds')
      .selectAll()
      .where('study_id', '=', node.studyId)
      .where('phase', 'in', ['fit', 'evaluate'])
      .orderBy('round', 'desc')
      .executeTakeFirst();
    if (!row || !row.participants.includes(node.id)) return undefined;
    // The state now, not the one at authentication: a node that reported it cannot train gets no
    // fit task (it would only skip it and ask again), until it reports `ready` again.
    const current = await db.selectFrom('nodes').select('state').where('id', '=', node.id).executeTakeFirst();
    if (!current || !(row.phase === 'fit' ? TRAINING_STATES : EVALUATION_STATES).has(current.state)) return undefined;
    const config = await studies.getConfig(node.studyId);
    if (row.phase === 'fit') {
      const done = await db.selectFrom('updates').select('node_id').where('study_id', '=', node.studyId).where('round', '=', row.round).where('node_id', '=', node.id).executeTakeFirst();
      if (done) return undefined;
      const model = await studies.getModel(node.studyId, row.round - 1);
      const mine = (row.instructions as Record<string, unknown> | null)?.[node.id];
      const instructions = mine ? FitInstructions.parse(mine) : undefined;
      return { kind: 'fit', studyId: node.studyId, round: row.round, modelVersion: row.round - 1, modelSha256: model.sha256, deadline: new Date(row.fit_deadline).toISOString(), config, ...(instructions ? { instructions } : {}) };
    }
    const [submitted, evaluated] = await Promise.all([
      db.selectFrom('updates').select('node_id').where('study_id', '=', node.studyId).where('round', '=', row.round).where('node_id', '=', node.id).executeTakeFirst(),
      db.selectFrom('evaluations').select('node_id').where('study_id', '=', node.studyId).where('round', '=', row.round).where('node_id', '=', node.id).executeTakeFirst(),
    ]);
    if (!submitted || evaluated) return undefined;
    const model = await studies.getModel(node.studyId, row.round);
    return { kind: 'evaluate', studyId: node.studyId, round: row.round, modelVersion: row.round, modelSha256: model.sha256, deadline: new Date(row.evaluation_deadline!).toISOString(), config };
  }

  return {
    changes,
    maybeStartNextRound,
    openNextRound,
    advanceRound,

    /** After a restart: re-arm deadline timers and open rounds that are due. */
    async resume() {
      const open = await db.selectFrom('rounds').select(['study_id', 'round', 'phase', 'fit_deadline', 'evaluation_deadline']).where('phase', 'in', ['fit', 'evaluate']).execute();
      for (const r of open) {
        schedule(r.study_id, r.round, new Date(r.phase === 'fit' ? r.fit_deadline : r.evaluation_deadline!));
        spawn('resume', () => advanceRound(r.study_id, r.round));
        log.info({ studyId: r.study_id, round: r.round, phase: r.phase }, 'resumed open round');
      }
      const running = await db.selectFrom('studies').select('id').where('state', '=', 'running').execute();
      for (const s of running) spawn('resume', () => maybeStartNextRound(s.id));
    },

    /** Resolves when anything about the study changes, or after `seconds` (long polling for watchers). */
    async waitForChange(studyId: string, seconds: number, seen?: number): Promise<void> {
      if (seconds <= 0 || stopped || (seen !== undefined && (changeCounts.get(studyId) ?? 0) !== seen)) return;
      let wake!: () => void;
      const changed = new Promise<void>((resolve) => (wake = resolve));
      changes.once(studyId, wake);
      changes.once('__stop__', wake);
      const timer = setTimeout(wake, seconds * 1000);
      try {
        await changed;
      } finally {
        clearTimeout(timer);
        changes.off(studyId, wake);
        changes.off('__stop__', wake);
      }
    },

    changeCount(studyId: string): number {
      return changeCounts.get(studyId) ?? 0;
    },

    /**
     * A node enrolled, changed state, withdrew or was revoked: the open round may now be able to
     * close (every remaining participant said it cannot train), or a new one to open.
     */
    onNodeChanged(studyId: string) {
      notify(studyId);
      spawn('node-changed', async () => {
        const open = await db.selectFrom('rounds').select('round').where('study_id', '=', studyId).where('phase', 'in', ['fit', 'evaluate']).executeTakeFirst();
        if (open) await advanceRound(studyId, open.round);
        else await maybeStartNextRound(studyId);
      });
    },

    /** Long-polls for this node's next task: resolves as soon as one exists, or undefined after `waitSeconds`. */
    async nextTask(node: AuthenticatedNode, waitSeconds: number, signal?: AbortSignal): Promise<Task | undefined> {
      const until = Date.now() + waitSeconds * 1000;
      for (;;) {
        // Subscribe before looking, so a change between the look and the wait is not missed.
        let wake!: () => void;
        const changed = new Promise<void>((resolve) => (wake = resolve));
        changes.once(node.studyId, wake);
        changes.once('__stop__', wake);
        try {
          const task = await findTask(node);
          const left = until - Date.now();
          if (task || left <= 0 || signal?.aborted || stopped) return task;
          const study = await db.selectFrom('studies').select('state').where('id', '=', node.studyId).executeTakeFirst();
          if (study?.state !== 'running') return undefined;
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([changed, new Promise<void>((resolve) => (timer = setTimeout(resolve, left)))]);
          clearTimeout(timer);
        } finally {
          changes.off(node.studyId, wake);
          changes.off('__stop__', wake);
        }
      }
    },

    /**
     * Accepts one node's model for a round, exactly once. A retry of the same bytes gets the
     * original receipt; different bytes for the same node and round are refused; nothing of a
     * refused update is stored.
     */
    async submitUpdate(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array): Promise<{ receipt: UpdateReceipt; replay: boolean }> {
      if (studyId !== node.studyId) throw new ForbiddenError(`node ${node.id} is not enrolled in study ${studyId}`);
      const config = await studies.getConfig(studyId);
      const unreleased = unreleasedFields(config.release, { kind: 'update', meta });
      if (unreleased.length > 0) throw new BadRequestError(`update refused: ${unreleased.join(', ')} ${unreleased.length === 1 ? 'is' : 'are'} not on study ${studyId}'s release list; nothing of it was stored`, unreleased[0], 'NOT_RELEASED');
      const sha256 = sha256Hex(body);
      // A retry is the same weights AND the same metadata: the counts are part of the submission.
      const metaSha256 = createHash('sha256').update(canonicalJson(meta)).digest('hex');
      let weights;
      try {
        weights = decodeWeights(body, { expected: studyTensorSpecs(config), dtype: 'float32' });
      } catch (err) {
        if (err instanceof WeightsCodecError) throw new BadRequestError(`update refused: ${err.message}`, 'body', 'INVALID_WEIGHTS');
        throw err;
      }
      // Fetched before the transaction (cached, immutable): on PGlite the transaction holds the only connection.
      const global = await studies.getModelWeights(studyId, round - 1).catch(() => undefined);
      const result = await db.transaction().execute(async (tx) => {
        const row = await lockRound(tx, studyId, round);
        if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
        if (!row.participants.includes(node.id)) throw new ForbiddenError(`node ${node.id} is not a participant of round ${round}`);
        const current = await tx.selectFrom('nodes').select(['state']).where('id', '=', node.id).executeTakeFirstOrThrow();
        if (current.state === 'withdrawn' || current.state === 'revoked') throw new ForbiddenError(`node ${node.id} is ${current.state}; its updates are no longer accepted`);
        const previous = await tx.selectFrom('updates').selectAll().where('study_id', '=', studyId).where('round', '=', round).where('node_id', '=', node.id).executeTakeFirst();
        if (previous) {
          const previousMeta = previous.meta as Record<string, unknown> & { metaSha256?: string };
          if (previous.sha256 === sha256 && previousMeta.metaSha256 === metaSha256) {
            return { replay: true, receipt: { studyId, round, nodeId: node.id, sha256, bytes: previous.bytes, acceptedAt: new Date(previous.accepted_at).toISOString() } };
          }
          if (previous.sha256 === sha256) {
            const fields = Object.keys(meta).filter((k) => canonicalJson((meta as Record<string, unknown>)[k]) !== canonicalJson(previousMeta[k]));
            throw new ConflictError(
              'DUPLICATE_UPDATE',
              `node ${node.id} already submitted these weights for round ${round} with different metadata (${fields.join(', ') || 'the update header'} differ); a retry must resend the same header, and a corrected count is a new update, which one node may send once per round`,
            );
          }
          throw new ConflictError('DUPLICATE_UPDATE', `node ${node.id} already submitted a different update for round ${round} (sha256 ${previous.sha256.slice(0, 12)}...); one update per node and round`);
        }
        const t = now();
        if (row.phase !== 'fit' || t > new Date(row.fit_deadline)) {
          throw new ConflictError('ROUND_CLOSED', `round ${round} no longer accepts updates (phase ${row.phase}, deadline ${new Date(row.fit_deadline).toISOString()}); this late update was not stored`);
        }
        if (!global) throw new NotFoundError(`study ${studyId} has no model version ${round - 1}`);
        const strategy = strategyFor(config);
        const aggregation = await aggregationOf(tx, strategy, global, row);
        // deltaNorm: the norm of what entered the aggregate (after clipping, under central DP).
        const { deltaNorm, clipped, kept } = aggregation.accept(weights, meta.numExamples);
        await tx.updateTable('rounds').set({ accumulator: aggregation.state() }).where('study_id', '=', studyId).where('round', '=', round).execute();
        // Strategies that need every update (median, Krum...) get each one stored once.
        if (kept) await keepUpdate(tx, { studyId, round, nodeId: node.id, bytes: kept });
        if (makesRegionalModels(config)) await foldRegionalUpdate(tx, { studyId, round, region: node.region, global, update: weights, numExamples: meta.numExamples });
        await tx
          .insertInto('updates')
          .values({ study_id: studyId, round, node_id: node.id, sha256, bytes: body.length, num_examples: meta.numExamples, loss: meta.loss ?? null, meta: JSON.stringify({ ...meta, deltaNorm, clipped: clipped ?? false, metaSha256 }), accepted_at: t })
          .execute();
        await tx.updateTable('nodes').set({ last_seen_at: t }).where('id', '=', node.id).execute();
        // Size, hash, clipped norm and counts: never the values.
        await appendAudit(tx, { actor: `node:${node.id}`, kind: 'update.received', studyId, round, data: { nodeId: node.id, bytes: body.length, sha256, numExamples: meta.numExamples, deltaNorm, clipped: clipped ?? false, dpSgd: meta.dpSgd ?? null } });
        const received = await tx.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute();
        // All in: every participant either sent its update or said it cannot train.
        const waitingFor = row.participants.filter((id) => !received.some((u) => u.node_id === id));
        const allIn = waitingFor.length === 0 || (await cannotTrain(tx, waitingFor, TRAINING_STATES)).length === waitingFor.length;
        return { replay: false, allIn, deltaNorm, receipt: { studyId, round, nodeId: node.id, sha256, bytes: body.length, acceptedAt: t.toISOString() } };
      });
      if (!result.replay) {
        log.info({ studyId, round, nodeId: node.id, bytes: body.length, sha256, numExamples: meta.numExamples, loss: meta.loss }, 'update accepted');
        // The last expected update closes the fit phase now; otherwise the deadline timer will.
        if (result.allIn) spawn('after-update', () => advanceRound(studyId, round));
      }
      return result;
    },

    async submitEvaluation(node: AuthenticatedNode, studyId: string, round: number, report: EvaluationReport) {
      if (studyId !== node.studyId) throw new ForbiddenError(`node ${node.id} is not enrolled in study ${studyId}`);
      const config = await studies.getConfig(studyId);
      checkEvaluationReport(config, report);
      const stored = await db.transaction().execute(async (tx) => {
        const row = await lockRound(tx, studyId, round);
        if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
        const updated = await tx.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).where('node_id', '=', node.id).executeTakeFirst();
        if (!updated) throw new ForbiddenError(`node ${node.id} did not train in round ${round}, so it has no evaluation to report`);
        const previous = await tx.selectFrom('evaluations').select(['histogram', 'stats', 'num_examples', 'loss']).where('study_id', '=', studyId).where('round', '=', round).where('node_id', '=', node.id).executeTakeFirst();
        if (previous) {
          // jsonb reorders keys: compare canonical forms, not the serialization.
          const same = canonicalJson(evaluationStatsOf(previous)) === canonicalJson(report.stats) && previous.num_examples === report.numExamples && (previous.loss ?? undefined) === report.loss;
          if (same) return false;
          throw new ConflictError('DUPLICATE_EVALUATION', `node ${node.id} already reported a different evaluation for round ${round}`);
        }
        if (row.phase !== 'evaluate' || now() > new Date(row.evaluation_deadline!)) {
          throw new ConflictError('ROUND_CLOSED', `round ${round} no longer accepts evaluations (phase ${row.phase})`);
        }
        await tx
          .insertInto('evaluations')
          .values({ study_id: studyId, round, node_id: node.id, num_examples: report.numExamples, loss: report.loss ?? null, histogram: null, stats: JSON.stringify(report.stats) })
          .execute();
        await appendAudit(tx, { actor: `node:${node.id}`, kind: 'evaluation.received', studyId, round, data: { nodeId: node.id, numExamples: report.numExamples, kind: report.stats.kind, ...(report.stats.kind === 'binary' ? { bins: report.stats.histogram.bins } : {}) } });
        const evaluated = await tx.selectFrom('evaluations').select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute();
        const updaters = await tx.selectFrom('updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute();
        // All in: every node that trained has evaluated, or can no longer (see advanceRound).
        const waitingFor = updaters.map((u) => u.node_id).filter((id) => !evaluated.some((e) => e.node_id === id));
        return waitingFor.length === 0 || (await cannotTrain(tx, waitingFor, EVALUATION_STATES)).length === waitingFor.length ? 'all-in' : true;
      });
      if (stored === 'all-in') spawn('after-evaluation', () => advanceRound(studyId, round));
      return { studyId, round, nodeId: node.id, stored: stored !== false };
    },

    async stop() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      changes.emit('__stop__');
      await Promise.allSettled([...background]);
    },
  };
}
export type RoundService = ReturnType<typeof createRoundService>;

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
  if (stats.kind === 'binary' && stats.histogram.bins !== DEFAULT_HISTOGRAM_BINS) {
    throw new BadRequestError(`evaluation refused: stats.histogram.bins must be ${DEFAULT_HISTOGRAM_BINS}, got ${stats.histogram.bins}`, 'stats.histogram.bins', 'INVALID_EVALUATION');
  }
  const rows = statsRows(stats);
  if (rows !== report.numExamples) throw new BadRequestError(`evaluation refused: the statistics cover ${rows} rows but numExamples is ${report.numExamples}`, 'numExamples', 'INVALID_EVALUATION');
}

/** The clip norm in force under central DP, from the server state (the DP wrapper keeps it there). */
function clipNormIn(state: ServerState): number | null {
  const key = Object.keys(state.scalars).find((k) => /clipNorm$/i.test(k));
  return key === undefined ? null : state.scalars[key];
}
