import { describe, expect, it } from 'vitest';
import { medianOf, parseDemoRuns, summarizeDemoRuns, type DemoRunFigures } from '../../bench/demo-runs.ts';

const run = (over: Partial<DemoRunFigures>): DemoRunFigures => ({
  medianRoundSeconds: 0.13,
  roundOneSeconds: 0.8,
  wallSeconds: 13,
  globalTestAuc: 0.905,
  coordinatorPeakRssMb: 220,
  nodePeakRssMb: 103,
  coordinatorCpuSeconds: 7.5,
  nodeCpuSeconds: 10,
  ...over,
});

describe('the demo measured several times (bench --demo-runs)', () => {
  it('takes the median of each time and the AUC over the runs, with their range', () => {
    const s = summarizeDemoRuns([run({ medianRoundSeconds: 0.161, wallSeconds: 14.2, globalTestAuc: 0.90 }), run({ medianRoundSeconds: 0.12, wallSeconds: 12.1, globalTestAuc: 0.91 }), run({ medianRoundSeconds: 0.134, wallSeconds: 13.5, globalTestAuc: 0.895 })]);
    expect(s.runs).toBe(3);
    expect(s.figures.medianRoundSeconds).toBe(0.134);
    expect(s.range.medianRoundSeconds).toEqual([0.12, 0.161]);
    expect(s.figures.wallSeconds).toBe(13.5);
    expect(s.figures.globalTestAuc).toBe(0.9);
    // The run whose median round is the median one is the one whose rounds get tabled.
    expect(s.medianRun).toBe(2);
  });

  it('reports peak RSS as the highest run: the goal is a ceiling, a median would hide the run that breaks it', () => {
    const s = summarizeDemoRuns([run({ coordinatorPeakRssMb: 230, nodePeakRssMb: 101 }), run({ coordinatorPeakRssMb: 262, nodePeakRssMb: 104 }), run({ coordinatorPeakRssMb: 224, nodePeakRssMb: 102 })]);
    expect(s.figures.coordinatorPeakRssMb).toBe(262);
    expect(s.figures.nodePeakRssMb).toBe(104);
    expect(s.range.coordinatorPeakRssMb).toEqual([224, 262]);
  });

  it('averages the two middle runs of an even count, tables the lower one, and skips runs missing a figure', () => {
    const s = summarizeDemoRuns([run({ medianRoundSeconds: 0.15 }), run({ medianRoundSeconds: 0.11 }), run({ medianRoundSeconds: 0.13, coordinatorPeakRssMb: null }), run({ medianRoundSeconds: 0.12 })]);
    expect(s.figures.medianRoundSeconds).toBeCloseTo(0.125, 12);
    expect(s.medianRun).toBe(3); // 0.12 s: the lower middle of 0.11, 0.12, 0.13, 0.15
    expect(s.figures.coordinatorPeakRssMb).toBe(220);
    const none = summarizeDemoRuns([run({ globalTestAuc: null })]);
    expect(none.figures.globalTestAuc).toBeNull();
    expect(none.range.globalTestAuc).toBeNull();
    expect(() => summarizeDemoRuns([])).toThrow(/no runs/);
  });

  it('computes a median against its definition', () => {
    expect(medianOf([3, 1, 2])).toBe(2);
    expect(medianOf([4, 1, 3, 2])).toBe(2.5);
    expect(medianOf([7])).toBe(7);
  });

  it('reads --demo-runs as a whole number from 1 to 20 and names the flag otherwise', () => {
    expect(parseDemoRuns(undefined, false)).toBe(3);
    expect(parseDemoRuns(undefined, true)).toBe(1);
    expect(parseDemoRuns('5', false)).toBe(5);
    for (const bad of ['0', '21', '2.5', 'three', '', '-1']) expect(() => parseDemoRuns(bad, false)).toThrow(/--demo-runs must be a whole number from 1 to 20/);
  });
});
