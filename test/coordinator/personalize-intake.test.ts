import { expect } from 'vitest';
import { RELEASE_FIELDS, type StudyConfigInput } from '../../protocols/messages.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { defaultMeta, describeOnEachBackend, evaluation, noisedEvaluation, tinyStudy, withPublicMetadata, type Harness, type TestNode } from './harness.ts';

/**
 * Regional personalization at the coordinator (issue 9 s3; coordinator/rounds/personalized-evaluation.ts):
 * a node's evaluation may carry `personalized: { numExamples, stats }` (release field
 * evaluation.personalized), checked like `stats`, stored, and pooled at the round's close into
 * personalizedMetrics, personalizedNodes and globalOnPersonalizedMetrics (the global model over
 * the SAME nodes), through the real coordinator over HTTP on PGlite and PostgreSQL.
 */

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

const phaseOf = async (h: Harness, studyId: string) => (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase as string | undefined;

/** A one-round study with nodes a and b in its evaluation phase. */
async function evaluating(h: Harness, overrides: Partial<StudyConfigInput> = {}) {
  const studyId = await h.createStudy(tinyStudy({ rounds: 1, ...withPublicMetadata(overrides) }));
  const a = await h.enroll(studyId, 'a');
  const b = await h.enroll(studyId, 'b');
  await h.until(async () => ((await phaseOf(h, studyId)) === 'fit' ? true : undefined));
  for (const [n, v] of [[a, 0.1], [b, 0.2]] as const) expect((await h.submit(n, studyId, 1, weights(v), defaultMeta(50))).status).toBe(201);
  await h.until(async () => ((await phaseOf(h, studyId)) === 'evaluate' ? true : undefined));
  const post = (node: TestNode, body: unknown) => h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, body, `${studyId}/1`);
  return { studyId, a, b, post };
}

const completedRound = async (h: Harness, studyId: string) => {
  await h.until(async () => ((await phaseOf(h, studyId)) === 'completed' ? true : undefined));
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0];
};

const roundCompletedAudit = async (h: Harness, studyId: string) => {
  const row = await h.built.db.selectFrom('audit_log').select('data').where('study_id', '=', studyId).where('kind', '=', 'round.completed').executeTakeFirstOrThrow();
  return JSON.parse(row.data) as Record<string, unknown>;
};

describeOnEachBackend('personalized evaluations at the coordinator', (run) => {
  run('pools the personalized statistics of the nodes that sent them, beside the global model over those same nodes', async (h) => {
    const { studyId, a, b, post } = await evaluating(h);
    // Node a: the global model ranks its rows at random (AUC 0.5), its fine-tuned copy perfectly (1).
    const aGlobal = evaluation([2, 2], [2, 2], 0.6);
    const aPersonal = evaluation([0, 4], [4, 0]);
    expect((await post(a, { ...aGlobal, personalized: { numExamples: aPersonal.numExamples, stats: aPersonal.stats } })).status).toBe(201);
    // Node b sends none; its global evaluation is near perfect (pooled with a's: 0.75 < 1, > 0.5).
    expect((await post(b, evaluation([0, 4], [4, 0], 0.3))).status).toBe(201);
    const round = await completedRound(h, studyId);
    expect(round.personalizedNodes).toBe(1);
    expect(round.personalizedMetrics.auc).toBeCloseTo(1, 12);
    expect(round.personalizedMetrics.n).toBe(8);
    // The global model over the SAME node (a), not over every node.
    expect(round.globalOnPersonalizedMetrics.auc).toBeCloseTo(0.5, 12);
    expect(round.globalOnPersonalizedMetrics.n).toBe(8);
    expect(round.validationMetrics.auc).toBeCloseTo(0.75, 12);
    expect(round.validationMetrics.n).toBe(16);
    const audit = await roundCompletedAudit(h, studyId);
    expect(audit).toMatchObject({ personalizedNodes: 1, personalizedMetrics: round.personalizedMetrics, globalOnPersonalizedMetrics: round.globalOnPersonalizedMetrics });
    const stored = await h.built.db.selectFrom('evaluations').select(['node_id', 'personalized_num_examples']).where('study_id', '=', studyId).orderBy('node_id').execute();
    expect(Object.fromEntries(stored.map((r) => [r.node_id, r.personalized_num_examples === null ? null : Number(r.personalized_num_examples)]))).toEqual({ [a.nodeId]: 8, [b.nodeId]: null });
  });

  run('reports are stored as json (migration 0023: no jsonb tree to build per report); a retry with its keys reordered is the same report', async (h) => {
    const { studyId, a, b, post } = await evaluating(h);
    const { sql } = await import('kysely');
    const { rows } = await sql<{ column_name: string; data_type: string }>`
      select column_name, data_type from information_schema.columns where table_name = 'evaluations' and column_name in ('stats', 'personalized_stats') order by column_name`.execute(h.built.db);
    expect(rows).toEqual([{ column_name: 'personalized_stats', data_type: 'json' }, { column_name: 'stats', data_type: 'json' }]);
    const sent = { ...evaluation([2, 2], [2, 2], 0.6), personalized: { numExamples: 8, stats: evaluation([0, 4], [4, 0]).stats } };
    expect((await post(a, sent)).status).toBe(201);
    const reordered = JSON.parse(JSON.stringify(sent, (_k, v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v)));
    expect(Object.keys(reordered.stats)).not.toEqual(Object.keys(sent.stats));
    expect((await post(a, reordered)).status).toBe(200);
    expect((await post(b, evaluation([0, 4], [4, 0], 0.3))).status).toBe(201);
    const round = await completedRound(h, studyId);
    expect([round.validationMetrics.auc, round.validationMetrics.n, round.personalizedNodes]).toEqual([0.75, 16, 1]);
  });

  run('a round without any personalized report says none: 0 nodes, null metrics, nothing in the audit entry', async (h) => {
    const { studyId, a, b, post } = await evaluating(h);
    for (const n of [a, b]) expect((await post(n, evaluation([1, 3], [3, 1], 0.5))).status).toBe(201);
    const round = await completedRound(h, studyId);
    expect([round.personalizedNodes, round.personalizedMetrics, round.globalOnPersonalizedMetrics]).toEqual([0, null, null]);
    expect(await roundCompletedAudit(h, studyId)).not.toHaveProperty('personalizedNodes');
  });

  run('a personalized part is checked like the statistics: kind, bins, rows, the same count; refused with its field, nothing stored', async (h) => {
    const { studyId, a, post } = await evaluating(h);
    const global = evaluation([2, 2], [2, 2], 0.6);
    const cases: Array<[unknown, string]> = [
      [{ numExamples: 8, stats: { kind: 'regression', n: 8, sumY: 1, sumY2: 1, sumError: 0, sse: 1, sae: 1, baselineSae: 1 } }, 'personalized.stats.kind'],
      [{ numExamples: 8, stats: { ...global.stats, histogram: { bins: 2, positives: [0, 4], negatives: [4, 0] } } }, 'personalized.stats.histogram.bins'],
      [{ numExamples: 9, stats: evaluation([0, 4], [4, 0]).stats }, 'personalized.numExamples'],
      [{ numExamples: 6, stats: evaluation([0, 3], [3, 0]).stats }, 'personalized.numExamples'],
    ];
    for (const [personalized, field] of cases) {
      const res = await post(a, { ...global, personalized });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(String(res.body.error.field)).toMatch(new RegExp(`^${field.replace(/\./g, '\\.')}`));
    }
    expect(await h.built.db.selectFrom('evaluations').selectAll().where('study_id', '=', studyId).execute()).toEqual([]);
    // A retry must match what was stored, the personalized part included.
    const good = { ...global, personalized: { numExamples: 8, stats: evaluation([0, 4], [4, 0]).stats } };
    expect((await post(a, good)).status).toBe(201);
    expect((await post(a, good)).status).toBe(200);
    expect((await post(a, { ...global, personalized: { numExamples: 8, stats: evaluation([1, 3], [3, 1]).stats } })).status).toBe(409);
    expect((await post(a, global)).status).toBe(409);
  });

  run('a study whose release list leaves out evaluation.personalized refuses it (400 NOT_RELEASED) and pools none', async (h) => {
    const { studyId, a, b, post } = await evaluating(h, { release: RELEASE_FIELDS.filter((f) => f !== 'evaluation.personalized') });
    const global = evaluation([2, 2], [2, 2], 0.6);
    const res = await post(a, { ...global, personalized: { numExamples: 8, stats: evaluation([0, 4], [4, 0]).stats } });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'NOT_RELEASED', field: 'evaluation.personalized' });
    for (const n of [a, b]) expect((await post(n, global)).status).toBe(201);
    expect((await completedRound(h, studyId)).personalizedNodes).toBe(0);
  });

  run('under DP the personalized part must be noised like the statistics; noised, it is pooled', async (h) => {
    const { studyId, a, b, post } = await evaluating(h, { privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } } });
    const global = noisedEvaluation([2, 2], [2, 2]);
    const exact = await post(a, { ...global, personalized: { numExamples: 8, stats: evaluation([0, 4], [4, 0]).stats } });
    expect(exact.status).toBe(400);
    expect(exact.body.error.field).toBe('personalized.stats');
    expect(exact.body.error.message).toMatch(/personalized: .*must be noised/);
    const personal = noisedEvaluation([0, 4], [4, 0]);
    expect((await post(a, { ...global, personalized: personal })).status).toBe(201);
    expect((await post(b, global)).status).toBe(201);
    const round = await completedRound(h, studyId);
    expect(round.personalizedNodes).toBe(1);
    expect(round.personalizedMetrics.noised).toBe(1);
    expect(round.personalizedMetrics.auc).toBeCloseTo(1, 12);
    expect(round.globalOnPersonalizedMetrics.auc).toBeCloseTo(0.5, 12);
  });
});
