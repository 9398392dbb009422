import { describe, expect, it } from 'vitest';
import { FLOWER_RECORDED, speedRows, speedTableCells } from '../../bench/speed-table.ts';

describe("issue 13's speed table", () => {
  it('divides fedmark by the recorded Flower figure and says which side wins, per direction', () => {
    const rows = speedRows({ testAuc: 0.91, medianRoundSeconds: 0.136, wallSeconds: 11.45, coordinatorPeakRssMb: 300, fusedSamplesPerSecond: { 64: 332_000, 1024: 100_000 } });
    const by = (prefix: string) => rows.find((r) => r.figure.startsWith(prefix))!;
    expect(by('median round').ratio).toBeCloseTo(0.136 / FLOWER_RECORDED.medianRoundSeconds, 12);
    expect(by('median round').meets).toBe(false);
    expect(by('wall').ratio).toBeCloseTo(0.5, 12);
    expect(by('wall').meets).toBe(true);
    expect(by('test AUC').meets).toBe(true); // higher is better
    expect(by('coordinator peak RSS').meets).toBe(false);
    expect(by('local training, MLP 40-64-32-1 + Adam, batch 64').ratio).toBeCloseTo(2, 12);
    expect(by('local training, MLP 40-64-32-1 + Adam, batch 1024').meets).toBe(false);
  });

  it('keeps every figure of the issue, unmeasured ones as null, never as a made-up number', () => {
    const rows = speedRows({});
    expect(rows.map((r) => r.figure)).toHaveLength(15);
    for (const r of rows) {
      expect(r.fedmark).toBeNull();
      expect(r.ratio).toBeNull();
      expect(r.meets).toBeNull();
    }
    expect(speedTableCells(rows).every((c) => c[4] === 'not measured')).toBe(true);
  });

  it('marks targets that are the issue\'s, not Flower\'s', () => {
    const rows = speedRows({ aggregateSeconds: 0.05, coordinatorPathSeconds: { pglite: 0.06, postgres: 0.04 } });
    const target = rows.filter((r) => r.reference === 'target');
    expect(target.map((r) => [r.flower, r.meets])).toEqual([
      [0.075, true],
      [0.05, false],
      [0.05, true],
    ]);
  });
});
