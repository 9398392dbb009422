import { expect } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { describeOnEachBackend, tinyStudy, type Harness } from '../coordinator/harness.ts';

/**
 * A regression study under DP on a real coordinator (issue 10): the coordinator takes only the
 * noised residual sums with the study's multiplier and clip (400 naming the field otherwise, and
 * exact statistics are refused), and pools the two nodes' raw noised sums into RMSE, MAE and bias
 * (closed forms below), marked noised, with R^2 and the baseline null.
 */

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);
// target scale 10: default clip 2 x 10 = 20.
const regression = tinyStudy({
  rounds: 1,
  task: { kind: 'regression' },
  features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: 50, scale: 10 } },
  privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 2, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } },
});
const report = (n: number, sumError: number, sae: number, sse: number, residualClip = 20, noiseMultiplier = 5) => ({
  numExamples: Math.max(0, n),
  stats: { kind: 'regression', noise: { mechanism: 'discrete-gaussian', noiseMultiplier, residualClip }, n, sumError, sae, sse },
});

async function phaseOf(h: Harness, studyId: string): Promise<string | undefined> {
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds?.[0]?.phase;
}

describeOnEachBackend('noised regression evaluation at the coordinator', (run) => {
  run('checks the noised form and pools the raw sums into RMSE, MAE and bias', async (h) => {
    const studyId = await h.createStudy(regression);
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    await h.until(async () => ((await phaseOf(h, studyId)) === 'fit' ? true : undefined));
    for (const n of [a, b]) expect((await h.submit(n, studyId, 1, weights(0.01), { numExamples: 1 })).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId)) === 'evaluate' ? true : undefined));
    const post = (node: typeof a, body: unknown) => h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, body, `${studyId}/1`);

    const wrongClip = await post(a, report(10, 0, 10, 20, 30));
    expect(wrongClip.status).toBe(400);
    expect(wrongClip.body.error.field).toBe('stats.noise.residualClip');
    expect(wrongClip.body.error.message).toMatch(/must be 20/);
    const wrongZ = await post(a, report(10, 0, 10, 20, 20, 1));
    expect(wrongZ.status).toBe(400);
    expect(wrongZ.body.error.field).toBe('stats.noise.noiseMultiplier');
    const exact = await post(a, { numExamples: 2, stats: { kind: 'regression', n: 2, sumY: 100, sumY2: 5000, sumError: 0, sse: 2, sae: 2, baselineSae: 0 } });
    expect(exact.status).toBe(400);
    expect(exact.body.error.field).toBe('stats');
    const miscounted = await post(a, { ...report(10, 0, 10, 20), numExamples: 11 });
    expect(miscounted.status).toBe(400);
    expect(miscounted.body.error.field).toBe('numExamples');

    // Raw sums: n = 12 + (-2) = 10, sum e = 30 + (-40) = -10, SAE = 70 + 10 = 80, SSE = 800 + (-160) = 640.
    expect((await post(a, report(12, 30, 70, 800))).status).toBe(201);
    expect((await post(b, report(-2, -40, 10, -160))).status).toBe(201);
    const metrics = await h.until(async () => {
      const r = (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0];
      return r.phase === 'completed' ? r.validationMetrics : undefined;
    });
    expect(metrics).toMatchObject({ n: 10, rmse: 8, mae: 8, bias: -1, r2: null, baselineRmse: null, baselineMae: null, noised: 1, residualClip: 20 });
  });
});
