import type { Selectable } from 'kysely';
import type { Db } from '../db/database.ts';
import type { PrivacyLedgerTable } from '../db/schema.ts';
import { NotFoundError } from '../errors.ts';
import { StudyConfig, NodePrivacySpend } from '../../protocols/messages.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { findStudyPrivacyRow, listLedger, listReportNodes, listRoundMechanisms, listUpdateMeta } from './repository.ts';
import { readerViews, type ReaderRole, type StudyEpsilons } from './readers.ts';

/** Epsilon as JSON can carry it: an unbounded loss (noise multiplier 0) is null. */
const finiteOrNull = (x: number) => (Number.isFinite(x) ? x : null);

interface NodeRow {
  id: string;
  name: string;
  region: string;
  enrolled_at: Date;
}
type LedgerRow = Pick<Selectable<PrivacyLedgerTable>, 'round' | 'accountant' | 'delta' | 'sampling_rate' | 'noise_multiplier' | 'epsilon_round' | 'epsilon_total'>;
interface RoundRow {
  round: number;
  phase: string;
  participants: string[];
  started_at: Date;
}

/**
 * Client-level privacy of one node's data (central DP, add/remove-one node adjacency). Two
 * figures, for two observers:
 *  - `epsilon`: against anyone who does not know which rounds sampled the node (the study's
 *    guarantee). Every round charged since the node enrolled could have touched its data, so the
 *    node's loss is the accountant's epsilon for those rounds at the sampling rate q; rounds
 *    before it enrolled cannot have (composing over a superset of the rounds that actually had it
 *    in their candidate pool only overstates, never understates).
 *  - `epsilonIfParticipationKnown`: against someone who knows which rounds it sent an update in
 *    (the operator, the auditor): then subsampling amplifies nothing, each such round is a plain
 *    Gaussian mechanism of multiplier z (q = 1), and rounds without its update released nothing
 *    about it. With q = 1 and a node in every round the two agree.
 */
const ENROLLMENT_CLOCK_MARGIN_MS = 60_000;

function clientLevelForNode(node: NodeRow, ledger: LedgerRow[], rounds: RoundRow[], submitted: Set<number>, epsilonOf: (q: number, z: number, steps: number, delta: number, accountant: 'rdp' | 'pld') => number) {
  if (ledger.length === 0) return null;
  const { accountant, delta, sampling_rate: q, noise_multiplier: z } = ledger[0];
  const startedAt = new Map(rounds.map((r) => [r.round, new Date(r.started_at).getTime()]));
  const enrolledAt = new Date(node.enrolled_at).getTime();
  // enrolled_at comes from the database's clock, started_at from the coordinator's: a round the
  // node was sampled for always counts, and so does any round that started within a generous
  // clock-skew margin before enrollment (counting one round too many overstates epsilon, which is
  // safe; one too few would understate it).
  const sampled = new Set(rounds.filter((r) => r.participants.includes(node.id)).map((r) => r.round));
  const eligible = ledger.filter((l) => sampled.has(l.round) || (startedAt.get(l.round) ?? Number.POSITIVE_INFINITY) >= enrolledAt - ENROLLMENT_CLOCK_MARGIN_MS);
  const byRound = new Map(ledger.map((l) => [l.round, l]));
  const tookPart = rounds
    .filter((r) => r.participants.includes(node.id))
    .map((r) => ({ round: r.round, phase: r.phase, updateSent: submitted.has(r.round), epsilonRound: finiteOrNull(byRound.get(r.round)?.epsilon_round ?? 0) }));
  const sent = tookPart.filter((r) => r.updateSent).length;
  const acc = accountant as 'rdp' | 'pld';
  return {
    accountant: acc,
    delta,
    samplingRate: q,
    noiseMultiplier: z,
    roundsCharged: eligible.length,
    rounds: tookPart,
    epsilon: finiteOrNull(eligible.length ? epsilonOf(q, z, eligible.length, delta, acc) : 0),
    epsilonIfParticipationKnown: finiteOrNull(sent ? epsilonOf(1, z, sent, delta, acc) : 0),
  };
}

/**
 * A study's privacy report: client-level epsilon charged per round and in total (from the ledger),
 * and for each node the rounds it took part in with the client-level epsilon they cost, and its
 * record-level DP-SGD spending as the node reported it with its updates.
 */
export async function privacyReport(db: Db, studyId: string, onlyNode?: string) {
  const study = await findStudyPrivacyRow(db, studyId);
  if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
  const config = StudyConfig.parse(study.config);
  const privacy = config.privacy;
  const ledger = await listLedger(db, studyId);
  const rounds = await listRoundMechanisms(db, studyId);
  const mechanismByRound = new Map(rounds.map((r) => [r.round, r]));
  const nodes = await listReportNodes(db, studyId, onlyNode);
  if (onlyNode !== undefined && nodes.length === 0) throw new NotFoundError(`study ${studyId} has no node ${onlyNode}`);
  const updates = await listUpdateMeta(db, studyId, onlyNode);
  // Nodes share (q, z, delta): one accountant query per distinct number of steps.
  const cache = new Map<string, number>();
  const epsilonOf = (q: number, z: number, steps: number, delta: number, accountant: 'rdp' | 'pld') => {
    const key = `${q}/${z}/${steps}/${delta}/${accountant}`;
    let e = cache.get(key);
    if (e === undefined) {
      e = z === 0 ? Number.POSITIVE_INFINITY : computeEpsilon({ q, sigma: z, steps, delta }, accountant);
      cache.set(key, e);
    }
    return e;
  };
  const nodeReports = nodes.map((n) => nodeEntry(n, updates, ledger, rounds, epsilonOf));
  const z = ledger[0]?.noise_multiplier;
  const epsilons: StudyEpsilons = {
    amplified: ledger.length ? finiteOrNull(ledger[ledger.length - 1].epsilon_total) : null,
    // The same rounds with q = 1: what holds against a reader who knows who was sampled.
    participationKnown: ledger.length ? finiteOrNull(epsilonOf(1, z, ledger.length, ledger[0].delta, ledger[0].accountant as 'rdp' | 'pld')) : null,
    dpSgdMax: nodeReports.some((n) => n.dpSgd) ? Math.max(...nodeReports.map((n) => n.dpSgd?.epsilonTotal ?? 0)) : null,
  };
  return {
    studyId,
    state: study.state,
    stopReason: study.stop_reason,
    /** false: the study runs no differential privacy at all; no epsilon means anything for it. */
    dp: Boolean(privacy?.central || privacy?.dpSgd),
    accountant: privacy?.accountant ?? null,
    delta: privacy?.delta ?? null,
    budgetEpsilon: privacy?.budgetEpsilon ?? null,
    central: privacy?.central ?? null,
    dpSgd: privacy?.dpSgd ?? null,
    spentEpsilon: ledger.length ? ledger[ledger.length - 1].epsilon_total : 0,
    rounds: ledger.map((l) => ({
      round: l.round,
      phase: mechanismByRound.get(l.round)?.phase ?? null,
      samplingRate: l.sampling_rate,
      noiseMultiplier: l.noise_multiplier,
      clipNorm: mechanismByRound.get(l.round)?.clip_norm ?? null,
      epsilonRound: l.epsilon_round,
      epsilonTotal: l.epsilon_total,
    })),
    nodes: nodeReports,
    epsilons,
    /** Every reader's view and the bound that holds against it (readers.ts); the router keeps the caller's. */
    readers: readerViews(config, epsilons),
  };
}
export type PrivacyReport = Awaited<ReturnType<typeof privacyReport>>;

type EpsilonOf = (q: number, z: number, steps: number, delta: number, accountant: 'rdp' | 'pld') => number;

/** One node's entry: its client-level figures and the DP-SGD spending it reported. */
function nodeEntry(n: NodeRow, updates: Array<{ node_id: string; round: number; meta: unknown }>, ledger: LedgerRow[], rounds: RoundRow[], epsilonOf: EpsilonOf) {
  const own = updates.filter((u) => u.node_id === n.id);
  const spends = own
    .map((u) => ({ round: u.round, spend: NodePrivacySpend.safeParse((u.meta as { dpSgd?: unknown }).dpSgd) }))
    .filter((x) => x.spend.success)
    .map((x) => ({ round: x.round, ...x.spend.data! }));
  return {
    nodeId: n.id,
    name: n.name,
    region: n.region,
    clientLevel: clientLevelForNode(n, ledger, rounds, new Set(own.map((u) => u.round)), epsilonOf),
    dpSgd: spends.length ? { accountant: spends[0].accountant, delta: spends[0].delta, epsilonTotal: spends[spends.length - 1].epsilonTotal, rounds: spends.map((s) => ({ round: s.round, epsilonRound: s.epsilonRound, epsilonTotal: s.epsilonTotal, steps: s.steps })) } : null,
  };
}

/**
 * The report as `reader` may read it: its own bound always (`bound`); admins and auditors get
 * every node and, with `all`, every reader's view; an analyst or a node gets the study's figures
 * and its own view only (a node also its own entry), never other nodes' rounds or spending.
 */
export function reportFor(report: PrivacyReport, reader: ReaderRole, options: { all?: boolean; nodeId?: string } = {}) {
  const own = report.readers.find((r) => r.reader === reader)!;
  const trusted = reader === 'admin' || reader === 'auditor';
  return {
    ...report,
    nodes: trusted ? report.nodes : report.nodes.filter((n) => reader === 'node' && n.nodeId === options.nodeId),
    bound: { reader, clientLevel: own.clientLevel, recordLevel: own.recordLevel },
    readers: trusted && options.all ? report.readers : [own],
  };
}

/** One node's privacy report: the study's accounting context and that node's entry. */
export async function nodePrivacyReport(db: Db, studyId: string, nodeId: string) {
  const { nodes, rounds: _studyRounds, ...study } = await privacyReport(db, studyId, nodeId);
  return { studyId: study.studyId, accountant: study.accountant, delta: study.delta, budgetEpsilon: study.budgetEpsilon, spentEpsilon: study.spentEpsilon, central: study.central, ...nodes[0] };
}
export type NodePrivacyReport = Awaited<ReturnType<typeof nodePrivacyReport>>;
