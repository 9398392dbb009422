import { expect } from 'vitest';
import { recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { recommendEvaluationNoiseStd } from '../../protocols/privacy/noised-recommend.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { describeOnEachBackend, type Harness } from '../coordinator/harness.ts';

/**
 * A recommend study under DP on a real coordinator (issue 9 section 2): client-level central DP
 * over the shared item tensors, and evaluations only as the user-level noised sums with the
 * study's std z sqrt(3) and k (400 naming the field otherwise; exact statistics refused). The
 * two nodes' raw noised sums pool into recall@k and NDCG@k (hand-computed below), marked noised.
 */

const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', items: { vocabulary: ['a', 'b', 'c', 'd', 'e'] }, factors: 3, k: 3 };
const study = {
  name: 'recommend-dp',
  task,
  model: { kind: 'linear' as const },
  features: recommendStudyFeatures(task),
  rounds: 1,
  minNodesPerRound: 2,
  roundDeadlineSeconds: 30,
  privacy: { accountant: 'rdp' as const, delta: 1e-5, central: { noiseMultiplier: 2, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 } },
};
const weights = (v: number) =>
  encodeWeights([
    { name: 'item_factors', shape: [5, 3], values: new Float32Array(15).fill(v) },
    { name: 'item_bias', shape: [5], values: new Float32Array(5).fill(v) },
  ]);
// privacy.evaluation defaults: z = 5, so std 5 sqrt(3).
const STD = recommendEvaluationNoiseStd(5);
const report = (users: number, hits: number, ndcgSum: number, noiseStd = STD, k = 3) => ({
  numExamples: Math.max(0, users),
  stats: { kind: 'recommend', k, noise: { mechanism: 'discrete-gaussian', noiseStd }, users, hits, ndcgSum },
});

async function phaseOf(h: Harness, studyId: string): Promise<string | undefined> {
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds?.[0]?.phase;
}

describeOnEachBackend('noised recommend evaluation at the coordinator', (run) => {
  run('central DP over the item tensors; checks the noised form and pools the raw sums into recall@k and NDCG@k', async (h) => {
    const studyId = await h.createStudy(study);
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    await h.until(async () => ((await phaseOf(h, studyId)) === 'fit' ? true : undefined));
    for (const n of [a, b]) expect((await h.submit(n, studyId, 1, weights(0.01), { numExamples: 1 })).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId)) === 'evaluate' ? true : undefined));
    const post = (node: typeof a, body: unknown) => h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, body, `${studyId}/1`);

    const exact = await post(a, { numExamples: 4, stats: { kind: 'recommend', k: 3, users: 4, hits: 2, ndcgSum: 1.5 } });
    expect(exact.status).toBe(400);
    expect(exact.body.error.field).toBe('stats');
    expect(exact.body.error.message).toMatch(/must be noised/);
    const wrongStd = await post(a, report(10, 4, 2, 5));
    expect(wrongStd.status).toBe(400);
    expect(wrongStd.body.error.field).toBe('stats.noise.noiseStd');
    const wrongK = await post(a, report(10, 4, 2, STD, 10));
    expect(wrongK.status).toBe(400);
    expect(wrongK.body.error.field).toBe('stats.k');
    const miscounted = await post(a, { ...report(10, 4, 2), numExamples: 11 });
    expect(miscounted.status).toBe(400);
    expect(miscounted.body.error.field).toBe('numExamples');

    // Raw sums: users 12 + (-2) = 10, hits 7 + (-3) = 4, NDCG 3.5 + (-1.5) = 2: recall 0.4, NDCG 0.2.
    expect((await post(a, report(12, 7, 3.5))).status).toBe(201);
    expect((await post(b, report(-2, -3, -1.5))).status).toBe(201);
    const round = await h.until(async () => {
      const r = (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0];
      return r.phase === 'completed' ? r : undefined;
    });
    expect(round.validationMetrics).toMatchObject({ n: 10, users: 10, k: 3, noised: 1 });
    expect(round.validationMetrics.recallAtK).toBeCloseTo(0.4, 12);
    expect(round.validationMetrics.ndcgAtK).toBeCloseTo(0.2, 12);
  });
});
