import { z } from 'zod';

/**
 * ROC AUC by the rank-sum (Mann-Whitney U) statistic, ties counted half.
 * Returns NaN when one class is absent (AUC is undefined there, and 0.5 would be a lie).
 */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new Error(`rocAuc: ${n} scores but ${labels.length} labels`);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let positives = 0;
  let rankSumPositives = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const averageRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[order[k]] > 0.5) {
        positives++;
        rankSumPositives += averageRank;
      }
    }
    i = j + 1;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) return Number.NaN;
  return (rankSumPositives - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/**
 * An array of integers in [min, max], checked in one loop: the same refusal as
 * `z.array(z.number().int().min(min).max(max))`, the first offending entry named by its index.
 * Written by hand because zod runs each entry through its own schema and checks, and a node parses
 * a histogram of 2 x 1,000 counts once a round in a process that never warms up: 1.4 ms a parse
 * with zod's arrays against 0.25-0.4 ms here, over a process's first 20 parses (issue 13,
 * .scratch benchmark summarised in stop 16's closing note). The JSON Schema (the OpenAPI
 * document) still says an array of integers with those bounds.
 */
export function integerArray(min: number, max: number) {
  return z
    .custom<number[]>((value) => Array.isArray(value), { error: 'expected an array of integers' })
    .check((ctx) => {
      const values = ctx.value;
      for (let i = 0; i < values.length; i++) {
        const v: unknown = values[i];
        if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) continue;
        ctx.issues.push({ code: 'custom', input: v, path: [i], message: `expected an integer in [${min}, ${max}], got ${typeof v === 'number' ? v : typeof v}` });
        return;
      }
    })
    .meta({ type: 'array', items: { type: 'integer', minimum: min, maximum: max } });
}

/**
 * A score histogram: how many positives and negatives scored in each of `bins` equal-width bins
 * of [0, 1]. Nodes report these instead of per-row scores, and the coordinator pools them into a
 * federated AUC without ever seeing a row's score.
 */
export const ScoreHistogram = z
  .object({
    bins: z.number().int().min(2).max(100_000),
    positives: integerArray(0, Number.MAX_SAFE_INTEGER),
    negatives: integerArray(0, Number.MAX_SAFE_INTEGER),
  })
  .refine((h) => h.positives.length === h.bins && h.negatives.length === h.bins, {
    message: 'positives and negatives must each have `bins` entries',
  });
export type ScoreHistogram = z.infer<typeof ScoreHistogram>;

export const DEFAULT_HISTOGRAM_BINS = 1000;

export function scoreHistogram(scores: ArrayLike<number>, labels: ArrayLike<number>, bins = DEFAULT_HISTOGRAM_BINS): ScoreHistogram {
  const positives = new Array<number>(bins).fill(0);
  const negatives = new Array<number>(bins).fill(0);
  for (let i = 0; i < scores.length; i++) {
    const bin = Math.min(bins - 1, Math.max(0, Math.floor(scores[i] * bins)));
    if (labels[i] > 0.5) positives[bin]++;
    else negatives[bin]++;
  }
  return { bins, positives, negatives };
}

/** Sums histograms with the same number of bins. */
export function poolHistograms(histograms: ScoreHistogram[]): ScoreHistogram | undefined {
  if (histograms.length === 0) return undefined;
  const bins = histograms[0].bins;
  const pooled = { bins, positives: new Array<number>(bins).fill(0), negatives: new Array<number>(bins).fill(0) };
  for (const h of histograms) {
    if (h.bins !== bins) throw new Error(`cannot pool histograms of ${bins} and ${h.bins} bins`);
    for (let b = 0; b < bins; b++) {
      pooled.positives[b] += h.positives[b];
      pooled.negatives[b] += h.negatives[b];
    }
  }
  return pooled;
}

/** AUC of a histogram: scores within one bin count as ties (half), so it is exact up to the bin width. */
export function aucFromHistogram(h: ScoreHistogram): number {
  let positives = 0;
  let negatives = 0;
  for (let b = 0; b < h.bins; b++) {
    positives += h.positives[b];
    negatives += h.negatives[b];
  }
  if (positives === 0 || negatives === 0) return Number.NaN;
  let negativesBelow = 0;
  let favourable = 0;
  for (let b = 0; b < h.bins; b++) {
    favourable += h.positives[b] * (negativesBelow + h.negatives[b] / 2);
    negativesBelow += h.negatives[b];
  }
  return favourable / (positives * negatives);
}
