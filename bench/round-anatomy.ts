/**
 * Where a demo round goes (issue 13), from the log lines the demo's processes already write: the
 * coordinator's "round started", "update accepted" and "round aggregated", and each node's "sent
 * model update". With FEDMARK_REPORT_RESOURCES=1 (the demo sets it) every line also carries the
 * process's `cpuMs` so far, so each phase gets the CPU spent in it too.
 *
 * A round's cycle runs from its opening to the next round's opening. Under 'with-next-fit' the
 * evaluation of round r's model rides on round r+1's updates, so this cycle is the whole
 * steady-state cost of a round. Its four phases:
 *
 *   opening -> first update accepted   the fit tasks go out on the held answers (the opening is
 *                                      logged just before), then the nodes evaluate, train, seal
 *                                      and send (on a shared machine, all at once)
 *   first -> last update accepted      the coordinator's intakes, one after another
 *   last update -> round aggregated    the previous round's evaluation close ("round completed"),
 *                                      FedAvg, the model's signature, the audit entries
 *   aggregated -> next round opens     the next round's opening transaction (its participants,
 *                                      the privacy charge)
 *
 * A node logs "sent model update" for round r when the answer to it arrives, which carries round
 * r+1's task: so a node's CPU between its lines for rounds r-1 and r is its CPU over round r's
 * cycle. (An answer that brings no task, a long-poll that ran out, is logged before round r+1
 * opens: that node's CPU then straddles two cycles.)
 */

export type LogLine = Record<string, unknown>;

export interface RoundCycle {
  round: number;
  /** Opening of this round -> opening of the next. */
  seconds: number;
  firstUpdateSeconds: number;
  intakeSeconds: number;
  closeSeconds: number;
  openSeconds: number;
  /** Updates accepted in this round. */
  updates: number;
  /** The coordinator's CPU over the cycle (null when its lines carry no `cpuMs`). */
  coordinatorCpuMs: number | null;
  /** All nodes' CPU over the cycle, summed (null unless every node logged both lines with `cpuMs`). */
  nodesCpuMs: number | null;
}

export interface RoundAnatomy {
  /** Cycles of rounds `fromRound`.. whose next round opened (the last round has no cycle). */
  perRound: RoundCycle[];
  /**
   * Median of each figure over those cycles (null with none); the CPU figures over the cycles
   * that have them (a node that sat a round out leaves that cycle's sum unknown).
   */
  median: Omit<RoundCycle, 'round' | 'updates'> | null;
}

type CoordinatorMarks = Record<'started' | 'accepted' | 'aggregated', Map<number, LogLine[]>>;

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function linesOf(lines: LogLine[], msg: string): Map<number, LogLine[]> {
  const byRound = new Map<number, LogLine[]>();
  for (const l of lines) {
    const round = num(l.round);
    if (l.msg !== msg || round === null || num(l.time) === null) continue;
    const kept = byRound.get(round);
    if (kept) kept.push(l);
    else byRound.set(round, [l]);
  }
  return byRound;
}

function cpuBetween(from: LogLine | undefined, to: LogLine | undefined): number | null {
  const a = num(from?.cpuMs);
  const b = num(to?.cpuMs);
  return a === null || b === null ? null : b - a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function medianOfKnown(xs: Array<number | null>): number | null {
  const known = xs.filter((x): x is number => x !== null);
  return known.length === 0 ? null : median(known);
}

/** One cycle, or null when one of its marks is missing (a failed round, a level that hid the lines). */
function cycleOf(round: number, coordinator: CoordinatorMarks, nodes: Array<Map<number, LogLine[]>>): RoundCycle | null {
  const opened = coordinator.started.get(round)?.[0];
  const next = coordinator.started.get(round + 1)?.[0];
  const accepted = coordinator.accepted.get(round) ?? [];
  const aggregated = coordinator.aggregated.get(round)?.[0];
  if (!opened || !next || !aggregated || accepted.length === 0) return null;
  const t = (l: LogLine) => l.time as number;
  const times = accepted.map(t);
  const [first, last] = [Math.min(...times), Math.max(...times)];
  const nodeCpu = nodes.map((n) => cpuBetween(n.get(round - 1)?.[0], n.get(round)?.[0]));
  return {
    round,
    seconds: (t(next) - t(opened)) / 1000,
    firstUpdateSeconds: (first - t(opened)) / 1000,
    intakeSeconds: (last - first) / 1000,
    closeSeconds: (t(aggregated) - last) / 1000,
    openSeconds: (t(next) - t(aggregated)) / 1000,
    updates: accepted.length,
    coordinatorCpuMs: cpuBetween(opened, next),
    nodesCpuMs: nodes.length > 0 && nodeCpu.every((c) => c !== null) ? (nodeCpu as number[]).reduce((a, b) => a + b, 0) : null,
  };
}

/** The cycles of rounds `fromRound`.. (default 2: round 1 carries the start-up) and their medians. */
export function roundAnatomy(coordinatorLines: LogLine[], nodeLines: LogLine[][], fromRound = 2): RoundAnatomy {
  const coordinator: CoordinatorMarks = {
    started: linesOf(coordinatorLines, 'round started'),
    accepted: linesOf(coordinatorLines, 'update accepted'),
    aggregated: linesOf(coordinatorLines, 'round aggregated'),
  };
  const nodes = nodeLines.map((lines) => linesOf(lines, 'sent model update'));
  const rounds = [...coordinator.started.keys()].filter((r) => r >= fromRound).sort((a, b) => a - b);
  const perRound = rounds.map((r) => cycleOf(r, coordinator, nodes)).filter((c): c is RoundCycle => c !== null);
  if (perRound.length === 0) return { perRound, median: null };
  const m = (k: 'seconds' | 'firstUpdateSeconds' | 'intakeSeconds' | 'closeSeconds' | 'openSeconds') => median(perRound.map((c) => c[k]));
  return {
    perRound,
    median: {
      seconds: m('seconds'),
      firstUpdateSeconds: m('firstUpdateSeconds'),
      intakeSeconds: m('intakeSeconds'),
      closeSeconds: m('closeSeconds'),
      openSeconds: m('openSeconds'),
      coordinatorCpuMs: medianOfKnown(perRound.map((c) => c.coordinatorCpuMs)),
      nodesCpuMs: medianOfKnown(perRound.map((c) => c.nodesCpuMs)),
    },
  };
}
