import type { StudyConfig } from '../../protocols/messages.ts';
import type { FitAggregation, ServerState, Strategy } from '../../protocols/strategies/strategy.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeServerState } from '../../protocols/strategies/server-state.ts';
import { DP_CLIP_NORM } from '../../protocols/privacy/client-level-dp.ts';
import type { Db } from '../db/database.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import type { StudyService } from '../studies/study-service.ts';
import { keptUpdates, nodeStates, previousRound, type RoundRow } from './round-repository.ts';

/**
 * What the pieces of the round state machine share (opening, intake, closing): the services they
 * call, the node states that allow work, and how a round's aggregation is rebuilt from its row.
 */
export interface RoundDeps {
  db: Db;
  studies: StudyService;
  strategyFor: (config: StudyConfig) => Strategy;
  keyring: CoordinatorKeyring;
  now: () => Date;
}

/**
 * Node states in which a participant can still train, and still evaluate what it trained. Every
 * other state is one the round does not wait for: data-error, policy-refused, privacy-ceiling,
 * model-rejected (the node refused the global model's weights), training-failed (its local
 * training diverged), withdrawn, revoked.
 */
export const TRAINING_STATES: ReadonlySet<string> = new Set(['ready']);
// A node past its privacy ceiling or refusing by policy no longer trains but still holds its
// data; evaluating a published model spends nothing of its record-level budget.
export const EVALUATION_STATES: ReadonlySet<string> = new Set(['ready', 'privacy-ceiling', 'policy-refused']);

/** Of these nodes, those whose state rules out the work (with their state), in id order. */
export async function cannotTrain(tx: Db, nodeIds: string[], allowed: ReadonlySet<string>): Promise<Array<{ nodeId: string; state: string }>> {
  if (nodeIds.length === 0) return [];
  const rows = await nodeStates(tx, nodeIds);
  return rows.filter((r) => !allowed.has(r.state)).map((r) => ({ nodeId: r.id, state: r.state }));
}

/** The public facts of a round a strategy may use: its number and its denominator. */
export function roundContext(row: Pick<RoundRow, 'round' | 'participants' | 'mechanism'>) {
  const expected = (row.mechanism as { expectedParticipants?: number } | null)?.expectedParticipants;
  return { round: row.round, participants: Math.max(1, expected ?? row.participants.length) };
}

/** The server state a round starts from: what the round before handed on, or the initial one. */
export async function startingServerState(tx: Db, studyId: string, round: number, strategy: Strategy, global: WeightSet): Promise<ServerState> {
  const previous = await previousRound(tx, studyId, round);
  const bytes = previous?.next_server_state ?? previous?.server_state;
  return bytes ? decodeServerState(new Uint8Array(bytes)) : strategy.initialServerState(global);
}

/**
 * The round's aggregation as persisted: its server state, its running state and (for strategies
 * that need every update) the updates kept so far, in arrival order. A restart resumes exactly.
 */
export async function aggregationOf(tx: Db, strategy: Strategy, global: WeightSet, row: RoundRow): Promise<FitAggregation> {
  const serverState = row.server_state ? decodeServerState(new Uint8Array(row.server_state)) : strategy.initialServerState(global);
  if (!row.accumulator) return strategy.aggregateFit(global, serverState, roundContext(row));
  const kept = strategy.input === 'every-update' ? await keptUpdates(tx, row.study_id, row.round) : [];
  return strategy.aggregateFit(global, serverState, roundContext(row), { state: new Uint8Array(row.accumulator), kept });
}

/** The clip norm in force under central DP, from the server state (the DP wrapper keeps it there). */
export function clipNormIn(state: ServerState): number | null {
  return state.scalars[DP_CLIP_NORM] ?? null;
}
