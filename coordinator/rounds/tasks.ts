import { createHash } from 'node:crypto';
import type { StudyConfig, Task } from '../../protocols/messages.ts';
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
 *
 * With evaluationSchedule 'with-next-fit', round r may still wait for this node's evaluation
 * while round r+1 is in its fit phase: a participant of r+1 then gets ONE fit task carrying
 * `evaluate: { round: r, deadline, withUpdate: true }` (r+1 trains from model r, the model to
 * evaluate: one download, one poll; the evaluation rides on the node's update request, one signed
 * request for both, protocols/update-frame.ts); a node not in r+1 gets a standalone evaluate task for r.
 */
export async function findTask(deps: Pick<RoundDeps, 'db' | 'studies'>, node: AuthenticatedNode): Promise<TaskLookup> {
  const waited = lookedUp.has(node);
  lookedUp.add(node);
  // After a long-poll wait the policy version is read again, in the same statement (policyInForce).
  const jurisdiction = waited ? (node.policyInForce?.jurisdiction ?? undefined) : undefined;
  const view = await findTaskView(deps.db, node.studyId, node.id, jurisdiction);
  if (!view) return { running: false };
  const task = await taskFrom(deps, node, view);
  return { task: task && { ...task, ...policyInForce(node, waited, view.policy_version) }, running: view.study_state === 'running' };
}

/** Nodes (per request) whose task was looked up once already: a later look comes after a long-poll wait. */
const lookedUp = new WeakSet<AuthenticatedNode>();

/**
 * A first look skipped (round-service.ts nextTask after an update): the next look comes after a
 * wait, so it reads the policy version again (policyInForce) as any look after a wait does.
 */
export function skippedLook(node: AuthenticatedNode): void {
  lookedUp.add(node);
}

/**
 * The policy version in force for the node's jurisdiction (Task.policyInForce), so the node
 * re-reads its policy only when it changed (it asked on every fit task: 200 of the demo's 1090
 * signed requests). On the first look it is the version its request's own auth statement read
 * (no query); after a long-poll wait it is read again (with the task view, `latest`), so a profile
 * published meanwhile is in the task, as when the node asked right after receiving it.
 */
function policyInForce(node: AuthenticatedNode, waited: boolean, latest: number | null): Pick<Task, 'policyInForce'> {
  const known = node.policyInForce;
  if (!known) return {};
  if (!waited || known.jurisdiction === null) return { policyInForce: known };
  return { policyInForce: { jurisdiction: known.jurisdiction, version: latest ?? null } };
}

const configHashes = new WeakMap<StudyConfig, string>();

/** Task.configSha256: the study service caches the parsed config (one object per study), so this hashes once. */
export function configSha256(config: StudyConfig): string {
  let hash = configHashes.get(config);
  if (hash === undefined) configHashes.set(config, (hash = createHash('sha256').update(JSON.stringify(config)).digest('hex')));
  return hash;
}

type Owed = { round: number; deadline: string };

async function taskFrom(deps: Pick<RoundDeps, 'studies'>, node: AuthenticatedNode, view: TaskView): Promise<Task | undefined> {
  // The state now, not the one at authentication: a node that reported it cannot train gets no
  // fit task (it would only skip it and ask again), until it reports `ready` again.
  const current = view.node_state;
  if (!current) return undefined;
  const owed: Owed | undefined = view.owed_round !== null && view.owed_deadline !== null && EVALUATION_STATES.has(current) ? { round: view.owed_round, deadline: new Date(view.owed_deadline).toISOString() } : undefined;
  const fitDue = view.round !== null && view.phase === 'fit' && !view.submitted && TRAINING_STATES.has(current) && view.participants?.includes(node.id) === true;
  if (!fitDue && !owed) return undefined;
  const config = await deps.studies.getConfig(node.studyId);
  // What every task carries besides its work: the audit checkpoint to witness, the config's hash.
  const shared = { ...(view.checkpoint ? { auditCheckpoint: toCheckpoint(view.checkpoint) } : {}), configSha256: configSha256(config) };
  // An evaluation owed for an older round than the one before the fit round: that model is not
  // the fit's starting model, so it comes first, on its own.
  if (fitDue && (!owed || owed.round === view.round! - 1)) return fitTask(deps, node, view, config, shared, owed);
  return evaluateTask(deps, node, owed!, config, shared);
}

async function fitTask(deps: Pick<RoundDeps, 'studies'>, node: AuthenticatedNode, view: TaskView, config: StudyConfig, shared: Pick<Task, 'auditCheckpoint' | 'configSha256'>, owed: Owed | undefined): Promise<Task> {
  const round = view.round!;
  const model = await deps.studies.getModel(node.studyId, round - 1);
  const mine = (view.instructions as Record<string, unknown> | null)?.[node.id];
  const instructions = mine ? FitInstructions.parse(mine) : undefined;
  return { kind: 'fit', studyId: node.studyId, round, modelVersion: round - 1, modelSha256: model.sha256, deadline: new Date(view.fit_deadline!).toISOString(), config, ...(instructions ? { instructions } : {}), ...(owed ? { evaluate: { ...owed, withUpdate: true } } : {}), ...shared };
}

async function evaluateTask(deps: Pick<RoundDeps, 'studies'>, node: AuthenticatedNode, owed: Owed, config: StudyConfig, shared: Pick<Task, 'auditCheckpoint' | 'configSha256'>): Promise<Task> {
  const model = await deps.studies.getModel(node.studyId, owed.round);
  return { kind: 'evaluate', studyId: node.studyId, round: owed.round, modelVersion: owed.round, modelSha256: model.sha256, deadline: owed.deadline, config, ...shared };
}
