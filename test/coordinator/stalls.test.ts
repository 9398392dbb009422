import { expect } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { StudyConfigInput } from '../../protocols/messages.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

const fill = (x: number): WeightSet => [
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([x]) },
];

/** A study of three nodes with all three updates in: the round is in its evaluation phase. */
async function inEvaluation(h: Harness, overrides: Partial<StudyConfigInput> = {}) {
  const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 3, minNodesToStart: 3, evaluationDeadlineSeconds: 60, ...overrides }));
  const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
  await h.until(async () => ((await h.nodeGet(nodes[0], '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
  for (const [i, node] of nodes.entries()) expect((await h.submit(node, studyId, 1, encodeWeights(fill(0.1 * (i + 1))), defaultMeta(100))).status).toBe(201);
  await h.until(async () => ((await roundRow(h, studyId)).phase === 'evaluate' ? true : undefined));
  return { studyId, nodes };
}

const roundRow = (h: Harness, studyId: string) => h.built.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', 1).executeTakeFirstOrThrow();

/** The study's audit entries of one kind, their data parsed (stored as canonical JSON text). */
async function auditOf(h: Harness, studyId: string, kind: string) {
  const rows = await h.built.db.selectFrom('audit_log').select(['actor', 'data']).where('study_id', '=', studyId).where('kind', '=', kind).orderBy('seq').execute();
  return rows.map((r) => ({ actor: r.actor, data: (typeof r.data === 'string' ? JSON.parse(r.data) : r.data) as Record<string, unknown> }));
}

/** Stores a report as an older version (or a bug) could have: straight into the table, past intake. */
async function storeRaw(h: Harness, studyId: string, node: TestNode, row: { num_examples: number; stats?: unknown; histogram?: unknown }) {
  await h.built.db
    .insertInto('evaluations')
    .values({ study_id: studyId, round: 1, node_id: node.nodeId, num_examples: row.num_examples, loss: 0.5, histogram: row.histogram === undefined ? null : JSON.stringify(row.histogram), stats: row.stats === undefined ? null : JSON.stringify(row.stats) })
    .execute();
}

/**
 * The round's deadline (60 s) passes on the round service's clock, and the deadline transition
 * runs (as its timer or the sweep would run it; its error, if any, reaches the test).
 */
async function passDeadline(h: Harness, studyId: string) {
  h.advanceClock(61_000);
  await h.built.rounds.advanceRound(studyId, 1);
  return roundRow(h, studyId);
}

/**
 * Item 2 of issue 11, in process on PGlite and PostgreSQL: no single node's stored report or
 * update can keep a round open past its deadline. Intake refuses such reports today; these rows
 * go straight into the tables, as a row stored by an older version would be.
 */
describeOnEachBackend('a bad stored report cannot stall a round', (run) => {
  run('a 10-bin evaluation report is excluded and audited; the round completes at its deadline with the others', async (h) => {
    const { studyId, nodes } = await inEvaluation(h);
    const honest = [evaluation([0, 1, 2], [2, 1, 0], 0.4), evaluation([1, 2, 0], [3, 1, 0], 0.5)];
    for (const [i, report] of honest.entries()) expect((await h.nodePost(nodes[i], `/v1/studies/${studyId}/rounds/1/evaluations`, report, `${studyId}/1`)).status).toBe(201);
    await storeRaw(h, studyId, nodes[2], { num_examples: 6, stats: { kind: 'binary', histogram: { bins: 10, positives: [0, 0, 0, 0, 0, 0, 0, 0, 0, 3], negatives: [3, 0, 0, 0, 0, 0, 0, 0, 0, 0] }, brierSum: 0, logLossSum: 0 } });
    const round = await passDeadline(h, studyId);
    expect(round.phase).toBe('completed');
    // Pooled from the two honest reports only: 6 + 7 rows.
    expect((round.validation_metrics as { n: number }).n).toBe(13);
    expect(round.validation_auc).not.toBeNull();
    const excluded = await auditOf(h, studyId, 'evaluation.excluded');
    expect(excluded).toHaveLength(1);
    expect(excluded[0].data).toMatchObject({ nodeId: nodes[2].nodeId });
    expect(String((excluded[0].data as { reason: string }).reason)).toMatch(/10 bins/);
    expect((await auditOf(h, studyId, 'round.completed'))[0].data).toMatchObject({ evaluations: 2, excluded: 1 });
    // The study goes on: its last round closed, so it completes.
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.state === 'completed' ? true : undefined));
  });

  run('a report of the wrong kind and a legacy histogram that does not parse are each excluded, naming the node', async (h) => {
    const { studyId, nodes } = await inEvaluation(h);
    expect((await h.nodePost(nodes[0], `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1, 2], [2, 1, 0], 0.4), `${studyId}/1`)).status).toBe(201);
    await storeRaw(h, studyId, nodes[1], { num_examples: 6, stats: { kind: 'regression', n: 6, sumY: 1, sumY2: 1, sumError: 0, sse: 1, sae: 1, baselineSae: 1 } });
    await storeRaw(h, studyId, nodes[2], { num_examples: 6, histogram: { bins: 1000, positives: [1, 2], negatives: [3] } });
    const round = await passDeadline(h, studyId);
    expect(round.phase).toBe('completed');
    expect((round.validation_metrics as { n: number }).n).toBe(6);
    const excluded = (await auditOf(h, studyId, 'evaluation.excluded')).map((e) => e.data as { nodeId: string; reason: string });
    expect(excluded.map((e) => e.nodeId).sort()).toEqual([nodes[1].nodeId, nodes[2].nodeId].sort());
    expect(excluded.find((e) => e.nodeId === nodes[1].nodeId)!.reason).toMatch(/regression report in a binary study/);
  });

  run('a stored update that makes aggregation throw fails the round at its deadline, with the reason audited', async (h) => {
    // Median keeps each update: one kept row lost (a damaged table) makes the strategy refuse to
    // rebuild the round, at every attempt.
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, strategy: { name: 'median' }, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 60 }));
    const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
    await h.until(async () => ((await h.nodeGet(nodes[0], '/v1/tasks/next?wait=1')).status === 200 ? true : undefined));
    for (const node of nodes.slice(0, 2)) expect((await h.submit(node, studyId, 1, encodeWeights(fill(0.2)), defaultMeta(10))).status).toBe(201);
    await h.built.db.deleteFrom('round_kept_updates').where('study_id', '=', studyId).where('node_id', '=', nodes[1].nodeId).execute();
    const round = await passDeadline(h, studyId);
    expect(round.phase).toBe('failed');
    expect(round.failure_reason).toMatch(/^aggregation failed: .*kept updates/);
    const failed = await auditOf(h, studyId, 'round.failed');
    expect(failed).toHaveLength(1);
    expect((failed[0].data as { reason: string }).reason).toBe(round.failure_reason);
    // The global model carries over: version 1 is version 0.
    const models = await h.built.db.selectFrom('models').select(['version', 'sha256']).where('study_id', '=', studyId).orderBy('version').execute();
    expect(models.map((m) => m.version)).toEqual([0, 1]);
    expect(models[1].sha256).toBe(models[0].sha256);
  });

  run('a deadline whose timer never fires is found by the sweep, from the database', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 2, roundDeadlineSeconds: 60 }));
    await h.enroll(studyId, 'a');
    await h.enroll(studyId, 'b');
    await h.until(async () => ((await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).executeTakeFirst())?.phase === 'fit' ? true : undefined));
    // The round service's clock passes the deadline; its timer (real time) is still 60 s away,
    // as if it had been lost. Only the sweep (every 5 s by default) can close the round now.
    h.advanceClock(61_000);
    const round = await h.until(async () => ((await roundRow(h, studyId)).phase === 'fit' ? undefined : roundRow(h, studyId)), 15_000);
    expect(round.phase).toBe('failed');
    expect(round.failure_reason).toMatch(/only 0 of 2 nodes reported by the deadline/);
  });
});
