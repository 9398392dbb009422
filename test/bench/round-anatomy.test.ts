import { describe, expect, it } from 'vitest';
import { roundAnatomy, type LogLine } from '../../bench/round-anatomy.ts';

const started = (round: number, time: number, cpuMs?: number): LogLine => ({ msg: 'round started', round, time, ...(cpuMs === undefined ? {} : { cpuMs }) });
const accepted = (round: number, time: number): LogLine => ({ msg: 'update accepted', round, time });
const aggregated = (round: number, time: number): LogLine => ({ msg: 'round aggregated', round, time });
const sent = (round: number, time: number, cpuMs: number): LogLine => ({ msg: 'sent model update', round, time, cpuMs });

// Round 1 (start-up), round 2 and round 3 complete, round 4 opened last (no cycle), round 3 with
// its updates logged out of order; times in ms since the epoch as pino writes them.
const coordinator: LogLine[] = [
  started(1, 0, 1000), accepted(1, 500), aggregated(1, 600),
  started(2, 1000, 1200), accepted(2, 1050), accepted(2, 1080), { msg: 'round completed', round: 1, time: 1085 }, aggregated(2, 1100),
  started(3, 1110, 1290), accepted(3, 1190), accepted(3, 1150), aggregated(3, 1230),
  started(4, 1250, 1400), accepted(4, 1300),
];
const nodes = [
  [sent(1, 1001, 500), sent(2, 1111, 507), sent(3, 1251, 512)],
  [sent(1, 1002, 600), sent(2, 1112, 611), sent(3, 1252, 620)],
];

describe('round anatomy from the demo logs (issue 13)', () => {
  it('splits each round from its opening to the next opening into four phases, with the CPU of each process', () => {
    const { perRound } = roundAnatomy(coordinator, nodes);
    expect(perRound.map((c) => c.round)).toEqual([2, 3]);
    expect(perRound[0]).toEqual({ round: 2, seconds: 0.11, firstUpdateSeconds: 0.05, intakeSeconds: 0.03, closeSeconds: 0.02, openSeconds: 0.01, updates: 2, coordinatorCpuMs: 90, nodesCpuMs: 7 + 11 });
    // Out-of-order lines: the first and last intake by time, not by position.
    expect(perRound[1]).toMatchObject({ firstUpdateSeconds: 0.04, intakeSeconds: 0.04, closeSeconds: 0.04, openSeconds: 0.02, coordinatorCpuMs: 110, nodesCpuMs: 5 + 9 });
    for (const c of perRound) expect(c.firstUpdateSeconds + c.intakeSeconds + c.closeSeconds + c.openSeconds).toBeCloseTo(c.seconds, 12);
  });

  it('gives the median of every figure over the cycles', () => {
    const { median } = roundAnatomy(coordinator, nodes);
    expect(median).toEqual({ seconds: (0.11 + 0.14) / 2, firstUpdateSeconds: (0.05 + 0.04) / 2, intakeSeconds: (0.03 + 0.04) / 2, closeSeconds: (0.02 + 0.04) / 2, openSeconds: (0.01 + 0.02) / 2, coordinatorCpuMs: 100, nodesCpuMs: 16 });
    expect(roundAnatomy(coordinator, nodes, 3).median?.seconds).toBeCloseTo(0.14, 12);
    // Round 1's cycle has no node CPU (no line for round 0): the median is over the cycles that do.
    const fromOne = roundAnatomy(coordinator, nodes, 1);
    expect(fromOne.perRound.map((c) => [c.round, c.nodesCpuMs])).toEqual([[1, null], [2, 18], [3, 14]]);
    expect(fromOne.median).toMatchObject({ nodesCpuMs: 16, coordinatorCpuMs: 110 }); // 200, 90 and 110 ms
  });

  it('leaves out a round missing a mark, and says null for CPU the lines do not carry', () => {
    const failed = coordinator.filter((l) => !(l.msg === 'round aggregated' && l.round === 2));
    expect(roundAnatomy(failed, nodes).perRound.map((c) => c.round)).toEqual([3]);
    const noCpu = coordinator.map(({ cpuMs: _, ...l }) => l);
    expect(roundAnatomy(noCpu, nodes).median).toMatchObject({ coordinatorCpuMs: null, nodesCpuMs: 16 });
    // A node without its line for round 2: the nodes' sums for rounds 2 and 3 are unknown, not smaller.
    const partial = [nodes[0], nodes[1].filter((l) => l.round !== 2)];
    expect(roundAnatomy(coordinator, partial).perRound.map((c) => c.nodesCpuMs)).toEqual([null, null]);
    expect(roundAnatomy(coordinator, partial).median?.nodesCpuMs).toBeNull();
    expect(roundAnatomy([], []).median).toBeNull();
  });
});
