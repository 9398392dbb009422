import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { StudyConfig, StudyState } from '../../protocols/messages.ts';
import { createStrategy } from '../../protocols/strategies/index.ts';
import { appendAudit, checkpointAudit } from '../audit/audit-log.ts';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { NotFoundError } from '../errors.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { dropRegionalAccumulators } from '../regions/repository.ts';
import { closeEvaluation } from '../rounds/close-evaluation.ts';
import { markStudyStopped } from '../rounds/open-round.ts';
import { dropKeptUpdates, listStudyOpenRounds, lockRound, lockStudy, updateRound, type RoundRow } from '../rounds/round-repository.ts';

/** What `POST /v1/studies/:studyId/stop` answers: the study's end as it now stands. */
export interface StopResult {
  id: string;
  state: StudyState;
  stopReason: string | null;
  stoppedBy: string | null;
  stoppedAt: string | null;
  /** false: the study had already ended (stopped or completed) and nothing changed. */
  changed: boolean;
  /** The round the stop closed, and how: its fit phase failed (no model published) or its evaluation was pooled as it stood. */
  closedRound: { round: number; phase: 'failed' | 'completed' } | null;
}

/** The default reason of an operator's stop without --reason. */
export const OPERATOR_STOP_REASON = 'stopped by an operator';

type StopDeps = { db: Db; log: Logger; keyring: CoordinatorKeyring; now: () => Date };

/**
 * Stops a running study for good, as an operator asked: its open round is closed without
 * publishing a model (a fit phase fails and keeps the previous model; an evaluation phase is
 * pooled from the reports already in, its model having been published when the fit closed), the
 * study becomes `stopped` with the reason and the actor, and the stop is audited and covered by a
 * signed checkpoint. Idempotent: a study that already ended is returned as it is.
 *
 * Lock order is the round's row, then the study's, as a round's closing takes them, so a stop
 * and a closing wait for each other instead of deadlocking; a deadlock with a round opened
 * between the two looks (PostgreSQL aborts one of them) is retried.
 */
export async function stopStudy(deps: StopDeps, studyId: string, actor: string, reason: string | undefined, config: StudyConfig): Promise<StopResult> {
  const why = reason?.trim() || OPERATOR_STOP_REASON;
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await deps.db.transaction().execute((tx) => stopInTransaction(tx, deps, { studyId, actor, reason: why, config }));
      if (result.changed) {
        deps.log.warn({ studyId, actor, reason: why, closedRound: result.closedRound }, 'study stopped by an operator');
        await checkpointAudit(deps.db, deps.keyring).catch((err) => deps.log.error({ err, studyId }, 'audit checkpoint failed'));
      }
      return result;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (attempt >= 3 || (code !== '40P01' && code !== '40001')) throw err;
    }
  }
}

async function stopInTransaction(tx: Transaction<Database>, deps: StopDeps, input: { studyId: string; actor: string; reason: string; config: StudyConfig }): Promise<StopResult> {
  const { studyId, actor, reason } = input;
  // Under evaluationSchedule 'with-next-fit' up to two rounds are open (one evaluating, the next in its fit phase).
  for (const seen of await listStudyOpenRounds(tx, studyId)) await lockRound(tx, studyId, seen.round);
  const study = await lockStudy(tx, studyId);
  if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
  const view = (s: { state: StudyState; stop_reason: string | null; stopped_by: string | null; stopped_at: Date | string | null }) => ({
    id: studyId,
    state: s.state,
    stopReason: s.stop_reason,
    stoppedBy: s.stopped_by,
    stoppedAt: s.stopped_at ? new Date(s.stopped_at).toISOString() : null,
  });
  if (study.state !== 'running') return { ...view(study), changed: false, closedRound: null };
  // Under the study lock no round can open: the ones open now (oldest first) are the ones to close.
  const at = deps.now();
  const closed: Array<{ round: number; phase: 'failed' | 'completed' }> = [];
  for (const open of await listStudyOpenRounds(tx, studyId)) {
    const row = await lockRound(tx, studyId, open.round);
    if (row) closed.push(await closeOpenRound(tx, row, input.config, at, reason));
  }
  // `closedRound`: the latest round closed, as before; `closedRounds` too when two were open.
  const closedRound = closed.at(-1) ?? null;
  const more = closed.length > 1 ? { closedRounds: closed } : {};
  await markStudyStopped(tx, studyId, { reason, by: actor, at });
  await appendAudit(tx, { actor, kind: 'study.stopped', studyId, data: { reason, by: actor, closedRound, ...more } });
  return { ...view({ state: 'stopped', stop_reason: reason, stopped_by: actor, stopped_at: at }), changed: true, closedRound };
}

/** Closes the open round of a study being stopped; publishes nothing new. */
async function closeOpenRound(tx: Transaction<Database>, row: RoundRow, config: StudyConfig, at: Date, reason: string): Promise<{ round: number; phase: 'failed' | 'completed' }> {
  const { study_id: studyId, round } = row;
  if (row.phase === 'evaluate') {
    // The model of this round is already published: its evaluation closes with what came in
    // (as at its deadline), so the round keeps the metrics of the reports that arrived.
    const deadline = new Date(row.evaluation_deadline!);
    await closeEvaluation(tx, row, config, createStrategy(config), at > deadline ? at : deadline);
    await updateRound(tx, studyId, round, { closed_at: at });
    return { round, phase: 'completed' };
  }
  const failure = `study stopped: ${reason}`;
  // As a failed fit: no new weights, the partial (noised) sum dropped, the server state carried.
  await updateRound(tx, studyId, round, { phase: 'failed', failure_reason: failure, closed_at: at, accumulator: null, next_server_state: row.server_state });
  await dropRegionalAccumulators(tx, studyId, round);
  await dropKeptUpdates(tx, studyId, round);
  await appendAudit(tx, { actor: 'coordinator', kind: 'round.failed', studyId, round, data: { reason: failure, stopped: true, modelPublished: false } });
  return { round, phase: 'failed' };
}
