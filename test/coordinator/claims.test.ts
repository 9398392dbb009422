import { describe, expect, it } from 'vitest';
import { StudyConfig } from '../../protocols/messages.ts';
import { maxValidationRows } from '../../coordinator/rounds/claims.ts';
import { MAX_EXAMPLE_COUNT } from '../../protocols/messages.ts';
import { l2Norm, subtract, type WeightSet } from '../../protocols/tensors.ts';
import { decodeWeights, encodeWeights } from '../../protocols/weights-codec.ts';
import { bytesOrJson, defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

/** The tiny study's logistic regression: 7 inputs. */
const weights = (values: number[]): WeightSet => [
  { name: 'dense_0/kernel', shape: [7, 1], values: Float32Array.from(values.slice(0, 7)) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([values[7]]) },
];
const fill = (x: number) => weights(new Array(8).fill(x));
/** global + factor x (delta, the same in every coordinate). */
const along = (global: WeightSet, delta: number, factor = 1): WeightSet => global.map((t) => ({ ...t, values: Float32Array.from(t.values, (g) => g + factor * delta) }));

const dataReport = (rows: number) => ({ rows, missingFilled: {}, unseenCategories: {} });
const meta = (numExamples: number, rows = numExamples) => ({ ...defaultMeta(numExamples), data: dataReport(rows) });

async function declare(h: Harness, node: TestNode, rows: number) {
  const res = await h.nodePost(node, '/v1/nodes/me/status', { state: 'ready', data: dataReport(rows) });
  expect(res.status).toBe(204);
}

async function started(h: Harness, config: Parameters<Harness['createStudy']>[0], declared: number[] = []) {
  const studyId = await h.createStudy(config);
  const a = await h.enroll(studyId, 'a');
  const b = await h.enroll(studyId, 'b');
  if (declared.length) {
    await declare(h, a, declared[0]);
    await declare(h, b, declared[1]);
  }
  await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
  return { studyId, a, b };
}

async function model(h: Harness, studyId: string, version: number): Promise<WeightSet> {
  const res = await h.admin('get', `/v1/studies/${studyId}/models/${version}`).buffer(true).parse(bytesOrJson);
  expect(res.status).toBe(200);
  return decodeWeights(new Uint8Array(res.body as Buffer));
}

async function roundOne(h: Harness, studyId: string, phases: string[]) {
  return h.until(async () => {
    const r = (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0];
    return phases.includes(r?.phase) ? r : undefined;
  });
}

async function auditOf(h: Harness, studyId: string, kind: string): Promise<Array<Record<string, unknown>>> {
  const rows = await h.built.db.selectFrom('audit_log').select(['data', 'actor']).where('study_id', '=', studyId).where('kind', '=', kind).orderBy('seq').execute();
  return rows.map((r) => ({ actor: r.actor, ...(JSON.parse(r.data) as Record<string, unknown>) }));
}

const storedUpdates = (h: Harness, studyId: string) => h.built.db.selectFrom('updates').select(['node_id', 'num_examples']).where('study_id', '=', studyId).execute();

/**
 * Node claims are bounded and checked (issue 11, item 1), through the real coordinator over HTTP
 * on PGlite and PostgreSQL: each attack of the issue, and the bound that stops it.
 */
describeOnEachBackend('node claims are bounded and checked', (run) => {
  run('a count above the rows the node declared is refused (400 numExamples), nothing stored; counts past 2^31 are a 400, never a 500', async (h) => {
    const { studyId, a } = await started(h, tinyStudy({ rounds: 1 }), [100, 100]);
    // The takeover: 2e9 claimed by a node whose data report says 100 rows.
    for (const claim of [meta(2_000_000_000, 100), meta(2_000_000_000)]) {
      const res = await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), claim);
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ field: 'numExamples', code: 'COUNT_OUT_OF_BOUNDS' });
      expect(res.body.error.message).toMatch(/numExamples 2000000000 is more than the 100 rows this node declared/);
    }
    for (const claim of [meta(MAX_EXAMPLE_COUNT + 1, 100), meta(2 ** 53, 100)]) {
      const res = await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), claim);
      expect(res.status).toBe(400);
      expect(res.body.error.field).toMatch(/numExamples/);
    }
    expect(await storedUpdates(h, studyId)).toEqual([]);
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), meta(80, 100))).status).toBe(201);
  });

  run('a declared count weighs at most bounds.maxExamplesPerNode; the weight used is audited', async (h) => {
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1, bounds: { maxExamplesPerNode: 1000 } }), [5000, 100]);
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(1)), meta(5000))).status).toBe(201);
    expect((await h.submit(b, studyId, 1, encodeWeights(fill(0)), meta(100))).status).toBe(201);
    await roundOne(h, studyId, ['evaluate']);
    // (1000 x 1 + 100 x 0) / 1100, not 5000 / 5100.
    for (const t of await model(h, studyId, 1)) for (const v of t.values) expect(v).toBeCloseTo(1000 / 1100, 6);
    const received = await auditOf(h, studyId, 'update.received');
    expect(received.find((e) => e.nodeId === a.nodeId)).toMatchObject({ numExamples: 5000, weight: 1000 });
    expect(received.find((e) => e.nodeId === b.nodeId)).toMatchObject({ numExamples: 100, weight: 100 });
  });

  run('under DP-SGD counts are not weights: every update counts once', async (h) => {
    const dpSgd = { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 };
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1, privacy: { accountant: 'rdp', delta: 1e-5, dpSgd } }));
    // Only the counts: a DP study releases no exact field it does not declare public.
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), { numExamples: 1 })).status).toBe(201);
    // A larger count is either refused outright (issue 10: under DP the count is the public
    // constant 1) or accepted with weight 1; either way it cannot weigh more.
    const larger = await h.submit(b, studyId, 1, encodeWeights(fill(0.5)), { numExamples: 30 });
    if (larger.status === 400) {
      expect(larger.body.error).toMatchObject({ field: 'numExamples', code: 'COUNT_OUT_OF_BOUNDS' });
      expect((await h.submit(b, studyId, 1, encodeWeights(fill(0.5)), { numExamples: 1 })).status).toBe(201);
    } else expect(larger.status).toBe(201);
    await roundOne(h, studyId, ['evaluate']);
    for (const t of await model(h, studyId, 1)) for (const v of t.values) expect(v).toBeCloseTo(0.3, 6);
    expect((await auditOf(h, studyId, 'update.received')).map((e) => e.weight)).toEqual([1, 1]);
  });

  run('an oversized update (-1000 x its delta, an honest count) is clipped to maxUpdateNorm and audited with its norm', async (h) => {
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1 }));
    const global = await model(h, studyId, 0);
    expect((await h.submit(a, studyId, 1, encodeWeights(along(global, 0.1, -1000)), defaultMeta(10))).status).toBe(201);
    expect((await h.submit(b, studyId, 1, encodeWeights(along(global, 0.1)), defaultMeta(10))).status).toBe(201);
    await roundOne(h, studyId, ['evaluate']);
    const honest = 0.1 * Math.sqrt(8);
    // The mean of the clipped attack (norm 20) and the honest delta: at most (20 + honest) / 2,
    // where the raw attack would have moved the model by ~(1000 - 1) x honest / 2.
    const moved = l2Norm(subtract(await model(h, studyId, 1), global));
    expect(moved).toBeLessThanOrEqual((20 + honest) / 2 + 1e-4);
    expect(moved).toBeGreaterThan(9);
    const attack = (await auditOf(h, studyId, 'update.received')).find((e) => e.nodeId === a.nodeId)!;
    expect(attack.clippedTo).toBe(20);
    expect(attack.deltaNormBefore as number).toBeCloseTo(1000 * honest, 2);
    expect(attack.deltaNorm as number).toBeCloseTo(20, 4);
  });

  run("with onOversizedUpdate 'refuse' the oversized update is a 400 naming its norm, audited, nothing stored", async (h) => {
    const { studyId, a } = await started(h, tinyStudy({ rounds: 1, bounds: { maxUpdateNorm: 5, onOversizedUpdate: 'refuse' } }));
    const global = await model(h, studyId, 0);
    const res = await h.submit(a, studyId, 1, encodeWeights(along(global, 0.1, -1000)), defaultMeta(10));
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'UPDATE_NORM_OUT_OF_BOUNDS', field: 'body' });
    expect(res.body.error.message).toMatch(/L2 norm 282\.84\d*, above the study's bound 5/);
    expect(await storedUpdates(h, studyId)).toEqual([]);
    const refused = await h.built.db.selectFrom('audit_log').select('data').where('kind', '=', 'request.refused').where('actor', '=', `node:${a.nodeId}`).execute();
    expect(refused.map((r) => JSON.parse(r.data))).toContainEqual(expect.objectContaining({ code: 'UPDATE_NORM_OUT_OF_BOUNDS', reason: expect.stringMatching(/L2 norm 282\.84/) }));
    // Within the bound: accepted.
    expect((await h.submit(a, studyId, 1, encodeWeights(along(global, 0.1)), defaultMeta(10))).status).toBe(201);
  });

  run('weights of 1e37 are clipped at intake; non-finite weights are a 400', async (h) => {
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1 }));
    const nan = encodeWeights(fill(0.5));
    new DataView(nan.buffer, nan.byteOffset).setFloat32(nan.length - 4, Number.NaN, true);
    const bad = await h.submit(a, studyId, 1, nan, defaultMeta(10));
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('body');
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(1e37)), defaultMeta(10))).status).toBe(201);
    expect((await h.submit(b, studyId, 1, encodeWeights(fill(0.1)), defaultMeta(10))).status).toBe(201);
    await roundOne(h, studyId, ['evaluate']);
    for (const t of await model(h, studyId, 1)) for (const v of t.values) expect(Math.abs(v)).toBeLessThan(20);
  });

  run('an aggregate with |w| above maxAbsWeight is never published: the round fails, the previous model stays current, audited', async (h) => {
    // A norm bound loose enough to let 1e37 through: the model guard is the last line.
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1, bounds: { maxUpdateNorm: 1e300, maxAbsWeight: 1e4 } }));
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(1e37)), defaultMeta(10))).status).toBe(201);
    expect((await h.submit(b, studyId, 1, encodeWeights(fill(0.1)), defaultMeta(10))).status).toBe(201);
    const round = await roundOne(h, studyId, ['failed', 'evaluate', 'completed']);
    expect(round.phase).toBe('failed');
    expect(round.failureReason).toMatch(/^model-out-of-range: the aggregate's tensor "dense_0\/kernel" has \|w\| = 5\.000e\+36 > 10000/);
    const [v0, v1] = [await model(h, studyId, 0), await model(h, studyId, 1)];
    expect(v1).toEqual(v0);
    expect(await auditOf(h, studyId, 'aggregate.published')).toEqual([]);
    expect((await auditOf(h, studyId, 'round.failed'))[0].reason).toMatch(/^model-out-of-range/);
  });

  run('bounds: null is the legacy behaviour, with a warning at creation', async (h) => {
    const res = await h.admin('post', '/v1/studies').send(tinyStudy({ rounds: 1, bounds: null }));
    expect(res.status).toBe(201);
    expect(res.body.warnings).toEqual([expect.stringMatching(/bounds is null: node claims are not bounded/)]);
    const plain = await h.admin('post', '/v1/studies').send(tinyStudy({ rounds: 1 }));
    expect(plain.body.warnings).toBeUndefined();
    expect((await h.admin('get', `/v1/studies/${plain.body.id}`)).body.config.bounds).toEqual({ maxExamplesPerNode: 1_000_000, maxUpdateNorm: 20, onOversizedUpdate: 'clip', maxAbsWeight: 1e4 });
    // Unbounded claims, but the schema still refuses a count of 2^31 or more: a 400, never a 500.
    const { studyId, a } = await started(h, tinyStudy({ rounds: 1, bounds: null }));
    const huge = await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), meta(2 ** 31));
    expect(huge.status).toBe(400);
    expect(huge.body.error.field).toMatch(/numExamples/);
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), meta(2_000_000_000, 100))).status).toBe(201);
  });

  run("a fabricated evaluation (2,000,000 perfectly separated rows) is refused: more than the node's validation share", async (h) => {
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1 }));
    await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), meta(30));
    await h.submit(b, studyId, 1, encodeWeights(fill(0.2)), meta(30));
    await roundOne(h, studyId, ['evaluate']);
    const post = (node: TestNode, body: unknown) => h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, body, `${studyId}/1`);
    const fake = evaluation([0, 1_000_000], [1_000_000, 0], 0);
    const res = await post(a, fake);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ field: 'numExamples', code: 'EVALUATION_OUT_OF_BOUNDS' });
    expect(res.body.error.message).toMatch(/numExamples 2000000 is more than this node's validation share of its 30 declared rows \(at most 22 /);
    // Just past the share (ceil(0.2 x 30 + 6 sd) + 2 = 22 rows): refused too; at it: accepted.
    expect((await post(a, evaluation([0, 10, 3], [5, 5, 0], 0.5))).status).toBe(400);
    expect(await h.built.db.selectFrom('evaluations').selectAll().where('study_id', '=', studyId).execute()).toEqual([]);
    expect((await post(a, evaluation([0, 10, 2], [5, 5, 0], 0.5))).status).toBe(201);
    expect((await post(b, evaluation([0, 1, 2], [2, 1, 0], 0.5))).status).toBe(201);
    const round = await roundOne(h, studyId, ['completed']);
    expect(round.validationMetrics.n).toBe(28);
  });

  run('counts summing past 2^31 are stored (BIGINT): the round aggregates and reads back as numbers', async (h) => {
    const big = 1_500_000_000;
    const { studyId, a, b } = await started(h, tinyStudy({ rounds: 1, bounds: { maxExamplesPerNode: MAX_EXAMPLE_COUNT } }), [big, big]);
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), meta(big))).status).toBe(201);
    expect((await h.submit(b, studyId, 1, encodeWeights(fill(0.3)), meta(big))).status).toBe(201);
    const round = await roundOne(h, studyId, ['evaluate', 'completed', 'failed']);
    expect(round).toMatchObject({ phase: 'evaluate', numExamples: 2 * big });
    const stored = await h.built.db.selectFrom('rounds').select('num_examples').where('study_id', '=', studyId).executeTakeFirstOrThrow();
    expect(stored.num_examples).toBe(3_000_000_000);
    expect((await storedUpdates(h, studyId)).map((u) => u.num_examples)).toEqual([big, big]);
  });

  run('a node that rejected the model or whose training failed is not waited for', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
    const [a, b, c] = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
    expect((await h.submit(a, studyId, 1, encodeWeights(fill(0.1)), defaultMeta(10))).status).toBe(201);
    expect((await h.submit(c, studyId, 1, encodeWeights(fill(0.1)), defaultMeta(10))).status).toBe(201);
    expect((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0].phase).toBe('fit');
    const rejected = await h.nodePost(b, '/v1/nodes/me/status', { state: 'model-rejected', message: 'global model v0 is signed but out of range' });
    expect(rejected.status).toBe(204);
    // Long before the 600 s deadline: b said it cannot train.
    const round = await roundOne(h, studyId, ['evaluate', 'completed']);
    expect(round.updatesReceived).toBe(2);
    const status = (await h.admin('get', `/v1/studies/${studyId}`)).body;
    expect(status.nodes.find((n: { id: string }) => n.id === b.nodeId)).toMatchObject({ state: 'model-rejected', message: 'global model v0 is signed but out of range' });
    expect((await h.nodePost(b, '/v1/nodes/me/status', { state: 'training-failed', message: 'the training loss is NaN' })).status).toBe(204);
  });
});

/**
 * The evaluation bound never refuses an honest node: the node's validation count is
 * Binomial(rows, fraction) (a keyed hash per row), and the exact upper tail above the bound is
 * below 1e-6 at every size.
 */
describe('the validation share bound', () => {
  it('an honest binomial split exceeds it with probability below 1e-6 (exact tail)', () => {
    for (const fraction of [0.05, 0.1, 0.2, 0.3, 0.37, 0.5]) {
      const config = StudyConfig.parse({ ...tinyStudy(), training: { validationFraction: fraction } });
      for (let n = 1; n <= 5000; n += n < 60 ? 1 : 37) {
        const bound = maxValidationRows(config, n);
        // P(X > bound) for X ~ Binomial(n, fraction), summed in log space.
        let tail = 0;
        let logC = 0;
        for (let k = 0; k <= n; k++) {
          if (k > 0) logC += Math.log((n - k + 1) / k);
          if (k > bound) tail += Math.exp(logC + k * Math.log(fraction) + (n - k) * Math.log(1 - fraction));
        }
        expect(tail, `n ${n}, fraction ${fraction}, bound ${bound}`).toBeLessThan(1e-6);
      }
    }
  });

  it('bounds a fabricated count: a node of 400 rows at fraction 0.2 may report at most 130', () => {
    const config = StudyConfig.parse({ ...tinyStudy(), training: { validationFraction: 0.2 } });
    expect(maxValidationRows(config, 400)).toBe(130);
  });

  it('a recommend study (leave-last-out, one report row per user of >= 2 interactions) may report half its rows, whatever validationFraction says', () => {
    const config = { ...StudyConfig.parse({ ...tinyStudy(), training: { validationFraction: 0.2 } }), task: { kind: 'recommend' } } as unknown as StudyConfig;
    expect(maxValidationRows(config, 401)).toBe(200);
    expect(maxValidationRows(config, 400)).toBe(200);
  });
});
