import type { Task } from '../../protocols/messages.ts';
import { toCheckpoint } from '../audit/audit-log.ts';
import { FitInstructions } from '../../protocols/strategies/strategy.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { findTaskView, type TaskView } from './round-repository.ts';
import { EVALUATION_STATES, TRAINING_STATES, type RoundDeps } from './round-state.ts';

/** A node's next task (if any), and whether its study still runs (a long-poll stops waiting when not). */
export interface TaskLookup {
  task?: Task;
  running: boolean;
}

/**
 * The task waiting for this node, if any: fit in the fit phase, evaluate in the evaluation phase.
 * One query (findTaskView); the study's configuration and its published models come from the
 * study service's cache (they never change once written).
 */
export async function findTask(deps: Pick<RoundDeps, 'db' | 'studies'>, node: AuthenticatedNode): Promise<TaskLookup> {
  const view = await findTaskView(deps.db, node.studyId, node.id);
  if (!view) return { running: false };
  return { task: await taskFrom(deps, node, view), running: view.study_state === 'running' };
}

async function taskFrom(deps: Pick<RoundDeps, 'studies'>, node: AuthenticatedNode, view: TaskView): Promise<Task | undefined> {
  const { studies } = deps;
  if (view.round === null || view.phase === null || !view.participants?.includes(node.id)) return undefined;
  // The state now, not the one at authentication: a node that reported it cannot train gets no
  // fit task (it would only skip it and ask again), until it reports `ready` again.
  const current = view.node_state;
  if (!current || !(view.phase === 'fit' ? TRAINING_STATES : EVALUATION_STATES).has(current)) return undefined;
  const config = await studies.getConfig(node.studyId);
  const witness = view.checkpoint ? { auditCheckpoint: toCheckpoint(view.checkpoint) } : {};
  if (view.phase === 'fit') {
    if (view.submitted) return undefined;
    const model = await studies.getModel(node.studyId, view.round - 1);
    const mine = (view.instructions as Record<string, unknown> | null)?.[node.id];
    const instructions = mine ? FitInstructions.parse(mine) : undefined;
    return { kind: 'fit', studyId: node.studyId, round: view.round, modelVersion: view.round - 1, modelSha256: model.sha256, deadline: new Date(view.fit_deadline!).toISOString(), config, ...(instructions ? { instructions } : {}), ...witness };
  }
  if (!view.submitted || view.evaluated) return undefined;
  const model = await studies.getModel(node.studyId, view.round);
  return { kind: 'evaluate', studyId: node.studyId, round: view.round, modelVersion: view.round, modelSha256: model.sha256, deadline: new Date(view.evaluation_deadline!).toISOString(), config, ...witness };
}
