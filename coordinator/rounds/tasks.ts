import type { Task } from '../../protocols/messages.ts';
import { toCheckpoint } from '../audit/audit-log.ts';
import { latestCheckpoint } from '../audit/repository.ts';
import { FitInstructions } from '../../protocols/strategies/strategy.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { findLatestOpenRound, findNodeState, hasEvaluation, hasUpdate } from './round-repository.ts';
import { EVALUATION_STATES, TRAINING_STATES, type RoundDeps } from './round-state.ts';

/** The task waiting for this node, if any: fit in the fit phase, evaluate in the evaluation phase. */
export async function findTask(deps: Pick<RoundDeps, 'db' | 'studies'>, node: AuthenticatedNode): Promise<Task | undefined> {
  const { db, studies } = deps;
  const row = await findLatestOpenRound(db, node.studyId);
  if (!row || !row.participants.includes(node.id)) return undefined;
  // The state now, not the one at authentication: a node that reported it cannot train gets no
  // fit task (it would only skip it and ask again), until it reports `ready` again.
  const current = await findNodeState(db, node.id);
  if (!current || !(row.phase === 'fit' ? TRAINING_STATES : EVALUATION_STATES).has(current)) return undefined;
  const config = await studies.getConfig(node.studyId);
  if (row.phase === 'fit') {
    const done = await hasUpdate(db, node.studyId, row.round, node.id);
    if (done) return undefined;
    const model = await studies.getModel(node.studyId, row.round - 1);
    const mine = (row.instructions as Record<string, unknown> | null)?.[node.id];
    const instructions = mine ? FitInstructions.parse(mine) : undefined;
    return { kind: 'fit', studyId: node.studyId, round: row.round, modelVersion: row.round - 1, modelSha256: model.sha256, deadline: new Date(row.fit_deadline).toISOString(), config, ...(instructions ? { instructions } : {}), ...(await witnessed(db)) };
  }
  const [submitted, evaluated] = await Promise.all([hasUpdate(db, node.studyId, row.round, node.id), hasEvaluation(db, node.studyId, row.round, node.id)]);
  if (!submitted || evaluated) return undefined;
  const model = await studies.getModel(node.studyId, row.round);
  return { kind: 'evaluate', studyId: node.studyId, round: row.round, modelVersion: row.round, modelSha256: model.sha256, deadline: new Date(row.evaluation_deadline!).toISOString(), config, ...(await witnessed(db)) };
}

/** The latest signed audit checkpoint, handed to every node with its task: each keeps a copy as a witness. */
async function witnessed(db: RoundDeps['db']): Promise<Pick<Task, 'auditCheckpoint'>> {
  const row = await latestCheckpoint(db);
  return row ? { auditCheckpoint: toCheckpoint(row) } : {};
}
