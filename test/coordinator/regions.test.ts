import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { verifyArtifact } from '../../protocols/crypto/index.ts';
import { decodeWeights, encodeWeights } from '../../protocols/weights-codec.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { bytesOrJson, defaultMeta, inProcessCoordinator, tinyStudy as harnessStudy, withPublicMetadata, type TestNode, evaluation } from './harness.ts';
/** The fake nodes send defaultMeta (loss, steps, seconds, data counts): DP studies here declare them public (issue 10). */
const tinyStudy: typeof harnessStudy = (overrides = {}) => harnessStudy(withPublicMetadata(overrides));

/** Trained on `numExamples` of `rows` declared rows: the evaluations below fit the nodes' validation share (0.2 x rows + 2). */
const rowsDeclared = (meta: ReturnType<typeof defaultMeta>, rows: number) => ({ ...meta, data: { ...meta.data, rows } });

type Harness = Awaited<ReturnType<typeof inProcessCoordinator>>;

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

async function phaseOf(h: Harness, studyId: string, round: number): Promise<string | undefined> {
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase;
}

/**
 * Regional models, as a regional team (analyst token of a region) sees them: the FedAvg of its
 * own region's local models, published only when enough of the region's nodes took part, never
 * under central DP, readable by that region's analysts and the admin only.
 */
for (const backendName of BACKEND_NAMES) {
  describe(`regional models and metrics on ${backendName}`, () => {
    let h: Harness | undefined;
    const tokens: Record<string, string> = {};
    let studyId: string;
    let eu1: TestNode;
    let eu2: TestNode;
    let us1: TestNode;

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      h = await inProcessCoordinator(backend);
      for (const [name, role, region] of [['eu-team', 'analyst', 'eu'], ['us-team', 'analyst', 'us'], ['apac-team', 'analyst', 'apac'], ['auditor', 'auditor', undefined]] as const) {
        const res = await h.admin('post', '/v1/tokens').send({ role, name, ...(region ? { region } : {}) });
        tokens[name] = res.body.token;
      }
      studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
      eu1 = await h.enroll(studyId, 'eu-1', true, 'eu');
      eu2 = await h.enroll(studyId, 'eu-2', true, 'eu');
      us1 = await h.enroll(studyId, 'us-1', true, 'us');
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'fit' ? true : undefined));
      expect((await h.submit(eu1, studyId, 1, weights(0.2), rowsDeclared(defaultMeta(10), 40))).status).toBe(201);
      // Mid-round, no running sum is written: the update is stored once, and the region's model is folded from it at close (issue 13).
      expect(await h.built.db.selectFrom('regional_accumulators').select('region').where('study_id', '=', studyId).execute()).toEqual([]);
      expect((await h.built.db.selectFrom('round_kept_updates').select('node_id').where('study_id', '=', studyId).execute()).map((r) => r.node_id)).toEqual([eu1.nodeId]);
      expect((await h.submit(eu2, studyId, 1, weights(0.5), rowsDeclared(defaultMeta(30), 40))).status).toBe(201);
      expect((await h.submit(us1, studyId, 1, weights(0.9), rowsDeclared(defaultMeta(5), 20))).status).toBe(201);
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'evaluate' ? true : undefined));
      // eu-1 ranks perfectly, eu-2 perfectly wrong: pooled over the region, AUC 0.5; us-1 perfect.
      const evals: Array<[TestNode, { positives: number[]; negatives: number[] }]> = [
        [eu1, { positives: [0, 3], negatives: [3, 0] }],
        [eu2, { positives: [3, 0], negatives: [0, 3] }],
        [us1, { positives: [0, 2], negatives: [2, 0] }],
      ];
      for (const [node, hist] of evals) {
        const res = await h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation(hist.positives, hist.negatives, 0.4), `${studyId}/1`);
        expect(res.status).toBe(201);
      }
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'completed' ? true : undefined));
    });
    afterAll(async () => h?.close());

    const as = (token: string, path: string) => request(h!.app).get(path).set('authorization', `Bearer ${token}`).buffer(true).parse(bytesOrJson);
    const run = (name: string, fn: (hh: Harness) => Promise<void>) =>
      it(name, async (ctx) => {
        if (!h) return ctx.skip();
        await fn(h);
      });

    run("a region's model is the example-weighted mean of its own nodes' models, signed by the coordinator", async (h) => {
      const res = await as(tokens['eu-team'], `/v1/studies/${studyId}/regions/eu/model`);
      expect(res.status).toBe(200);
      const model = decodeWeights(new Uint8Array(res.body));
      // (0.2 x 10 + 0.5 x 30) / 40 = 0.425; the US node's 0.9 is not in it
      for (const t of model) for (const v of t.values) expect(v).toBeCloseTo(0.425, 6);
      const signature = Buffer.from(String(res.headers['fedmark-model-signature']), 'base64').toString('utf8');
      expect(await verifyArtifact(new Uint8Array(res.body), signature, h.built.keyring.current.publicKey)).toBe(true);
      // The global model is everyone's mean: (2 + 15 + 4.5) / 45
      const global = decodeWeights(new Uint8Array((await as(tokens['eu-team'], `/v1/studies/${studyId}/model`)).body));
      expect(global[0].values[0]).toBeCloseTo(21.5 / 45, 6);
      // Running sums are gone once the round is aggregated: only published models persist.
      expect(await h.built.db.selectFrom('regional_accumulators').selectAll().where('study_id', '=', studyId).execute()).toEqual([]);
    });

    run("a region's metrics: its nodes, their loss and the global model's AUC on its own held-out rows", async () => {
      const res = await as(tokens['eu-team'], `/v1/studies/${studyId}/regions/eu`);
      expect(res.status).toBe(200);
      expect(res.body.nodes.map((n: { name: string }) => n.name)).toEqual(['eu-1', 'eu-2']);
      const [round] = res.body.rounds;
      expect(round).toMatchObject({ round: 1, phase: 'completed', nodes: 2, numExamples: 40, regionalModel: { version: 1, nodes: 2, numExamples: 40 }, regionalModelWithheld: null });
      expect(round.meanLoss).toBeCloseTo(0.5, 10);
      expect(round.globalValidationAuc).toBeCloseTo(0.5, 10);
      const us = await as(tokens['us-team'], `/v1/studies/${studyId}/regions/us`);
      expect(us.body.rounds[0].globalValidationAuc).toBeCloseTo(1, 10);
    });

    run('a region with a single contributing node gets no regional model: it would be that partner\'s own model', async () => {
      const report = await as(tokens['us-team'], `/v1/studies/${studyId}/regions/us`);
      expect(report.body.rounds[0].regionalModel).toBeNull();
      expect(report.body.rounds[0].regionalModelWithheld).toMatch(/only 1 node\(s\) of region us reported; a regional model needs at least 2/);
      const model = await as(tokens['us-team'], `/v1/studies/${studyId}/regions/us/model`);
      expect(model.status).toBe(404);
      // The round record says so too (for auditors), with counts only.
      const round = await as(tokens.auditor, `/v1/studies/${studyId}/rounds/1`);
      expect(JSON.stringify(round.body)).toMatch(/only 1 node\(s\) of region us/);
    });

    run("one region's team cannot read another region's model or metrics; auditors read metrics, never weights", async () => {
      expect((await as(tokens['us-team'], `/v1/studies/${studyId}/regions/eu/model`)).status).toBe(403);
      expect((await as(tokens['us-team'], `/v1/studies/${studyId}/regions/eu`)).status).toBe(403);
      expect((await as(tokens.auditor, `/v1/studies/${studyId}/regions/eu`)).status).toBe(200);
      expect((await as(tokens.auditor, `/v1/studies/${studyId}/regions/eu/model`)).status).toBe(403);
      expect((await h!.nodeGet(eu1, `/v1/studies/${studyId}/regions/eu/model`)).status).toBe(403);
      // A region with no node in the study does not read the study's global models either.
      const apac = await as(tokens['apac-team'], `/v1/studies/${studyId}/model`);
      expect(apac.status).toBe(403);
      expect(apac.body.error.message).toMatch(/region apac has no node in study/);
      expect((await as(tokens['eu-team'], `/v1/studies/${studyId}/regions/eu/model?version=abc`)).status).toBe(400);
    });

    run('under central DP no regional model is made: only the noised global aggregate exists', async (h) => {
      const dpStudy = await h.createStudy(
        tinyStudy({ rounds: 1, minNodesToStart: 2, roundDeadlineSeconds: 600, privacy: { central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } } }),
      );
      const a = await h.enroll(dpStudy, 'dp-a', true, 'eu');
      const b = await h.enroll(dpStudy, 'dp-b', true, 'eu');
      await h.until(async () => ((await phaseOf(h, dpStudy, 1)) === 'fit' ? true : undefined));
      expect((await h.submit(a, dpStudy, 1, weights(0.3), defaultMeta(10))).status).toBe(201);
      expect(await h.built.db.selectFrom('regional_accumulators').selectAll().where('study_id', '=', dpStudy).execute()).toEqual([]);
      expect((await h.submit(b, dpStudy, 1, weights(0.3), defaultMeta(10))).status).toBe(201);
      await h.until(async () => ((await phaseOf(h, dpStudy, 1)) === 'evaluate' ? true : undefined));
      expect((await as(tokens['eu-team'], `/v1/studies/${dpStudy}/regions/eu/model`)).status).toBe(404);
      expect(await h.built.db.selectFrom('regional_models').selectAll().where('study_id', '=', dpStudy).execute()).toEqual([]);
    });
  });
}
