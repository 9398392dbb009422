import type { IRouter, Request, Response } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import { EvaluationReport, Id, roundBinding, type Task, type TaskMessage } from '../../protocols/messages.ts';
import { MAX_EVALUATION_PART_BYTES } from '../../protocols/update-frame.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import { openSealedUpdate } from '../auth/sealed-update.ts';
import { ConflictError, ForbiddenError } from '../errors.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { json, rawBodyOf, route } from '../http/middleware.ts';
import { carriesEvaluation, evaluationPartOf, readSealedBody, updateMetaOf } from '../http/update-intake.ts';
import { parse, RoundParam } from '../http/validate.ts';
import type { StudyService } from '../studies/study-service.ts';
import type { RoundService } from './round-service.ts';
import type { TaskModelInliner } from './task-model.ts';

const StudyParams = z.object({ studyId: Id });
const RoundParams = z.object({ studyId: Id, round: RoundParam });
const UpdateParams = RoundParams.extend({ nodeId: Id });
/** ?wait=S: how long the node's task request may be held open (capped by the coordinator's maxTaskWaitSeconds). */
/**
 * ?config=HASH: the Task.configSha256 the node already holds; a task built from that same config
 * is sent without `config` (TaskMessage), so it is neither serialized here nor parsed on the node
 * at every poll. A node that does not send it gets the full config.
 */
export const TaskQuery = z.object({ wait: z.coerce.number().min(0).max(120).default(0), config: z.string().regex(/^[0-9a-f]{64}$/).optional() });

export interface RoundRouterDeps {
  guard: RequestGuard;
  studies: StudyService;
  rounds: Pick<RoundService, 'openNextRound' | 'nextTask' | 'submitUpdate' | 'submitUpdateWithEvaluation' | 'submitEvaluation'>;
  keyring: Pick<CoordinatorKeyring, 'decryptionKeys'>;
  maxTaskWaitSeconds: number;
  /** Puts a small task's model into it (Task.model, rounds/task-model.ts); tasks go without it when absent. */
  withModel?: TaskModelInliner;
  /** Where a failed next-task lookup after an accepted update is said (the update stands). */
  log?: Logger;
}

/**
 * Rounds: open one, read one (as each role may see it), and the node's side: pull a task, submit
 * an update (sealed, signed, streamed; the previous round's evaluation may ride on it), submit an
 * evaluation.
 *
 * @example
 *   registerRoundRoutes(app, { guard, studies, rounds, keyring, maxTaskWaitSeconds: 30 });
 */
export function registerRoundRoutes(app: IRouter, deps: RoundRouterDeps) {
  const { guard, studies, rounds } = deps;
  app.get('/v1/studies/:studyId/rounds/:round', route(async (req, res) => {
    const p = await guard.who(req);
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    res.json(await studies.getRoundFor(p, studyId, round));
  }));
  app.get('/v1/studies/:studyId/rounds/:round/updates/:nodeId', route(async (req, res) => {
    const p = await guard.who(req);
    const { studyId, round, nodeId } = parse(UpdateParams, req.params, 'params');
    res.json(await studies.getUpdateFor(p, studyId, round, nodeId));
  }));
  app.post('/v1/studies/:studyId/rounds', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    const { studyId } = parse(StudyParams, req.params, 'params');
    const opened = await rounds.openNextRound(studyId, 'manual');
    if (!opened) throw new ConflictError('STUDY_ENDED', `study ${studyId} has no rounds left`);
    res.status(201).json({ studyId, ...opened });
  }));
  app.get('/v1/tasks/next', route(async (req, res) => {
    const node = await guard.requireNode(req);
    const { wait, config: held } = parse(TaskQuery, req.query, 'query');
    const abort = new AbortController();
    req.on('close', () => abort.abort());
    const task = await rounds.nextTask(node, Math.min(wait, deps.maxTaskWaitSeconds), abort.signal);
    if (!task) return void res.status(204).end();
    res.json(await taskMessage(deps, task, held));
  }));
  registerUpdateRoute(app, deps);
  app.post('/v1/studies/:studyId/rounds/:round/evaluations', json, route(async (req, res) => {
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    const node = await guard.requireNode(req, { body: rawBodyOf(req), roundId: roundBinding(studyId, round) });
    const report = parse(EvaluationReport, req.body, 'body');
    const result = await rounds.submitEvaluation(node, studyId, round, report);
    res.status(result.stored ? 201 : 200).json(result);
  }));
}

/** POST an update: no JSON body parser, the sealed body is streamed after the caller is known. */
function registerUpdateRoute(app: IRouter, deps: RoundRouterDeps) {
  app.post('/v1/studies/:studyId/rounds/:round/updates', route(async (req, res) => {
    const { wait, config: held } = parse(TaskQuery, req.query, 'query');
    // The intake in its own function: the body, the sealed bytes and the opened weights are
    // garbage once it returns, not held through the wait below (one model's worth per node).
    const { node, receipt, replay, ridden } = await takeUpdate(deps, req);
    // ?wait=S: the node's next task rides back on the receipt, as GET /v1/tasks/next would answer
    // it (issue 13: one signed request a round instead of two). The wait may skip its first look
    // only after a fresh update whose evaluation (if any) was stored: a retry may follow an answer
    // that was lost with its task, and a refused evaluation may still be owed on its own.
    const mayskip = !replay && (ridden === undefined || ridden.stored === true);
    const next = wait > 0 ? await nextTaskAfterUpdate(deps, node, Math.min(wait, deps.maxTaskWaitSeconds), held, res, mayskip) : undefined;
    res.status(replay ? 200 : 201).json({ ...receipt, ...(ridden ? { evaluation: ridden } : {}), ...(next ? { next } : {}) });
  }));
}

/** The update route's intake: the caller checked, the body read, verified and opened, the evaluation riding on it judged, the update stored. */
async function takeUpdate(deps: RoundRouterDeps, req: Request) {
  const { guard, studies, rounds } = deps;
  const { studyId, round } = parse(RoundParams, req.params, 'params');
  // Who the bearer claims to be, before a byte of the body is buffered: an anonymous caller, a
  // person, or a node of another study is refused without the coordinator reading up to a whole
  // model into memory (or revealing whether the study exists). The signature over the body is
  // checked below, once the body is read.
  const claimed = await guard.claim(req);
  requireRole(claimed, 'node');
  if (claimed.node.studyId !== studyId) throw new ForbiddenError(`node ${claimed.id} is not enrolled in study ${studyId}`);
  const { meta, header } = updateMetaOf(req);
  const framed = carriesEvaluation(req);
  // No fixed ceiling: the limit follows the study's model size (and the evaluation part's, when framed).
  const maxSealedBytes = await studies.maxUpdateBytes(studyId);
  const body = await readSealedBody(req, maxSealedBytes + (framed ? 4 + MAX_EVALUATION_PART_BYTES : 0));
  // The signed request covers the body (sealed bytes, and the evaluation riding on them) and the
  // round binding, which carries the hash of the metadata header: the signature covers the counts
  // (numExamples, dpSgd spend) as well.
  const node = await guard.requireNode(req, { body, roundId: roundBinding(studyId, round, header), claimed });
  const { evaluation, sealed } = framed ? evaluationPartOf(body, round, maxSealedBytes) : { evaluation: undefined, sealed: body };
  // Opened before anything is stored: a sealed update that does not open refuses the request whole.
  const weights = await openSealedUpdate(deps.keyring, sealed, node.publicKey!);
  // With the evaluation (of the previous round, as when it came on its own before training) in one
  // transaction, each judged on its own: the evaluation's refusal is reported in the receipt, and
  // the update's does not undo it.
  if (!evaluation) return { node, ...(await rounds.submitUpdate(node, studyId, round, meta, weights)), ridden: undefined };
  return { node, ...(await rounds.submitUpdateWithEvaluation(node, studyId, round, meta, weights, evaluation)) };
}

/** A task as sent: its model inlined when small, its config left out when the node holds it (?config=). */
async function taskMessage(deps: Pick<RoundRouterDeps, 'withModel'>, task: Task, held: string | undefined): Promise<TaskMessage> {
  const sent = deps.withModel ? await deps.withModel(task) : task;
  return held !== undefined && held === task.configSha256 ? { ...sent, config: undefined } : sent;
}

/**
 * The node's next task after its update was accepted, or undefined (none within the wait, the
 * node hung up). The update is stored whatever happens here: a failed lookup is logged and the
 * receipt goes without a task (the node then polls GET /v1/tasks/next, as it always could).
 * The wait ends when the response closes: the request's own 'close' came when its body was read.
 */
async function nextTaskAfterUpdate(deps: RoundRouterDeps, node: AuthenticatedNode, waitSeconds: number, held: string | undefined, res: Response, mayskip: boolean): Promise<TaskMessage | undefined> {
  const abort = new AbortController();
  const hungUp = () => abort.abort();
  res.once('close', hungUp);
  try {
    const task = await deps.rounds.nextTask(node, waitSeconds, abort.signal, mayskip ? 'update' : undefined);
    return task && (await taskMessage(deps, task, held));
  } catch (err) {
    deps.log?.error({ err, nodeId: node.id, studyId: node.studyId }, 'next task after an accepted update failed; the receipt goes without it');
    return undefined;
  } finally {
    res.off('close', hungUp);
  }
}
