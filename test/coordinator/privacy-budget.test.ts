import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { encodeWeights, decodeWeights } from '../../protocols/weights-codec.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { bytesOrJson, defaultMeta, inProcessCoordinator, tinyStudy } from './harness.ts';

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

// Central DP with q = 1, z = 2: epsilon after r rounds is the accountant's epsilon for r steps.
const central = { noiseMultiplier: 2, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 };
const eps = (rounds: number) => computeEpsilon({ q: 1, sigma: 2, steps: rounds, delta: 1e-5 }, 'rdp');

for (const backendName of BACKEND_NAMES) {
  describe(`privacy budget and ledger on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend);
    });
    afterAll(async () => h?.close());

    it('charges each round at its start, and refuses the round that would exceed the budget before any node trains', async (ctx) => {
      if (!h) return ctx.skip();
      // Budget covers exactly two rounds.
      const budget = (eps(2) + eps(3)) / 2;
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: budget, central } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      for (const round of [1, 2]) {
        const started = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
        expect(started.status).toBe(201);
        expect(started.body.round).toBe(round);
        expect((await h.submit(a, studyId, round, weights(0.1))).status).toBe(201);
        expect((await h.submit(b, studyId, round, weights(0.2))).status).toBe(201);
        await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase === 'evaluate' ? true : undefined));
        for (const node of [a, b]) {
          await h.nodePost(node, `/v1/studies/${studyId}/rounds/${round}/evaluations`, { numExamples: 2, loss: 0.5, histogram: { bins: 2, positives: [0, 1], negatives: [1, 0] } }, `${studyId}/${round}`);
        }
        await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase === 'completed' ? true : undefined));
      }
      const refused = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
      expect([409]).toContain(refused.status);
      const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      expect(report.rounds.map((r: { round: number }) => r.round)).toEqual([1, 2]);
      expect(report.spentEpsilon).toBeCloseTo(eps(2), 8);
      expect(report.rounds[0].epsilonRound).toBeCloseTo(eps(1), 8);
      expect(report.rounds[1].epsilonRound).toBeCloseTo(eps(2) - eps(1), 8);
      expect(report.accountant).toBe('rdp');
      expect(report.spentEpsilon).toBeLessThanOrEqual(budget);
      // No round 3 exists: no node was asked to train.
      expect((await h.nodeGet(a, '/v1/tasks/next')).status).toBe(204);
    });

    it('refuses with BUDGET_EXCEEDED and says why', async (ctx) => {
      if (!h) return ctx.skip();
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: eps(1) * 0.5, central } }));
      await h.enroll(studyId, 'a');
      await h.enroll(studyId, 'b');
      const refused = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe('BUDGET_EXCEEDED');
      expect(refused.body.error.message).toMatch(/over its budget/);
      expect((await h.admin('get', `/v1/studies/${studyId}/privacy`)).body.rounds).toEqual([]);
    });

    it('two rounds started at the same time cannot together overspend', async (ctx) => {
      if (!h) return ctx.skip();
      // Budget for exactly one round; ten concurrent starts.
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central } }));
      await h.enroll(studyId, 'a');
      await h.enroll(studyId, 'b');
      const results = await Promise.all(Array.from({ length: 10 }, () => h!.admin('post', `/v1/studies/${studyId}/rounds`).send({})));
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      expect(results.filter((r) => r.status === 409)).toHaveLength(9);
      const ledger = await h.built.db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute();
      expect(ledger).toHaveLength(1);
      const rounds = await h.built.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).execute();
      expect(rounds).toHaveLength(1);
    });

    it('clips each node\'s update and publishes only the noised aggregate', async (ctx) => {
      if (!h) return ctx.skip();
      const studyId = await h.createStudy(tinyStudy({ rounds: 1, privacy: { accountant: 'pld', delta: 1e-5, central: { noiseMultiplier: 0.5, clipping: { kind: 'fixed', norm: 0.01 }, nodeSamplingRate: 1 } } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await h!.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, weights(1000), defaultMeta(10))).status).toBe(201); // huge: clipped
      expect((await h.submit(b, studyId, 1, weights(0), defaultMeta(10))).status).toBe(201);
      await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      const round = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
      expect(round.updates.find((u: { nodeId: string }) => u.nodeId === a.nodeId).clipped).toBe(true);
      expect(round.mechanism).toMatchObject({ clipNorm: 0.01, noiseMultiplier: 0.5, denominator: 2, privacy: { accountant: 'pld', central: { noiseMultiplier: 0.5 } } });
      const global0 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/0`).buffer(true).parse(bytesOrJson)).body));
      const global1 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
      // The huge update moved the model by at most C/m plus noise (std zC/m = 0.0025 per coordinate).
      let sq = 0;
      for (let t = 0; t < global0.length; t++) for (let i = 0; i < global0[t].values.length; i++) sq += (global1[t].values[i] - global0[t].values[i]) ** 2;
      expect(Math.sqrt(sq)).toBeLessThan(0.01 / 2 + 8 * 0.0025 * Math.sqrt(8));
      // No individual update is stored: only the published aggregate.
      const stored = await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow();
      expect(stored.accumulator).toBeNull();
      const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      expect(report.accountant).toBe('pld');
      expect(report.spentEpsilon).toBeCloseTo(computeEpsilon({ q: 1, sigma: 0.5, steps: 1, delta: 1e-5 }, 'pld'), 6);
    });
  });
}
