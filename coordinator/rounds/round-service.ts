import { sql } from 'kysely';
import type { Logger } from 'pino';
import { evaluationScheduleOf, type EvaluationReport, type RiddenEvaluation, type StudyConfig, type Task, type UpdateMeta, type UpdateReceipt } from '../../protocols/messages.ts';
import type { Strategy } from '../../protocols/strategies/strategy.ts';
import type { Db } from '../db/database.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { checkpointAudit } from '../audit/audit-log.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import type { StudyService } from '../studies/study-service.ts';
import { closeEvaluation } from './close-evaluation.ts';
import { closeFit, failFit, type FitClosing } from './close-fit.ts';
import { acceptEvaluation, acceptUpdate, acceptUpdateWithEvaluation, type EvaluationOutcome, type UpdateOutcome } from './intake.ts';
import { openRound, type OpenMode } from './open-round.ts';
import { createRoundEvents, type RetryPolicy } from './round-events.ts';
import {
  listOpenRounds,
  listOverdueRounds,
  listRunningStudiesWithoutOpenRound,
  listRunningStudyIds,
  listStudyOpenRounds,
  listUpdateContributions,
  lockRound,
  lockRoundHead,
  reclaimKeptUpdateSpace,
  KEPT_SPACE_RECLAIM_BYTES,
  type RoundRow,
} from './round-repository.ts';
import type { RoundDeps } from './round-state.ts';
import { findTask, skippedLook } from './tasks.ts';
import { createTransitionsInFlight } from './transitions-in-flight.ts';

/**
 * What the round service reports as rounds move (the coordinator's metrics, http/metrics.ts):
 * called synchronously after each transition commits, never awaited, never able to fail one.
 */
export type RoundObservation = { studyId: string; round: number } & (
  | { kind: 'opened' | 'failed' | 'completed' | 'evaluation-stored' }
  | { kind: 'aggregated'; aggregateMs: number }
  | { kind: 'study-ended'; outcome: 'completed' | 'stopped' }
  | { kind: 'update-accepted'; bytes: number }
);

/**
 * The round state machine: fit -> evaluate -> completed, or fit -> failed. With the study's
 * evaluationSchedule 'with-next-fit', round r+1 opens as soon as round r aggregates, so one round
 * may evaluate while the next is in its fit phase (tasks.ts hands both out as one task). Every transition is a
 * database transaction that locks the round row, so concurrent submissions, deadline timers and a
 * coordinator restart all see one consistent history. Timers are only a way to be on time: on
 * start-up `resume()` re-arms them from the deadlines stored in the database.
 *
 * This is the composition: it runs each transition in its transaction, then logs, arms timers and
 * notifies (timers, background work and notifications: round-events.ts). What a transition does
 * is in open-round.ts (opening: budget, policy, sampling, server state, instructions),
 * close-fit.ts (aggregation or failure), close-evaluation.ts (pooling), intake.ts (updates and
 * evaluations) and tasks.ts (a node's next task); their SQL is in round-repository.ts.
 *
 * Nothing stalls a study: a background transition that fails is retried with backoff until it
 * commits; every `deadlineSweepSeconds` the database is asked for open rounds past their deadline
 * (and running studies with no open round), so a lost timer cannot leave a round open; and an
 * error of the closing computation itself fails (fit) or completes (evaluation) the round
 * instead of throwing again at every retry.
 */
export function createRoundService(deps: {
  db: Db;
  log: Logger;
  studies: StudyService;
  strategyFor: (config: StudyConfig) => Strategy;
  keyring: CoordinatorKeyring;
  now?: () => Date;
  deadlineSweepSeconds?: number;
  retry?: RetryPolicy;
  /** Told of every transition (metrics); optional so tests and tools may leave it out. */
  observe?: (o: RoundObservation) => void;
}) {
  const { db, log, studies } = deps;
  const observe = deps.observe ?? (() => {});
  const now = deps.now ?? (() => new Date());
  const machine: RoundDeps = { db, studies, strategyFor: deps.strategyFor, keyring: deps.keyring, now };
  const events = createRoundEvents({
    log,
    now,
    onDeadline: (studyId, round) => advanceRound(studyId, round),
    retry: deps.retry,
    sweepSeconds: deps.deadlineSweepSeconds ?? 5,
    sweep: () => sweep(),
  });
  const { notify, spawn, schedule } = events;
  // Per node: the study's task-change count at its last task look (nextTask), in memory.
  const lastLooks = new Map<string, number>();
  // Per study: the latest round this coordinator opened (and woke the nodes for), in memory.
  const openedHere = new Map<string, number>();
  const roundKey = (studyId: string, round: number) => `${studyId}/${round}`;
  // Per study: the transitions and update intakes running now, so a round's end checkpoint goes after them (transitions-in-flight.ts).
  const transitions = createTransitionsInFlight();

  /**
   * Opens the next round if it may: none open, rounds left, enough ready nodes, and (with central
   * DP) the privacy budget covers it. The budget check and the charge happen in the transaction
   * that holds the study row's lock, so two starts at the same moment cannot both spend the last
   * of a budget. `manual` callers get the refusal as an error; the automatic path just waits.
   */
  async function openNextRound(studyId: string, mode: OpenMode = 'auto'): Promise<{ round: number } | undefined> {
    // Read outside the transaction: on PGlite the transaction holds the only connection.
    const config = await studies.getConfig(studyId);
    const opened = await db.transaction().execute((tx) => openRound(tx, machine, studyId, config, mode));
    if (opened && 'completed' in opened) {
      if (opened.reason) log.warn({ studyId, rounds: opened.rounds, reason: opened.reason }, 'study stopped');
      else log.info({ studyId, rounds: opened.rounds }, 'study completed');
      observe({ kind: 'study-ended', studyId, round: opened.rounds, outcome: opened.reason ? 'stopped' : 'completed' });
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
      observe({ kind: 'opened', studyId, round: opened.round });
      openedHere.set(studyId, opened.round);
      notify(studyId);
      // Poisson sampling can select nobody: such a round has nothing to wait for.
      if (opened.participants.length === 0) spawn('empty-sample', () => advanceRound(studyId, opened.round), roundKey(studyId, opened.round));
      return { round: opened.round };
    }
    return undefined;
  }

  async function maybeStartNextRound(studyId: string): Promise<void> {
    await openNextRound(studyId, 'auto');
  }

  /**
   * After round `aggregated` aggregated, or was advanced again still evaluating ('with-next-fit'):
   * opens the next round if it may (which wakes the study's watchers); wakes them anyway if not,
   * since the aggregated round's evaluation tasks are due either way, unless this coordinator
   * already opened a later round: that opening woke them and its fit tasks carry the evaluation
   * (issue 13: the previous round's completion often opens it first, and the second wake cost
   * every waiting node an empty lookup).
   */
  async function openOrNotify(studyId: string, aggregated: number): Promise<void> {
    try {
      if (await openNextRound(studyId, 'auto')) return;
    } catch (err) {
      notify(studyId); // the evaluation tasks of the round that aggregated are due either way
      throw err;
    }
    if ((openedHere.get(studyId) ?? 0) <= aggregated) notify(studyId);
  }

  /** submitUpdate's work: the update accepted once, logged, and the fit's close started when it was the last one. */
  async function takeUpdate(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array): Promise<{ receipt: UpdateReceipt; replay: boolean }> {
    return updateTaken(node, studyId, round, meta, body, await acceptUpdate(machine, node, studyId, round, meta, body));
  }

  /** After an update's transaction committed: a fresh one logged and observed, and the fit's close started when it was the last one. */
  function updateTaken(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array, result: UpdateOutcome): { receipt: UpdateReceipt; replay: boolean } {
    if (!result.replay) {
      log.info({ studyId, round, nodeId: node.id, bytes: body.length, sha256: result.receipt.sha256, numExamples: meta.numExamples, loss: meta.loss }, 'update accepted');
      observe({ kind: 'update-accepted', studyId, round, bytes: body.length });
      // The last expected update closes the fit phase now; otherwise the deadline timer will.
      if (result.allIn) spawn('after-update', () => advanceRound(studyId, round), roundKey(studyId, round));
    }
    return result;
  }

  /** After an evaluation's transaction committed: observed, and the evaluation's close started when it was the last one. */
  function evaluationTaken(studyId: string, round: number, stored: EvaluationOutcome): void {
    if (stored !== false) observe({ kind: 'evaluation-stored', studyId, round });
    if (stored === 'all-in') spawn('after-evaluation', () => advanceRound(studyId, round), roundKey(studyId, round));
  }

  /** submitUpdateWithEvaluation's work: both parts in one transaction, each one's after-effects, the update's refusal thrown last. */
  async function takeUpdateWithEvaluation(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array, evaluation: { round: number; report: EvaluationReport }) {
    const judged = await acceptUpdateWithEvaluation(machine, node, studyId, { round, meta, body }, evaluation);
    const e = judged.evaluation;
    if ('ok' in e) evaluationTaken(studyId, evaluation.round, e.ok);
    const ridden: RiddenEvaluation = 'ok' in e ? { round: evaluation.round, stored: e.ok !== false } : { round: evaluation.round, refused: { status: e.refused.status, code: e.refused.code, message: e.refused.message } };
    if ('refused' in judged.update) throw judged.update.refused;
    return { ...updateTaken(node, studyId, round, meta, body, judged.update.ok), ridden };
  }

  /**
   * Moves a round forward if it can: closes the fit phase when every participant reported or the
   * deadline passed, closes the evaluation the same way. Idempotent: calling it twice is harmless.
   */
  function advanceRound(studyId: string, round: number): Promise<void> {
    return transitions.track(studyId, (self) => advanceRoundNow(studyId, round, self));
  }

  async function advanceRoundNow(studyId: string, round: number, self: symbol): Promise<void> {
    const config = await studies.getConfig(studyId);
    const transitionStarted = performance.now();
    const outcome = await db.transaction().execute(async (tx) => {
      // The head first: only closing a fit phase needs the row's state blobs (read again below,
      // under the lock already held); an evaluation phase's close and a closed round do not.
      const head = await lockRoundHead(tx, studyId, round);
      if (!head) return undefined;
      const t = now();
      if (head.phase === 'fit') return closeFitOrFail(tx, (await lockRound(tx, studyId, round))!, config, t);
      if (head.phase === 'evaluate') return (await closeEvaluation(tx, head, config, deps.strategyFor(config), t)) ?? { kind: 'evaluating' as const };
      return { kind: 'closed' as const };
    });
    if (!outcome) return;
    // Still waiting for evaluations: under 'with-next-fit' the next round may already be due (an
    // opening after the aggregation that failed and was retried from here, a restart). Its
    // evaluation tasks are due either way; the nodes were already woken for them when this
    // coordinator opened a later round (openOrNotify; issue 13: this woke every waiting node, ten
    // empty task lookups, in two rounds of three in the demo).
    if (outcome.kind === 'evaluating') return pipelined(config) ? openOrNotify(studyId, round) : undefined;
    // Closed already (by another trigger, or by an earlier attempt of this one whose opening of
    // the next round failed after the close committed): the next round may still be due.
    if (outcome.kind === 'closed') return maybeStartNextRound(studyId);
    if (outcome.kind === 'aggregated') {
      const aggregateMs = performance.now() - transitionStarted;
      log.info({ studyId, round, nodes: outcome.nodes, meanLoss: outcome.meanLoss, modelSha256: outcome.sha256, aggregateMs }, 'round aggregated');
      observe({ kind: 'aggregated', studyId, round, aggregateMs });
      schedule(studyId, round, outcome.evaluationDeadline);
      // 'with-next-fit': round r+1 opens now, beside round r's evaluation; its fit tasks carry
      // the evaluation of model r (tasks.ts), so a round costs one task poll per node, not two.
      // The nodes are woken once, by the opening: woken before it, they would take round r's
      // evaluation as a task of its own, then round r+1's fit as another.
      if (pipelined(config)) await openOrNotify(studyId, round);
      else notify(studyId);
      // After the next round's tasks are out: its nodes train while the space is freed.
      reclaimSpace(outcome.droppedBytes);
      return;
    }
    observe({ kind: outcome.kind, studyId, round });
    if (outcome.kind === 'failed') log.warn({ studyId, round, reason: outcome.reason }, 'round failed');
    else {
      for (const e of outcome.excluded) log.warn({ studyId, round, nodeId: e.nodeId, reason: e.reason }, 'evaluation report excluded from pooling');
      log.info({ studyId, round, validationAuc: outcome.auc, evaluations: outcome.evaluations }, 'round completed');
    }
    events.cancel(studyId, round);
    // The round's end is a checkpoint: the coordinator signs the chain head (a failure is logged;
    // the next checkpoint covers these entries too, and the study must not stall on it). Signed
    // after the study's transitions already running: under 'with-next-fit' this round completes
    // as the next one's fit closes, and its nodes wait for that close and the opening after it.
    await transitions.othersSettled(studyId, self);
    await checkpointAudit(db, deps.keyring).catch((err) => log.error({ err, studyId, round }, 'audit checkpoint failed'));
    // A closed round makes no task: nodes are woken by what opens next (or by the study's end).
    // Watchers (the dashboard) are woken after the next round opened or the study ended, its own
    // checkpoint signed: woken before, a page could read the study completed but not that
    // checkpoint, and a page stops following a study that no longer runs.
    try {
      await maybeStartNextRound(studyId);
    } finally {
      notify(studyId, 'watchers');
    }
    if (outcome.kind === 'failed') reclaimSpace(outcome.droppedBytes);
  }

  /**
   * The closed fit phase's kept updates were dropped: once enough bytes were (KEPT_SPACE_RECLAIM_BYTES),
   * their space is freed in the background. Counted in memory: after a restart the next reclaim
   * simply comes later, and frees everything dropped before it too.
   */
  let droppedSinceReclaim = 0;
  function reclaimSpace(droppedBytes: number): void {
    droppedSinceReclaim += droppedBytes;
    if (droppedSinceReclaim < KEPT_SPACE_RECLAIM_BYTES) return;
    droppedSinceReclaim = 0;
    spawn('reclaim-space', () => reclaimKeptUpdateSpace(db));
  }

  /**
   * closeFit, except that an error of the aggregation itself (a stored update or state that makes
   * the strategy throw, a model the range guard refuses) fails the round with that reason: such an
   * error is deterministic, so retrying would throw again and the round would never close.
   * Database errors propagate (the transaction rolls back and the transition is retried); the
   * savepoint undoes whatever closeFit wrote before it threw.
   */
  async function closeFitOrFail(tx: Parameters<typeof closeFit>[0], row: RoundRow, config: StudyConfig, t: Date): Promise<FitClosing | undefined> {
    await sql`savepoint close_fit`.execute(tx);
    try {
      return await closeFit(tx, machine, row, config, t);
    } catch (err) {
      if (isDatabaseError(err)) throw err;
      // A connection that is gone cannot roll back: then it was the database after all.
      await sql`rollback to savepoint close_fit`.execute(tx).catch(() => Promise.reject(err));
      const message = err instanceof Error ? err.message : String(err);
      const reason = `aggregation failed: ${message.length > 300 ? `${message.slice(0, 300)}...` : message}`;
      log.error({ err, studyId: row.study_id, round: row.round }, 'aggregation failed; the round fails and the model carries over');
      const updates = await listUpdateContributions(tx, row.study_id, row.round);
      return failFit(tx, machine, { row, config, t, updates, failures: [], deadlinePassed: t >= new Date(row.fit_deadline), reason });
    }
  }

  /**
   * The backstop for deadline timers: closes open rounds past their deadline and opens rounds
   * that are due, from what the database says (a missed timer, a transition whose retries were
   * lost to a restart, or a round another replica opened). Rounds with a transition already
   * running or waiting to retry are left to it.
   */
  async function sweep(): Promise<void> {
    for (const r of await listOverdueRounds(db, now())) {
      const key = roundKey(r.study_id, r.round);
      if (events.busy(key)) continue;
      log.info({ studyId: r.study_id, round: r.round, phase: r.phase }, 'deadline sweep: closing an overdue round');
      spawn('sweep', () => advanceRound(r.study_id, r.round), key);
    }
    for (const id of await listRunningStudiesWithoutOpenRound(db)) {
      const key = `${id}/next`;
      if (!events.busy(key)) spawn('sweep-open', () => maybeStartNextRound(id), key);
    }
  }

  return {
    changes: events.changes,
    maybeStartNextRound,
    openNextRound,
    advanceRound,

    /** After a restart: re-arm deadline timers and open rounds that are due. */
    async resume() {
      const open = await listOpenRounds(db);
      for (const r of open) {
        schedule(r.study_id, r.round, new Date(r.phase === 'fit' ? r.fit_deadline : r.evaluation_deadline!));
        spawn('resume', () => advanceRound(r.study_id, r.round), roundKey(r.study_id, r.round));
        log.info({ studyId: r.study_id, round: r.round, phase: r.phase }, 'resumed open round');
      }
      const running = await listRunningStudyIds(db);
      for (const id of running) spawn('resume', () => maybeStartNextRound(id), `${id}/next`);
      events.startSweep();
    },

    /** One deadline sweep now (tests; the timer runs it every `deadlineSweepSeconds`). */
    sweep: () => events.runSweep(),

    waitForChange: events.waitForChange,
    changeCount: events.changeCount,
    idle: events.idle,

    /**
     * A node enrolled, changed state, withdrew or was revoked: the open round may now be able to
     * close (every remaining participant said it cannot train), or a new one to open.
     */
    onNodeChanged(studyId: string) {
      notify(studyId);
      spawn('node-changed', async () => {
        // Two may be open under 'with-next-fit' (one evaluating, one in its fit phase): oldest first.
        const open = await listStudyOpenRounds(db, studyId);
        for (const r of open) await advanceRound(studyId, r.round);
        if (open.length === 0) await maybeStartNextRound(studyId);
      });
    },

    /** Long-polls for this node's next task: resolves as soon as one exists, or undefined after `waitSeconds`. */
    async nextTask(node: AuthenticatedNode, waitSeconds: number, signal?: AbortSignal, after?: 'update'): Promise<Task | undefined> {
      const until = Date.now() + waitSeconds * 1000;
      // Right after its update (after = 'update'): when nothing that may make a task happened
      // here since this node's last look (task changes: notify 'all'), its tasks can only have
      // shrunk since then (its own fit was just done), so the first look is skipped: it would
      // find nothing (issue 13: one task view a node-round, not two). A change made on another
      // replica wakes no wait here in any case; the node's next poll finds it.
      let skipLook = after === 'update' && lastLooks.get(node.id) === events.taskChangeCount(node.studyId);
      let rechecked = false;
      for (;;) {
        // Subscribe before looking, so a change between the look and the wait is not missed.
        const subscription = events.subscribe(node.studyId, 'tasks');
        try {
          lastLooks.set(node.id, events.taskChangeCount(node.studyId));
          if (skipLook) skippedLook(node);
          // A transition running before the look, after it, or started and done during it, may have
          // run between its statements.
          const transitionBefore = transitions.busy(node.studyId);
          const startedBefore = transitions.started(node.studyId);
          const { task, running } = skipLook ? { task: undefined, running: true } : await findTask(machine, node);
          skipLook = false;
          // Under 'with-next-fit' a round's fit close and the next round's opening are two
          // transactions. Looked at between them, a participant of the next round would take the
          // closed round's evaluation as a task of its own, though the next fit task carries it
          // (one request, not two). Such a look waits for the study's transitions, once, and looks
          // again; a node that is in no next round then gets the same evaluation a moment later.
          // (One running now either ran before the look or started during it.)
          const transitionDuring = transitionBefore || transitions.started(node.studyId) !== startedBefore;
          if (task?.kind === 'evaluate' && !rechecked && pipelined(task.config) && transitionDuring) {
            rechecked = true;
            await transitions.allSettled(node.studyId, Math.max(0, Math.min(2000, until - Date.now())));
            continue;
          }
          const left = until - Date.now();
          if (task || left <= 0 || signal?.aborted || events.stopped) return task;
          if (!running) return undefined;
          let timer: NodeJS.Timeout | undefined;
          // The caller hanging up ends the wait too (its request is not held for nothing).
          let hungUp: (() => void) | undefined;
          await Promise.race([subscription.changed, new Promise<void>((resolve) => (timer = setTimeout(resolve, left))), new Promise<void>((resolve) => signal?.addEventListener('abort', (hungUp = () => resolve()), { once: true }))]);
          clearTimeout(timer);
          if (hungUp) signal?.removeEventListener('abort', hungUp);
        } finally {
          subscription.off();
        }
      }
    },

    /**
     * Accepts one node's model for a round, exactly once. A retry of the same bytes gets the
     * original receipt; different bytes for the same node and round are refused; nothing of a
     * refused update is stored.
     */
    submitUpdate(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array): Promise<{ receipt: UpdateReceipt; replay: boolean }> {
      // Tracked: a round's end checkpoint waits for it, then for the fit close it may start.
      return transitions.track(studyId, () => takeUpdate(node, studyId, round, meta, body), 'intake');
    },

    /**
     * submitUpdate with the evaluation of the round before riding on it (the node evaluated its
     * starting model): both judged on their own as two requests would be, stored in one
     * transaction (intake.ts acceptUpdateWithEvaluation). The evaluation's refusal is returned
     * with it; the update's is thrown, the evaluation stored all the same.
     */
    submitUpdateWithEvaluation(node: AuthenticatedNode, studyId: string, round: number, meta: UpdateMeta, body: Uint8Array, evaluation: { round: number; report: EvaluationReport }): Promise<{ receipt: UpdateReceipt; replay: boolean; ridden: RiddenEvaluation }> {
      return transitions.track(studyId, () => takeUpdateWithEvaluation(node, studyId, round, meta, body, evaluation), 'intake');
    },

    async submitEvaluation(node: AuthenticatedNode, studyId: string, round: number, report: EvaluationReport) {
      const stored = await acceptEvaluation(machine, node, studyId, round, report);
      evaluationTaken(studyId, round, stored);
      return { studyId, round, nodeId: node.id, stored: stored !== false };
    },

    stop: events.stop,
  };
}
export type RoundService = ReturnType<typeof createRoundService>;

/** Whether the study evaluates each round with the next round's fit tasks (StudyConfig.evaluationSchedule). */
function pipelined(config: StudyConfig): boolean {
  return evaluationScheduleOf(config) === 'with-next-fit';
}

/**
 * An error the database raised (it carries a SQLSTATE and a severity, as pg's and PGlite's do) or
 * a lost connection: transient, so the transition is retried rather than the round failed.
 */
function isDatabaseError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: unknown; severity?: unknown; errno?: unknown; syscall?: unknown };
  if (typeof e.severity === 'string' && typeof e.code === 'string') return true;
  if (e.errno !== undefined || e.syscall !== undefined) return true;
  return /connection|terminat|timeout|not queryable|ECONN/i.test(e.message);
}
