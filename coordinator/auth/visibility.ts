import type { StudyStatus } from '../../protocols/messages.ts';
import { ForbiddenError, NotFoundError } from '../errors.ts';
import { requireRole, type Principal, type Role } from './principal.ts';
import { perNodeNormsWithheld, withoutNodeNorms } from '../privacy/readers.ts';

/**
 * What each role may see of a study, a round and its submissions. Who was sampled for a round is
 * secret from everyone the privacy guarantee is against (subsampling amplification assumes it), so
 * a node sees only itself there and a regional team (analyst) only its own region's nodes.
 *
 * @example
 *   res.json(visibleStatus(principal, await studies.getStatus(id)));
 */

/** A round's mechanism record with its list of nodes that could not train cut down to `own`. */
export function onlyFailuresOf(mechanism: Record<string, unknown> | null, own: Set<string>) {
  const failures = mechanism?.failures;
  if (!mechanism || !Array.isArray(failures)) return mechanism;
  return { ...mechanism, failures: failures.filter((f: { nodeId?: string }) => own.has(String(f.nodeId))) };
}

/**
 * Under node sampling (q < 1) the client-level epsilon is amplified only against readers who
 * cannot tell who was sampled. A round's participant count, row total and mean loss are exact and
 * differ by who took part (q = 0.5, 8 nodes: the row total named the two US nodes that trained),
 * so analysts and nodes get them as null with `hidden` saying why (privacy/readers.ts lists what
 * each reader still sees; admins and auditors are not claimed the amplified bound).
 */
export const SAMPLING_HIDDEN_REASON = 'hidden under node sampling (q < 1): exact participant counts, row totals and losses would reveal who was sampled';

/** The study's node sampling rate, from its config or a round's mechanism record (which holds the config's privacy). */
export function nodeSamplingRate(privacy: { central?: { nodeSamplingRate?: number } } | null | undefined): number {
  return privacy?.central?.nodeSamplingRate ?? 1;
}

/** A study's status as `p` may see it: an analyst sees the global metrics and its own region's nodes, not the others'. */
export function visibleStatus<S extends Pick<StudyStatus, 'nodes' | 'rounds' | 'config'>>(p: Principal, status: S): S {
  if (p.role !== 'analyst') return status;
  const nodes = status.nodes.filter((n) => n.region === p.region);
  const own = new Set(nodes.map((n) => n.id));
  const sampled = nodeSamplingRate(status.config.privacy) < 1;
  const hide = (r: S['rounds'][number]) => (sampled ? { ...r, updatesReceived: null, numExamples: null, meanLoss: null, hidden: { fields: ['updatesReceived', 'numExamples', 'meanLoss'], reason: SAMPLING_HIDDEN_REASON } } : r);
  return { ...status, nodes, rounds: status.rounds.map((r) => hide({ ...r, participants: r.participants.filter((id) => own.has(id)) })) } as S;
}

/** A round's mechanism without its count of contributing nodes, for readers who must not learn the sample. */
function withoutNodeCount(mechanism: Record<string, unknown> | null): Record<string, unknown> | null {
  if (!mechanism || nodeSamplingRate(mechanism.privacy as never) >= 1) return mechanism;
  return { ...mechanism, nodes: null, hidden: { fields: ['nodes'], reason: SAMPLING_HIDDEN_REASON } };
}

/** The parts of a round record the views filter. */
export interface RoundView {
  studyId: string;
  round: number;
  participants: string[];
  mechanism: Record<string, unknown> | null;
  updates: Array<{ nodeId: string; region: string }>;
}

/**
 * A round as `p` may see it. A node must have taken part (403 otherwise) and sees only itself;
 * an analyst sees its region's updates and nodes (`regionNodeIds`: the study's nodes in its region).
 */
export function visibleRound<R extends RoundView>(p: Principal, shown: R, regionNodeIds?: Set<string>): R {
  // Under central DP per-node norms and clipped bits are the operator's only (privacy/readers.ts).
  const detail = p.role !== 'admin' && perNodeNormsWithheld(shown.mechanism?.privacy as never) ? { ...shown, updates: shown.updates.map(withoutNodeNorms) } : shown;
  if (p.role === 'node') {
    if (p.node.studyId !== detail.studyId || !detail.participants.includes(p.id)) throw new ForbiddenError(`node ${p.id} did not take part in round ${detail.round} of study ${detail.studyId}`);
    return { ...detail, updates: detail.updates.filter((u) => u.nodeId === p.id), participants: [p.id], mechanism: withoutNodeCount(onlyFailuresOf(detail.mechanism, new Set([p.id]))) };
  }
  if (p.role === 'analyst') {
    const own = regionNodeIds ?? new Set<string>();
    return { ...detail, updates: detail.updates.filter((u) => u.region === p.region), participants: detail.participants.filter((id) => own.has(id)), mechanism: withoutNodeCount(onlyFailuresOf(detail.mechanism, own)) };
  }
  return detail;
}

/** One node's submission, if `p` may read it: a node its own only, an analyst its region's only; under central DP its norms for the operator only. */
export function visibleUpdate<U extends { region: string }>(p: Principal, nodeId: string, update: U | undefined, where: { studyId: string; round: number; mechanism?: Record<string, unknown> | null }): U {
  if (p.role === 'node' && p.id !== nodeId) throw new ForbiddenError(`node ${p.id} may not read node ${nodeId}'s submission`);
  if (p.role === 'analyst' && update && update.region !== p.region) throw new ForbiddenError(`analysts of region ${p.region} may not read another region's submission`);
  if (!update) throw new NotFoundError(`node ${nodeId} submitted nothing in round ${where.round}`);
  return p.role !== 'admin' && perNodeNormsWithheld(where.mechanism?.privacy as never) ? withoutNodeNorms(update) : update;
}

/** Regional views: the roles given, and an analyst only for its own region. */
export function authorizeRegion(p: Principal, region: string, ...roles: Role[]) {
  requireRole(p, ...roles);
  if (p.role === 'analyst' && p.region !== region) throw new ForbiddenError(`analyst token ${p.id} is for region ${p.region}, not ${region}`);
}

/**
 * Weights: admin, the study's own nodes, and analysts of a region that has a node in the study
 * (a regional team reads the global models its region helped train). Auditors never see weights.
 */
export async function authorizeModelRead(p: Principal, studyId: string, regionHasNode: (region: string) => Promise<boolean>) {
  requireRole(p, 'admin', 'analyst', 'node');
  if (p.role === 'analyst' && !(await regionHasNode(p.region))) throw new ForbiddenError(`region ${p.region} has no node in study ${studyId}: analyst token ${p.id} may not read its models`);
  if (p.role === 'node' && p.node.studyId !== studyId) throw new ForbiddenError(`node ${p.id} is not enrolled in study ${studyId}`);
}
