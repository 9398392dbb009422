/**
 * Issue 13's table: every figure fedmark was measured on against Flower 1.4 + PyTorch, with the
 * Flower figure recorded on this machine (the issue's side-by-side sitting) and the ratio
 * fedmark / Flower. `npm run bench -- --only speed` prints it from the sections it needs (demo,
 * aggregation, coordinator path, trainers, scale), running them when they were not run already.
 *
 * Pure: it formats figures, it measures nothing. A ratio above 1 means fedmark takes longer or
 * uses more (for AUC and samples/s, where more is better, `better` says which side wins).
 */

/** Flower 1.4 + PyTorch on the same federation and machine (issue 13's table, first sitting). */
export const FLOWER_RECORDED = {
  testAuc: 0.9005,
  /** Median round of rounds 2-20 (0.049 s in a second run). */
  medianRoundSeconds: 0.068,
  /** Start to finish (16.9 s in a second run). */
  wallSeconds: 22.9,
  serverPeakRssMb: 256,
  clientPeakRssMb: 263,
  /** Flower's own `aggregate()` on 100 updates x 1M float32. */
  aggregateSeconds: 1.47,
  /** 51 nodes (one per state), 20 rounds: wall and round time. */
  scale51WallSeconds: 66,
  scale51RoundSeconds: 0.221,
  /** PyTorch 1.13 CPU, 2 threads, MLP 40-64-32-1 + Adam: samples/s at batch 64 and 1024. */
  torchSamplesPerSecond: { 64: 166_000, 1024: 258_000 } as Record<number, number>,
} as const;

/** The targets where Flower has no figure of its own (the coordinator path is in memory there). */
export const TARGETS = { aggregateSeconds: 0.075, coordinatorPathSeconds: 0.05 } as const;

export type Better = 'lower' | 'higher';

export interface SpeedRow {
  figure: string;
  unit: string;
  /** The recorded Flower figure (or the target, see `reference`). */
  flower: number | null;
  reference: 'flower' | 'target';
  fedmark: number | null;
  /** fedmark / reference; null when either side is missing. */
  ratio: number | null;
  better: Better;
  /** True when fedmark meets or beats the reference. */
  meets: boolean | null;
  note?: string;
}

export interface SpeedFigures {
  testAuc?: number | null;
  medianRoundSeconds?: number | null;
  wallSeconds?: number | null;
  coordinatorPeakRssMb?: number | null;
  nodePeakRssMb?: number | null;
  aggregateSeconds?: number | null;
  coordinatorPathSeconds?: { pglite?: number | null; postgres?: number | null };
  scale51WallSeconds?: number | null;
  scale51RoundSeconds?: number | null;
  /** The same 51-node demo with its coordinator on PostgreSQL (`--database-url`; bench/scale-bench.ts --demo --postgres). */
  scale51Postgres?: { wallSeconds?: number | null; roundSeconds?: number | null };
  fusedSamplesPerSecond?: Record<number, number | null>;
}

function row(figure: string, unit: string, reference: number | null, fedmark: number | null | undefined, better: Better, kind: 'flower' | 'target' = 'flower', note?: string): SpeedRow {
  const value = fedmark ?? null;
  const ratio = value !== null && reference !== null && reference !== 0 ? value / reference : null;
  const meets = value === null || reference === null ? null : better === 'lower' ? value <= reference : value >= reference;
  return { figure, unit, flower: reference, reference: kind, fedmark: value, ratio, better, meets, ...(note ? { note } : {}) };
}

/** The table's rows, in the order, from whatever figures were measured (missing ones stay null). */
export function speedRows(f: SpeedFigures): SpeedRow[] {
  const r = FLOWER_RECORDED;
  const rows = [
    row('test AUC (10-node churn demo)', 'AUC', r.testAuc, f.testAuc, 'higher'),
    row('median round, rounds 2-20', 's', r.medianRoundSeconds, f.medianRoundSeconds, 'lower'),
    row('wall, start to finish', 's', r.wallSeconds, f.wallSeconds, 'lower'),
    row('coordinator peak RSS (Flower: server)', 'MB', r.serverPeakRssMb, f.coordinatorPeakRssMb, 'lower'),
    row('node peak RSS (Flower: client)', 'MB', r.clientPeakRssMb, f.nodePeakRssMb, 'lower'),
    row("FedAvg of 100 x 1M float32 (Flower: its aggregate())", 's', r.aggregateSeconds, f.aggregateSeconds, 'lower'),
    row('FedAvg of 100 x 1M float32, issue target', 's', TARGETS.aggregateSeconds, f.aggregateSeconds, 'lower', 'target'),
    row('coordinator path, one 1M update, PGlite (Flower: in memory)', 's', TARGETS.coordinatorPathSeconds, f.coordinatorPathSeconds?.pglite, 'lower', 'target'),
    row('coordinator path, one 1M update, PostgreSQL', 's', TARGETS.coordinatorPathSeconds, f.coordinatorPathSeconds?.postgres, 'lower', 'target'),
    row('51 nodes x 20 rounds, wall', 's', r.scale51WallSeconds, f.scale51WallSeconds, 'lower'),
    row('51 nodes, median round', 's', r.scale51RoundSeconds, f.scale51RoundSeconds, 'lower'),
    row('51 nodes x 20 rounds, wall, coordinator on PostgreSQL', 's', r.scale51WallSeconds, f.scale51Postgres?.wallSeconds, 'lower'),
    row('51 nodes, median round, coordinator on PostgreSQL', 's', r.scale51RoundSeconds, f.scale51Postgres?.roundSeconds, 'lower'),
  ];
  for (const batch of [64, 1024]) {
    rows.push(row(`local training, MLP 40-64-32-1 + Adam, batch ${batch} (Flower: PyTorch, 2 threads)`, 'samples/s', r.torchSamplesPerSecond[batch], f.fusedSamplesPerSecond?.[batch], 'higher'));
  }
  return rows;
}

/** Rows as table cells: figure, Flower (or target), fedmark, ratio, verdict. */
export function speedTableCells(rows: SpeedRow[]): Array<Array<string | number>> {
  const show = (x: number | null) => (x === null ? '-' : x);
  return rows.map((q) => [q.figure, q.flower === null ? '-' : `${q.flower}${q.reference === 'target' ? ' (target)' : ''}`, show(q.fedmark), q.ratio === null ? '-' : `${q.ratio.toFixed(2)}x`, q.meets === null ? 'not measured' : q.meets ? 'meets' : q.better === 'lower' ? 'slower/larger' : 'worse']);
}

export const SPEED_TABLE_HEADER = ['figure', 'Flower 1.4 (recorded)', 'fedmark', 'fedmark / Flower', 'verdict'];
