import { AggregationError } from '../../protocols/aggregation/fedavg.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { FitAggregation, Strategy } from '../../protocols/strategies/strategy.ts';
import { decodeServerState } from '../../protocols/strategies/server-state.ts';
import { specsOf, type WeightSet } from '../../protocols/tensors.ts';
import { decodeWeightsView, encodeWeights } from '../../protocols/weights-codec.ts';
import type { Db } from '../db/database.ts';
import { loadRoundState, type RoundRow } from './round-repository.ts';
import { roundContext } from './round-state.ts';

/**
 * The running aggregate of each open round, in the coordinator's memory (issue 13: the database
 * is written O(update) per update, not O(accumulator)). Each accepted update is stored once, in
 * the form that was folded and with the weight it was folded with (`round_kept_updates`,
 * migration 0020); the round row keeps only the state the round opened with (noised under
 * central DP), never a running sum. The cache is an optimization only: before every use it is
 * checked against the database (same number of stored updates, same nodes in the same order),
 * inside the transaction that holds the round row's lock (FOR UPDATE orders the arrivals), and
 * rebuilt from the stored updates on any mismatch: a restart, another coordinator instance on the
 * same database, a transaction that rolled back after folding.
 */
export interface CachedFold {
  aggregation: FitAggregation;
  /** How many stored updates `aggregation` has folded, and whose, in seq order. */
  count: number;
  nodeIds: string[];
}

// One cache per database handle: one per coordinator instance, gone with it.
const caches = new WeakMap<object, Map<string, CachedFold>>();

/** @internal the cache of one coordinator (tests make it stale on purpose). */
export function foldCacheOf(db: object): Map<string, CachedFold> {
  let cache = caches.get(db);
  if (!cache) caches.set(db, (cache = new Map()));
  return cache;
}

const keyOf = (studyId: string, round: number) => `${studyId}\u0000${round}`;

/** The fold stops being trusted: the next use rebuilds it from the database. */
export function forgetFold(db: object, studyId: string, round: number): void {
  foldCacheOf(db).delete(keyOf(studyId, round));
}

/** The node ids of the round's stored updates, in the order they were folded. */
async function storedNodeIds(tx: Db, studyId: string, round: number): Promise<string[]> {
  const rows = await tx.selectFrom('round_kept_updates').select('node_id').where('study_id', '=', studyId).where('round', '=', round).orderBy('seq').execute();
  return rows.map((r) => r.node_id);
}

function inStep(cached: CachedFold, stored: string[]): boolean {
  return cached.count === stored.length && cached.nodeIds.length === stored.length && stored.every((id, i) => cached.nodeIds[i] === id);
}

/**
 * Under central DP the round keeps persisting its noised running state in `rounds.accumulator`
 * after every update and stores no per-node update (README "Central (client-level) DP": only the
 * noised aggregate is stored), so its writes stay O(model); every other study stores each update
 * once and folds in memory.
 */
export function persistsRunningState(config: StudyConfig): boolean {
  return Boolean(config.privacy?.central);
}

/**
 * The round row as the fold needs it: the state blobs may be left out (undefined, not null): they
 * are then read only when the fold is (re)built from them (intake.ts reads them with the lock only
 * when every accept needs them: central DP, every-update strategies).
 */
export type FoldRound = Pick<RoundRow, 'study_id' | 'round' | 'participants' | 'mechanism'> & Partial<Pick<RoundRow, 'server_state' | 'accumulator'>>;

/**
 * The round's fold, ready to accept the next update or to finish: the cached one when it matches
 * what the database stored, else rebuilt. The caller's transaction must hold the round row's lock.
 * With `persisted` (central DP) it is always resumed from the round row, never cached. `stored`:
 * the nodes of the stored updates in seq order when the caller already read them under the lock
 * (intake.ts, in the statement that reads the rest of what an update is checked against).
 */
export async function roundFold(tx: Db, db: object, strategy: Strategy, global: WeightSet, row: FoldRound, persisted = false, purpose: 'accept' | 'finish' = 'accept', stored?: string[]): Promise<CachedFold> {
  if (persisted) return rebuildFold(tx, strategy, global, row, []);
  stored ??= await storedNodeIds(tx, row.study_id, row.round);
  if (strategy.input === 'every-update') {
    // Their fold is only the list of updates, read at finish: accepting one needs an empty
    // aggregation and no earlier update, so nothing is cached (no k x model held between updates).
    if (purpose === 'finish') return rebuildFold(tx, strategy, global, row, stored);
    return { aggregation: await initialAggregation(tx, strategy, global, row), count: stored.length, nodeIds: [...stored] };
  }
  const cache = foldCacheOf(db);
  const key = keyOf(row.study_id, row.round);
  const cached = cache.get(key);
  if (cached && inStep(cached, stored)) return cached;
  const rebuilt = await rebuildFold(tx, strategy, global, row, stored);
  // A study has one open round: an entry of an earlier round (failed, stopped) is dead.
  for (const k of cache.keys()) if (k.startsWith(`${row.study_id}\u0000`)) cache.delete(k);
  cache.set(key, rebuilt);
  return rebuilt;
}

/**
 * The state the round opened with, then every stored update folded again in seq order with its
 * stored weight: the same inputs in the same order, so the same float64 sums bit for bit.
 * One stored update in memory at a time (O(model), not O(updates x model)).
 */
export async function rebuildFold(tx: Db, strategy: Strategy, global: WeightSet, row: FoldRound, nodeIds: string[]): Promise<CachedFold> {
  const aggregation = await initialAggregation(tx, strategy, global, row);
  const specs = specsOf(global);
  for (const nodeId of nodeIds) {
    const r = await tx.selectFrom('round_kept_updates').select(['weights', 'weight']).where('study_id', '=', row.study_id).where('round', '=', row.round).where('node_id', '=', nodeId).executeTakeFirstOrThrow();
    aggregation.accept(decodeWeightsView(new Uint8Array(r.weights), { expected: specs }), r.weight ?? 1);
  }
  // Every accepted update must be in the rebuilt fold: a stored row lost (a damaged table) fails the
  // round's aggregation (round-service closeFitOrFail) rather than aggregating fewer updates.
  const { accepted } = await tx.selectFrom('updates').select((eb) => eb.fn.countAll<string>().as('accepted')).where('study_id', '=', row.study_id).where('round', '=', row.round).executeTakeFirstOrThrow();
  if (aggregation.count !== Number(accepted)) {
    throw new AggregationError(`round ${row.round}: ${accepted} updates were accepted but the stored (kept) updates rebuild ${aggregation.count} of them; kept updates are missing`);
  }
  return { aggregation, count: nodeIds.length, nodeIds: [...nodeIds] };
}

/**
 * The aggregation as the round opened (open-round.ts persists it; under central DP it already
 * holds the round's noise). Every-update strategies start empty: their state is only a count,
 * and all their inputs are the stored updates. A row whose `accumulator` still holds folds written
 * before migration 0020 resumes from them, and only later updates are stored: still exact.
 */
async function initialAggregation(tx: Db, strategy: Strategy, global: WeightSet, head: FoldRound): Promise<FitAggregation> {
  const row = head.server_state === undefined || head.accumulator === undefined ? { ...head, ...(await loadRoundState(tx, head.study_id, head.round)) } : head;
  const serverState = row.server_state ? decodeServerState(new Uint8Array(row.server_state)) : strategy.initialServerState(global);
  if (strategy.input === 'every-update' || !row.accumulator) return strategy.aggregateFit(global, serverState, roundContext(row));
  return strategy.aggregateFit(global, serverState, roundContext(row), { state: new Uint8Array(row.accumulator), kept: [] });
}

/**
 * What to store of an update the fold just accepted, once, as it was folded: the strategy's kept
 * frame (every-update strategies), else the received frame itself when the study's norm bound left
 * it unchanged (no re-encoding), else the bounded weights in float64 (claims.ts boundUpdate
 * computes them in float64). The caller stores it (round-repository.ts recordUpdate) at seq
 * `fold.count`, then counts it with foldStored.
 */
export function foldedFrame(input: { kept: Uint8Array | undefined; body: Uint8Array; received: WeightSet; folded: WeightSet }): Uint8Array {
  return input.kept ?? (input.folded === input.received ? input.body : encodeWeights(input.folded, 'float64'));
}

/** The cache counts an update stored at seq `fold.count`. */
export function foldStored(fold: CachedFold, nodeId: string): void {
  fold.count++;
  fold.nodeIds.push(nodeId);
}
