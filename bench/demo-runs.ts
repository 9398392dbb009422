/**
 * The 10-node demo measured several times (issue 13). On this shared 2-core machine one run's
 * median round moves by a third from run to run (2026-12-04 15:28-15:46 UTC, the same code, 12
 * runs a minute or two apart: 0.120, 0.127, 0.134, 0.134, 0.139, 0.143, 0.147, 0.147, 0.156,
 * 0.161, 0.162, 0.164 s), so a single run cannot say whether a change helped, nor where fedmark
 * stands against Flower's 0.068 s. `npm run
 * bench -- --demo-runs N` (default 3, 1 with --quick) runs the demo N times in a row and the
 * speed table takes:
 *   - times and AUC: the median over the runs (each run's own figure is already a median over
 *     its rounds 2-20), with the range beside it;
 *   - peak RSS: the highest run, since the goal is a ceiling.
 *
 * Pure: it summarises figures, it measures nothing.
 */

/** What one demo run reports (cli/demo-federation.ts speedFigures, plus the wall time around it). */
export interface DemoRunFigures {
  medianRoundSeconds: number | null;
  roundOneSeconds: number | null;
  wallSeconds: number;
  globalTestAuc: number | null;
  coordinatorPeakRssMb: number | null;
  nodePeakRssMb: number | null;
  coordinatorCpuSeconds: number | null;
  nodeCpuSeconds: number | null;
}

type Figure = keyof DemoRunFigures;

/** Figures whose summary is the worst run (a ceiling), not the median. */
const CEILINGS: ReadonlySet<Figure> = new Set<Figure>(['coordinatorPeakRssMb', 'nodePeakRssMb']);

const FIGURES: readonly Figure[] = ['medianRoundSeconds', 'roundOneSeconds', 'wallSeconds', 'globalTestAuc', 'coordinatorPeakRssMb', 'nodePeakRssMb', 'coordinatorCpuSeconds', 'nodeCpuSeconds'];

export interface DemoRunsSummary {
  runs: number;
  /** Each figure over the runs that have it: the median, or for peak RSS the highest; null when no run has it. */
  figures: { [K in Figure]: number | null };
  /** Lowest and highest value of each figure over the runs that have it. */
  range: { [K in Figure]: [number, number] | null };
  /** Index of the run whose median round is the median one (the lower middle for an even count): its rounds are tabled. */
  medianRun: number;
}

/** The median of the values (the mean of the two middle ones for an even count). */
export function medianOf(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * @example
 *   summarizeDemoRuns([{ medianRoundSeconds: 0.12, ... }, { medianRoundSeconds: 0.15, ... }, { medianRoundSeconds: 0.13, ... }])
 *   // figures.medianRoundSeconds 0.13, range.medianRoundSeconds [0.12, 0.15], medianRun 2
 */
export function summarizeDemoRuns(runs: DemoRunFigures[]): DemoRunsSummary {
  if (runs.length === 0) throw new RangeError('summarizeDemoRuns: no runs');
  const figures = {} as DemoRunsSummary['figures'];
  const range = {} as DemoRunsSummary['range'];
  for (const f of FIGURES) {
    const known = runs.map((r) => r[f]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    figures[f] = known.length === 0 ? null : CEILINGS.has(f) ? Math.max(...known) : medianOf(known);
    range[f] = known.length === 0 ? null : [Math.min(...known), Math.max(...known)];
  }
  return { runs: runs.length, figures, range, medianRun: medianRunIndex(runs) };
}

/** The run with the median median-round (lower middle when even); runs without one sort last. */
function medianRunIndex(runs: DemoRunFigures[]): number {
  const order = runs.map((r, i) => ({ i, v: r.medianRoundSeconds ?? Number.POSITIVE_INFINITY })).sort((a, b) => a.v - b.v || a.i - b.i);
  return order[(order.length - 1) >> 1].i;
}

/** `--demo-runs`: a whole number of runs from 1 to 20; anything else is an error naming the flag. */
export function parseDemoRuns(value: string | undefined, quick: boolean): number {
  if (value === undefined) return quick ? 1 : 3;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < 1 || n > 20) throw new RangeError(`--demo-runs must be a whole number from 1 to 20, got "${value}"`);
  return n;
}
