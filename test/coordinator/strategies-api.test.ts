import { expect } from 'vitest';
import { encodeWeights, decodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeServerState } from '../../protocols/strategies/server-state.ts';
import { bytesOrJson, defaultMeta, describeOnEachBackend, evaluation, tinyStudy } from './harness.ts';

const weights = (values: number[]): WeightSet => [
  { name: 'dense_0/kernel', shape: [7, 1], values: Float32Array.from(values.slice(0, 7)) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([values[7]]) },
];
const fill = (x: number) => weights(new Array(8).fill(x));

/**
 * The coordinator's side of core v2 through its HTTP API, on PGlite and PostgreSQL: strategy
 * configs validated at creation, per-node instructions in tasks, robust strategies storing each
 * update once, server state carried in the round record, evaluation reports checked against the
 * study's kind, and the study's release list enforced again at the edge.
 */
describeOnEachBackend('strategies and kinds through the API', (run) => {
  run('a bad strategy parameter is a 400 naming the field, never a 500', async (h) => {
    const cases: Array<[unknown, string]> = [
      [{ strategy: { name: 'fedprox', mu: -0.1 } }, 'body.strategy.mu'],
      [{ strategy: { name: 'trimmed-mean', trimFraction: 0.5 } }, 'body.strategy.trimFraction'],
      // The default 0.1 trims nothing below 10 nodes: a plain mean in disguise is refused.
      [{ strategy: { name: 'trimmed-mean' }, minNodesPerRound: 3 }, 'body.strategy.trimFraction'],
      [{ strategy: { name: 'krum', byzantine: 0, select: 4 }, minNodesPerRound: 3 }, 'body.strategy.select'],
      [{ strategy: { name: 'krum', byzantine: 2 }, minNodesPerRound: 5 }, 'body.strategy.byzantine'],
      [{ strategy: { name: 'median' }, privacy: { central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } }, 'body.strategy.name'],
      [{ strategy: { name: 'fedsgd' } }, 'body.strategy.name'],
      [{ task: { kind: 'regression' } }, 'body.features.target'],
      [{ task: { kind: 'regression', loss: 'tweedie' }, features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: 0, scale: 1 } } }, 'body.features.target.center'],
      [{ task: { kind: 'regression', loss: 'log1p' }, features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: -2, scale: 1 } } }, 'body.features.target.center'],
      [{ task: { kind: 'regression', loss: 'mse' }, features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: 5, scale: 1, transform: 'log' } } }, 'body.features.target.transform'],
    ];
    for (const [overrides, field] of cases) {
      const res = await h.admin('post', '/v1/studies').send({ ...tinyStudy(), ...(overrides as object) });
      expect(res.status, JSON.stringify(overrides)).toBe(400);
      expect(res.body.error.field).toBe(field);
    }
    const ok = await h.admin('post', '/v1/studies').send({ ...tinyStudy(), strategy: { name: 'fedadam' } });
    expect(ok.status).toBe(201);
    // Defaults are applied and shown back.
    const created = (await h.admin('get', `/v1/studies/${ok.body.id}`)).body;
    expect(created.config.strategy).toEqual({ name: 'fedadam', serverLearningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
  });

  run('FedProx sends its mu to every node in the fit task; the server state is stored with the round', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ strategy: { name: 'fedprox', mu: 0.25 }, training: { localEpochs: 3, learningRate: 0.05 } }));
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    const task = await h.until(async () => {
      const res = await h.nodeGet(a, '/v1/tasks/next?wait=1');
      return res.status === 200 ? res.body : undefined;
    });
    expect(task.kind).toBe('fit');
    expect(task.instructions).toEqual({ localEpochs: 3, learningRate: 0.05, batchSize: 32, proximalMu: 0.25 });
    const row = await h.built.db.selectFrom('rounds').select(['server_state', 'instructions']).where('study_id', '=', studyId).executeTakeFirstOrThrow();
    expect(decodeServerState(new Uint8Array(row.server_state!))).toEqual({ scalars: {}, tensors: {} });
    expect(Object.keys(row.instructions!).sort()).toEqual([a.nodeId, b.nodeId].sort());
  });

  run('median keeps each update once, ignores claimed counts, and a 1000x update cannot move the model past the honest ones', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ strategy: { name: 'median' }, minNodesPerRound: 3, minNodesToStart: 3 }));
    const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await h.nodeGet(nodes[0], '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
    expect((await h.submit(nodes[0], studyId, 1, encodeWeights(fill(0.1)), defaultMeta(10))).status).toBe(201);
    expect((await h.submit(nodes[1], studyId, 1, encodeWeights(fill(0.3)), defaultMeta(10))).status).toBe(201);
    const kept = await h.built.db.selectFrom('round_kept_updates').select(['seq', 'node_id']).where('study_id', '=', studyId).orderBy('seq').execute();
    expect(kept).toEqual([
      { seq: 0, node_id: nodes[0].nodeId },
      { seq: 1, node_id: nodes[1].nodeId },
    ]);
    // The attacker: 1000x the honest scale and a huge example count.
    expect((await h.submit(nodes[2], studyId, 1, encodeWeights(fill(300)), defaultMeta(2_000_000_000))).status).toBe(201);
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
    const model = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
    for (const t of model) for (const v of t.values) expect(v).toBeCloseTo(0.3, 6);
    // Only published models persist: the kept updates are gone once the round aggregated.
    expect(await h.built.db.selectFrom('round_kept_updates').selectAll().where('study_id', '=', studyId).execute()).toHaveLength(0);
  });

  run('an evaluation is checked against the study: its kind, its row count, the histogram resolution', async (h) => {
    const studyId = await h.createStudy(tinyStudy());
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
    // 30 declared rows: a validation share (0.2) of at most 8 rows, room for the 6-row reports below.
    await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), defaultMeta(30));
    await h.submit(b, studyId, 1, encodeWeights(fill(0.2)), defaultMeta(30));
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
    const post = (body: unknown) => h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, body, `${studyId}/1`);
    const good = evaluation([0, 1, 2], [2, 1, 0], 0.4);
    const regression = { numExamples: 6, stats: { kind: 'regression', n: 6, sumY: 1, sumY2: 1, sumError: 0, sse: 1, sae: 1, baselineSae: 1 } };
    const coarse = { ...good, stats: { ...good.stats, histogram: { bins: 3, positives: [0, 1, 2], negatives: [2, 1, 0] } } };
    const tooMany = { ...good, numExamples: 600 };
    for (const [body, field] of [
      [regression, 'stats.kind'],
      [coarse, 'stats.histogram.bins'],
      [tooMany, 'numExamples'],
    ] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(res.body.error.field).toBe(field);
    }
    expect(await h.built.db.selectFrom('evaluations').selectAll().where('study_id', '=', studyId).execute()).toHaveLength(0);
    expect((await post(good)).status).toBe(201);
    expect((await post(good)).status).toBe(200);
    await h.nodePost(b, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([1, 1, 1], [1, 1, 1], 0.6), `${studyId}/1`);
    const round = await h.until(async () => {
      const r = (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0];
      return r?.phase === 'completed' ? r : undefined;
    });
    // Pooled from sufficient statistics: 12 rows, AUC of the summed histograms.
    expect(round.validationMetrics.n).toBe(12);
    expect(round.validationMetrics.auc).toBeCloseTo(round.validationAuc, 12);
    expect(round.validationMetrics).toHaveProperty('brier');
    expect(round.validationMetrics).toHaveProperty('logLoss');
  });

  run("a field off the study's release list is refused at the coordinator too, and nothing of it is stored", async (h) => {
    const release = ['update.weights', 'update.numExamples', 'evaluation.numExamples', 'evaluation.stats', 'update.steps'];
    const studyId = await h.createStudy(tinyStudy({ release: release as never }));
    const a = await h.enroll(studyId, 'a');
    await h.enroll(studyId, 'b');
    await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
    const withLoss = await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), { numExamples: 10, loss: 0.5, steps: 1 });
    expect(withLoss.status).toBe(400);
    expect(withLoss.body.error.field).toBe('update.loss');
    expect(await h.built.db.selectFrom('updates').selectAll().where('study_id', '=', studyId).execute()).toHaveLength(0);
    const lean = await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), { numExamples: 10, steps: 1 });
    expect(lean.status).toBe(201);
    const stored = await h.built.db.selectFrom('updates').select(['loss']).where('study_id', '=', studyId).executeTakeFirstOrThrow();
    expect(stored.loss).toBeNull();
  });
});
