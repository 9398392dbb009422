import { describe, expect, it } from 'vitest';
import { StudyConfig } from '../../protocols/messages.ts';
import { EvaluationStats, isNoised, poolStudyEvaluation, statsRows } from '../../protocols/model-kinds/kind.ts';
import { recommendStats, recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { GaussianNoise, type RandomWords } from '../../protocols/privacy/gaussian-noise.ts';
import { noisedRecommendEvaluation, poolNoisedRecommend, RECOMMEND_EVALUATION_SENSITIVITY, recommendEvaluationNoiseStd, type NoisedRecommendStats } from '../../protocols/privacy/noised-recommend.ts';
import { Release } from '../../client-node/release.ts';

/**
 * Issue 9 section 2 under DP: a recommend node releases the user-level noised sums
 * (users, hits, ndcgSum) (protocols/privacy/noised-recommend.ts). Sensitivity and pooling against
 * closed forms, the noise against the exact sums and its stated std z sqrt(3).
 */

/** splitmix32: a seedable source for a reproducible statistical test only (production uses the OS CSPRNG). */
class SeededWords implements RandomWords {
  constructor(private state: number) {}
  uint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
}

const report = (users: number, hits: number, ndcgSum: number, noiseStd = recommendEvaluationNoiseStd(5), k = 10): NoisedRecommendStats => ({ kind: 'recommend', k, noise: { mechanism: 'discrete-gaussian', noiseStd }, users, hits, ndcgSum });

const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', items: { vocabulary: ['a', 'b', 'c'] }, factors: 4 };
const study = StudyConfig.parse({ name: 'rec', task, model: { kind: 'linear' }, features: recommendStudyFeatures(task), rounds: 1, privacy: { dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 } } });

describe('noised recommend evaluation', () => {
  it('has L2 sensitivity sqrt(3): one user in or out moves (users, hits, ndcgSum) by at most |(1, 1, 1)|', () => {
    expect(RECOMMEND_EVALUATION_SENSITIVITY).toBeCloseTo(Math.sqrt(3), 15);
    expect(recommendEvaluationNoiseStd(5)).toBeCloseTo(5 * Math.sqrt(3), 12);
    const ranks = [1, 2, 4, 11, 30];
    const all = recommendStats(ranks, 10);
    for (let u = 0; u < ranks.length; u++) {
      const without = recommendStats(ranks.filter((_, i) => i !== u), 10);
      const moved = Math.hypot(all.users - without.users, all.hits - without.hits, all.ndcgSum - without.ndcgSum);
      expect(moved).toBeLessThanOrEqual(Math.sqrt(3) + 1e-12);
      if (ranks[u] === 1) expect(moved).toBeCloseTo(Math.sqrt(3), 12);
    }
  });

  it('pools the raw noised sums and clamps only the pooled ones (hand-computed)', () => {
    // users 12 + (-2) = 10; hits 7 + (-3) = 4; ndcg 3.5 + (-1.5) = 2: recall 0.4, NDCG 0.2.
    // Clamping each node first would give users 12, hits 7, ndcg 3.5: recall 0.583, NDCG 0.292.
    const m = poolStudyEvaluation(study, [report(12, 7, 3.5), report(-2, -3, -1.5)]);
    expect(m).toMatchObject({ users: 10, n: 10, k: 10, noised: 1 });
    expect(m.recallAtK).toBeCloseTo(0.4, 12);
    expect(m.ndcgAtK).toBeCloseTo(0.2, 12);
    expect(m.noiseStdPerCount).toBeCloseTo(Math.sqrt(2) * 5 * Math.sqrt(3), 12);
    // Pooled clamps: hits above users -> users; NDCG above hits -> hits; negatives -> 0.
    const over = poolNoisedRecommend([report(5, 9, 8)]);
    expect(over.recallAtK).toBe(1);
    expect(over.ndcgAtK).toBe(1);
    const under = poolNoisedRecommend([report(5, -3, 2)]);
    expect(under.recallAtK).toBe(0);
    expect(under.ndcgAtK).toBe(0);
    const clampNdcg = poolNoisedRecommend([report(10, 3, 6)]);
    expect(clampNdcg.ndcgAtK).toBeCloseTo(0.3, 12);
    expect(poolNoisedRecommend([report(-4, 1, 1)])).toMatchObject({ recallAtK: null, ndcgAtK: null, n: 0, noised: 1 });
    // The count released is the noised one, clamped at 0.
    expect(statsRows(report(-4, 1, 1))).toBe(0);
    expect(statsRows(report(17, 1, 1))).toBe(17);
    // Never mixed with exact reports, never two cutoffs.
    expect(() => poolStudyEvaluation(study, [report(3, 1, 1), recommendStats([1, 2], 10)])).toThrow(/mixes noised and exact/);
    expect(() => poolNoisedRecommend([report(3, 1, 1), report(3, 1, 1, undefined, 5)])).toThrow(/different k/);
  });

  it('releases sums that differ from the exact ones by noise of std z sqrt(3), centred on them', () => {
    const z = 5;
    const ranks = Array.from({ length: 300 }, (_, u) => 1 + (u % 25));
    const exact = recommendStats(ranks, 10);
    const noise = new GaussianNoise(new SeededWords(11));
    const runs = 400;
    const deviations: number[][] = [[], [], []];
    let identical = 0;
    for (let i = 0; i < runs; i++) {
      const s = noisedRecommendEvaluation(ranks, 10, { noiseMultiplier: z, noise });
      expect(EvaluationStats.parse(s)).toEqual(s);
      expect(Number.isInteger(s.users) && Number.isInteger(s.hits)).toBe(true);
      expect(s.noise).toEqual({ mechanism: 'discrete-gaussian', noiseStd: recommendEvaluationNoiseStd(z) });
      if (s.users === exact.users && s.hits === exact.hits) identical++;
      deviations[0].push(s.users - exact.users);
      deviations[1].push(s.hits - exact.hits);
      deviations[2].push(s.ndcgSum - exact.ndcgSum);
    }
    expect(identical).toBeLessThan(5);
    const sigma = z * Math.sqrt(3);
    for (const d of deviations) {
      const mean = d.reduce((s, x) => s + x, 0) / runs;
      const std = Math.sqrt(d.reduce((s, x) => s + (x - mean) ** 2, 0) / (runs - 1));
      // sigma = 8.66: the sample std of 400 draws is within 15% of it, the mean within 4 standard errors.
      expect(std).toBeGreaterThan(sigma * 0.85);
      expect(std).toBeLessThan(sigma * 1.15);
      expect(Math.abs(mean)).toBeLessThan((4 * sigma) / Math.sqrt(runs) + 0.5);
    }
  });

  it("the node's release step sends the noised report (count = the clamped noised count) and refuses exact recommend statistics under DP", () => {
    const release = Release.of(study);
    const stats = noisedRecommendEvaluation([1, 3, 40], 10, { noiseMultiplier: 5 });
    expect(isNoised(stats)).toBe(true);
    expect(release.evaluation({ numExamples: statsRows(stats), stats })).toEqual({ numExamples: Math.max(0, stats.users), stats });
    expect(() => release.evaluation({ numExamples: 3, stats: recommendStats([1, 3, 40], 10) })).toThrow(/noised/);
  });
});
