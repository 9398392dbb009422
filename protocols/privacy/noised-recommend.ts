import { z } from 'zod';
import { GaussianNoise } from './gaussian-noise.ts';
import { rankContribution } from '../model-kinds/recommend.ts';

/**
 * Recommendation evaluation under DP (issue 9 section 2, user-level): what a node of a recommend
 * study releases about its held-out interactions, and how the coordinator pools it. The binary
 * kind's counterpart is the noised score histogram, regression's noised-regression.ts.
 *
 * The query. Leave-last-out holds out ONE item per user (client-node/data-recommend.ts: the
 * user's latest interaction), so each evaluated user contributes exactly one vector
 *   v_u = (1, hit_u, ndcg_u),  hit_u in {0, 1},  ndcg_u = hit_u / log2(rank_u + 1) in [0, 1]
 * and no user can add more than one to any coordinate: no per-user clipping is needed beyond
 * that. The node releases sum_u v_u + N, N discrete Gaussian of std sigma = z x Delta on every
 * coordinate, Delta = sqrt(3).
 *
 * Sensitivity (add/remove adjacency, the USER as the unit: all of a user's interactions in or
 * out). Each user's v_u depends on their own interactions and the public global items only
 * (the fold-in of their user row reads nothing else: models/mf.ts foldInUsers), so the sum
 * changes by one v_u, of L2 norm sqrt(1 + hit + ndcg^2) <= sqrt(3) (a hit at rank 1). One release
 * of the 3-vector is ONE Gaussian mechanism with multiplier sigma / Delta = z (Dwork & Roth 2014,
 * Thm A.1; RDP alpha / (2 z^2), Mironov 2017, Prop. 7), charged to the node's ledger as
 * (q = 1, z, 1 step) by client-node/train.ts evaluate(), as for the other kinds.
 */

/** Coordinates of one user's contribution (users, hits, ndcgSum). */
export const RECOMMEND_EVALUATION_DIMENSION = 3;

/** L2 sensitivity of the released vector: |(1, 1, 1)| = sqrt(3), a hit at rank 1. */
export const RECOMMEND_EVALUATION_SENSITIVITY = Math.sqrt(3);

/** The per-coordinate noise std of multiplier z (the study's privacy.evaluation.noiseMultiplier). */
export function recommendEvaluationNoiseStd(noiseMultiplier: number): number {
  return noiseMultiplier * RECOMMEND_EVALUATION_SENSITIVITY;
}

const noisedCount = z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);

/**
 * What a recommend node releases under DP: the noised user and hit counts (integers, may be
 * negative), the noised NDCG sum, the cutoff k and the mechanism with its per-coordinate std.
 */
export const NoisedRecommendStats = z.strictObject({
  kind: z.literal('recommend'),
  k: z.number().int().min(1).max(1000),
  noise: z.strictObject({
    mechanism: z.literal('discrete-gaussian'),
    /** Per-coordinate std: z x sqrt(3) (recommendEvaluationNoiseStd). */
    noiseStd: z.number().positive().finite(),
  }),
  users: noisedCount,
  hits: noisedCount,
  ndcgSum: z.number().finite(),
});
export type NoisedRecommendStats = z.infer<typeof NoisedRecommendStats>;

/**
 * The node's noised statistics from the held-out items' 1-based ranks (one per evaluated user).
 * The node's ledger is charged before this runs (client-node/train.ts).
 */
export function noisedRecommendEvaluation(ranks: ArrayLike<number>, k: number, dp: { noiseMultiplier: number; noise?: GaussianNoise }): NoisedRecommendStats {
  const z = dp.noiseMultiplier;
  const sums = new Float64Array(RECOMMEND_EVALUATION_DIMENSION);
  for (let u = 0; u < ranks.length; u++) {
    const c = rankContribution(ranks[u], k);
    sums[0] += 1;
    sums[1] += c.hit;
    sums[2] += c.ndcg;
  }
  const std = recommendEvaluationNoiseStd(z);
  // gridStep with 3 coordinates: the snapped integer mechanism's multiplier is exactly z.
  (dp.noise ?? new GaussianNoise()).privatize(sums, GaussianNoise.gridStep(std, z, RECOMMEND_EVALUATION_DIMENSION));
  // Counts rounded: post-processing, and their release names are counts.
  return { kind: 'recommend', k, noise: { mechanism: 'discrete-gaussian', noiseStd: std }, users: Math.round(sums[0]), hits: Math.round(sums[1]), ndcgSum: sums[2] };
}

/** Users a noised report covers: its noised count clamped at 0 (post-processing). */
export function noisedRecommendUsers(stats: NoisedRecommendStats): number {
  return Math.max(0, stats.users);
}

/**
 * Pools noised recommend reports: the raw noised sums are added as they are (clamping each
 * node's first would bias them upward), and only the pool is clamped to what the query allows:
 * users >= 0, 0 <= hits <= users, 0 <= ndcgSum <= hits. Then recall@k = hits / users and
 * NDCG@k = ndcgSum / users. `noised: 1` marks the metrics; noiseStdPerCount is the pooled std.
 */
export function poolNoisedRecommend(reports: NoisedRecommendStats[]): Record<string, number | null> {
  const k = reports[0]?.k ?? null;
  if (reports.some((r) => r.k !== k)) throw new Error('cannot pool recommend reports of different k');
  const sum = (f: (r: NoisedRecommendStats) => number) => reports.reduce((s, r) => s + f(r), 0);
  const users = Math.max(0, sum((r) => r.users));
  const noiseStdPerCount = Math.sqrt(sum((r) => r.noise.noiseStd ** 2));
  if (users === 0) return { recallAtK: null, ndcgAtK: null, k, users: 0, n: 0, noised: 1, noiseStdPerCount };
  const hits = Math.min(users, Math.max(0, sum((r) => r.hits)));
  const ndcg = Math.min(hits, Math.max(0, sum((r) => r.ndcgSum)));
  return { recallAtK: hits / users, ndcgAtK: ndcg / users, k, users, n: users, noised: 1, noiseStdPerCount };
}
