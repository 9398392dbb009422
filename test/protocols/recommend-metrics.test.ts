import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { itemIndexer, poolRecommend, rankContribution, recommendStats, recommendStudyProblems, recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { poolEvaluation, statsRows } from '../../protocols/model-kinds/kind.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { rankOf } from '../../models/mf.ts';

describe('recall@k and NDCG@k from counts', () => {
  it('match hand-computed values', () => {
    // ranks 1, 3, 11 at k = 10: hits 2; DCG 1/log2(2) + 1/log2(4) = 1 + 0.5; rank 11 misses.
    const s = recommendStats([1, 3, 11], 10);
    expect(s).toEqual({ kind: 'recommend', k: 10, users: 3, hits: 2, ndcgSum: 1.5 });
    const m = poolRecommend([s]);
    expect(m.recallAtK).toBeCloseTo(2 / 3, 12);
    expect(m.ndcgAtK).toBeCloseTo(0.5, 12);
    expect(rankContribution(10, 10)).toEqual({ hit: 1, ndcg: 1 / Math.log2(11) });
    expect(rankContribution(2, 1)).toEqual({ hit: 0, ndcg: 0 });
    expect(statsRows(s)).toBe(3);
  });

  it('pooling two nodes equals one node holding both', () => {
    const a = [1, 3, 11, 7];
    const b = [2, 40, 1];
    const pooled = poolEvaluation('recommend', [recommendStats(a, 5), recommendStats(b, 5)]);
    const single = poolEvaluation('recommend', [recommendStats([...a, ...b], 5)]);
    expect(pooled.recallAtK).toBeCloseTo(single.recallAtK!, 12);
    expect(pooled.ndcgAtK).toBeCloseTo(single.ndcgAtK!, 12);
    // hand: hits at ranks 1, 3, 2, 1 of 7 users; DCG 1 + 0.5 + 1/log2(3) + 1
    expect(pooled.recallAtK).toBeCloseTo(4 / 7, 12);
    expect(pooled.ndcgAtK).toBeCloseTo((2.5 + 1 / Math.log2(3)) / 7, 12);
  });

  it('pools any split of users across nodes exactly as one node holding them all (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 60 }), fc.array(fc.nat(), { maxLength: 60 }), fc.integer({ min: 1, max: 20 }), (ranks, cuts, k) => {
        const nodes: number[][] = [[], [], []];
        ranks.forEach((r, i) => nodes[(cuts[i] ?? 0) % 3].push(r));
        const pooled = poolEvaluation('recommend', nodes.map((n) => recommendStats(n, k)));
        const single = poolEvaluation('recommend', [recommendStats(ranks, k)]);
        expect(pooled.users).toBe(single.users);
        if (ranks.length === 0) {
          expect(pooled.recallAtK).toBeNull();
        } else {
          expect(pooled.recallAtK).toBeCloseTo(single.recallAtK!, 12);
          expect(pooled.ndcgAtK).toBeCloseTo(single.ndcgAtK!, 12);
        }
      }),
    );
  });

  it('ranks only the items the user did not train on; ties count against the target', () => {
    const scores = [0.9, 0.5, 0.7, 0.1];
    expect(rankOf(scores, 2, (j) => j === 0)).toBe(1);
    expect(rankOf(scores, 2, () => false)).toBe(2);
    expect(rankOf([0.5, 0.5, 0.5], 0, () => false)).toBe(3);
  });

  it('hashes items into the declared buckets with the stated hash', () => {
    const bucket = itemIndexer({ hashBuckets: 7 });
    expect(bucket('sku-1')).toBe(bucket(' sku-1 '));
    for (const id of ['a', 'b', 'c', 'sku-99']) expect(bucket(id)).toBeGreaterThanOrEqual(0), expect(bucket(id)).toBeLessThan(7);
    expect(itemIndexer({ vocabulary: ['x', 'y'] })('y')).toBe(1);
    expect(itemIndexer({ vocabulary: ['x', 'y'] })('z')).toBe(-1);
  });
});

describe('a recommend study', () => {
  const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', items: { vocabulary: ['a', 'b', 'c'] }, factors: 4 };
  const base = { name: 'rec', task, model: { kind: 'linear' as const }, features: recommendStudyFeatures(task), rounds: 3 };

  it('is valid in its canonical shape', () => {
    expect(StudyConfig.safeParse(base).success).toBe(true);
  });

  it('is refused with the field named for a wrong model, target or feature', () => {
    const issues = (input: object) => (StudyConfig.safeParse(input).error?.issues ?? []).map((i) => i.path.join('.'));
    expect(issues({ ...base, model: { kind: 'mlp' } })).toContain('model.kind');
    expect(issues({ ...base, features: { ...base.features, target: { column: 'other', positive: '*' } } })).toContain('features.target.column');
    expect(issues({ ...base, features: { ...base.features, features: [{ name: 'age', kind: 'categorical', categories: ['*'] }] } })).toContain('features.features.0.name');
    expect(recommendStudyProblems({ task: { kind: 'binary' }, model: { kind: 'mlp' }, features: { target: { column: 'x' }, features: [] } })).toEqual([]);
  });

  it('may run under DP: user-level DP-SGD and/or central DP (issue 9 section 2)', () => {
    const parse = (privacy: object) => StudyConfig.safeParse({ ...base, privacy });
    expect(parse({ dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 } }).error?.issues ?? []).toEqual([]);
    expect(parse({ central: { noiseMultiplier: 2, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } }).error?.issues ?? []).toEqual([]);
  });
});
