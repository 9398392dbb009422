import { expect } from 'vitest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { StudyConfigInput, Task } from '../../protocols/messages.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { defaultMeta, describeOnEachBackend, evaluation, noisedEvaluation, tinyStudy, withPublicMetadata, type Harness, type TestNode } from './harness.ts';

/**
 * evaluationSchedule 'with-next-fit' (issue 13): round r+1 opens as soon as round r aggregates,
 * and a participant of r+1 gets ONE fit task that carries round r's evaluation (the same model,
 * version r); round r completes when those evaluations are in or at its evaluation deadline.
 */

const fill = (x: number): WeightSet => [
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(x) },
  { name: 'dense_0/bias', shape: [1], values: Float32Array.from([x]) },
];
const report = (i: number) => evaluation([0, 1, 2 + i], [2 + i, 1, 0], 0.4);

const rounds = (h: Harness, studyId: string) => h.built.db.selectFrom('rounds').select(['round', 'phase', 'validation_auc', 'validation_metrics']).where('study_id', '=', studyId).orderBy('round').execute();
const phaseOf = async (h: Harness, studyId: string, round: number) => (await rounds(h, studyId)).find((r) => r.round === round)?.phase;
const studyState = async (h: Harness, studyId: string) => (await h.built.db.selectFrom('studies').select('state').where('id', '=', studyId).executeTakeFirstOrThrow()).state;

async function taskOf(h: Harness, node: TestNode): Promise<Task | undefined> {
  const res = await h.nodeGet(node, '/v1/tasks/next?wait=0');
  return res.status === 200 ? (res.body as Task) : undefined;
}
async function waitTask(h: Harness, node: TestNode, round: number, kind: Task['kind']): Promise<Task> {
  return h.until(async () => {
    const t = await taskOf(h, node);
    return t && t.round === round && t.kind === kind ? t : undefined;
  });
}
const postEvaluation = (h: Harness, node: TestNode, studyId: string, round: number, i: number) => h.nodePost(node, `/v1/studies/${studyId}/rounds/${round}/evaluations`, report(i), `${studyId}/${round}`);
const modelSha = async (h: Harness, studyId: string, version: number) => (await h.built.db.selectFrom('models').select('sha256').where('study_id', '=', studyId).where('version', '=', version).executeTakeFirstOrThrow()).sha256;

async function threeNodes(h: Harness, overrides: Partial<StudyConfigInput>) {
  const studyId = await h.createStudy(tinyStudy({ minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 60, ...overrides }));
  const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
  await waitTask(h, nodes[0], 1, 'fit');
  return { studyId, nodes };
}

async function submitAll(h: Harness, studyId: string, round: number, nodes: TestNode[]) {
  for (const [i, node] of nodes.entries()) expect((await h.submit(node, studyId, round, encodeWeights(fill(0.01 * (i + round))), defaultMeta(100))).status).toBe(201);
}

describeOnEachBackend('evaluationSchedule with-next-fit', (run) => {
  run('each round is evaluated with the next fit task (one task a node a round); the last round on its own; every round completes with metrics', async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 3, evaluationSchedule: 'with-next-fit' });
    let tasks = 0;
    const first = await taskOf(h, nodes[0]);
    expect(first?.evaluate).toBeUndefined(); // round 1 has nothing to evaluate yet
    for (const round of [1, 2, 3]) {
      if (round > 1) {
        for (const [i, node] of nodes.entries()) {
          const task = await waitTask(h, node, round, 'fit');
          tasks++;
          // One task: train from model round-1 and first evaluate that same model for round-1.
          expect(task.evaluate?.round).toBe(round - 1);
          expect(task.modelVersion).toBe(round - 1);
          expect(task.modelSha256).toBe(await modelSha(h, studyId, round - 1));
          expect((await postEvaluation(h, node, studyId, round - 1, i)).status).toBe(201);
        }
      } else tasks += nodes.length;
      await submitAll(h, studyId, round, nodes);
      // The round aggregated: it evaluates while the next one (if any) is already in its fit phase.
      await h.until(async () => ((await phaseOf(h, studyId, round)) !== 'fit' ? true : undefined));
      if (round < 3) expect(await h.until(async () => phaseOf(h, studyId, round + 1))).toBe('fit');
    }
    await h.until(async () => ((await phaseOf(h, studyId, 2)) === 'completed' ? true : undefined));
    // The last round has no next fit: its evaluation is a task of its own.
    for (const [i, node] of nodes.entries()) {
      const task = await waitTask(h, node, 3, 'evaluate');
      tasks++;
      expect(task.modelVersion).toBe(3);
      expect((await postEvaluation(h, node, studyId, 3, i)).status).toBe(201);
    }
    await h.until(async () => ((await studyState(h, studyId)) === 'completed' ? true : undefined));
    const done = await rounds(h, studyId);
    expect(done.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    for (const r of done) {
      expect(r.validation_auc).toBeGreaterThan(0);
      expect(r.validation_metrics).not.toBeNull();
    }
    // 3 rounds of 3 nodes: 3 fit + 2 fit-with-evaluation + 1 evaluate tasks each, where the own
    // phase takes 6 (3 fit + 3 evaluate).
    expect(tasks).toBe(3 * 3 + 3);
    // The study status shows each round's validation metrics.
    const status = await h.admin('get', `/v1/studies/${studyId}`);
    expect(status.body.rounds.map((r: { validationAuc: number | null }) => r.validationAuc !== null)).toEqual([true, true, true]);
  });

  run('a node long-polling when the round aggregates is woken by the next round, and gets its fit task with the evaluation', async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 2, evaluationSchedule: 'with-next-fit' });
    const [a, b, c] = nodes;
    await submitAll(h, studyId, 1, [a, b]);
    // a and b wait for their next task (long-polls, as nodes do) when c's update closes round 1.
    const waiting = [a, b].map((n) => h.nodeGet(n, '/v1/tasks/next?wait=2'));
    await new Promise((r) => setTimeout(r, 300));
    await submitAll(h, studyId, 1, [c]);
    for (const res of await Promise.all(waiting)) expect(res.body).toMatchObject({ kind: 'fit', round: 2, evaluate: { round: 1 } });
  });

  run('an operator stop with two rounds open closes both: round r completes with the evaluations that came, round r+1 fails without a model', async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 3, evaluationSchedule: 'with-next-fit' });
    await submitAll(h, studyId, 1, nodes);
    await waitTask(h, nodes[0], 2, 'fit');
    expect((await postEvaluation(h, nodes[0], studyId, 1, 0)).status).toBe(201);
    expect([await phaseOf(h, studyId, 1), await phaseOf(h, studyId, 2)]).toEqual(['evaluate', 'fit']);
    const stop = await h.admin('post', `/v1/studies/${studyId}/stop`).send({ reason: 'partner withdrew' });
    expect(stop.status).toBe(200);
    expect(stop.body).toMatchObject({ state: 'stopped', changed: true, closedRound: { round: 2, phase: 'failed' } });
    const after = await rounds(h, studyId);
    expect(after.map((r) => r.phase)).toEqual(['completed', 'failed']);
    expect(after[0].validation_metrics).not.toBeNull();
    const stopped = await h.built.db.selectFrom('audit_log').select('data').where('kind', '=', 'study.stopped').where('study_id', '=', studyId).executeTakeFirstOrThrow();
    expect(JSON.parse(String(stopped.data))).toMatchObject({ closedRounds: [{ round: 1, phase: 'completed' }, { round: 2, phase: 'failed' }] });
    // Nothing is left open: a late evaluation of round 1 is refused.
    expect((await postEvaluation(h, nodes[1], studyId, 1, 1)).status).not.toBe(201);
  });

  run("'own-phase' (the default when absent): the next round opens only after the evaluation phase closed", async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 2 });
    await submitAll(h, studyId, 1, nodes);
    const task = await waitTask(h, nodes[0], 1, 'evaluate');
    expect(task.evaluate).toBeUndefined();
    expect(await phaseOf(h, studyId, 2)).toBeUndefined();
    for (const [i, node] of nodes.entries()) expect((await postEvaluation(h, node, studyId, 1, i)).status).toBe(201);
    expect((await waitTask(h, nodes[0], 2, 'fit')).evaluate).toBeUndefined();
  });

  run('a node not in the next round still gets a standalone evaluation of the round it trained in', async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 2, evaluationSchedule: 'with-next-fit' });
    const [a, b, c] = nodes;
    // c trains in round 1, then can no longer train (it may still evaluate): round 2 opens without it.
    expect((await h.submit(c, studyId, 1, encodeWeights(fill(0.03)), defaultMeta(100))).status).toBe(201);
    expect((await h.nodePost(c, '/v1/nodes/me/status', { state: 'privacy-ceiling', message: 'test' })).status).toBe(204);
    await submitAll(h, studyId, 1, [a, b]);
    expect(await h.until(async () => phaseOf(h, studyId, 2))).toBe('fit');
    const own = await taskOf(h, c);
    expect(own).toMatchObject({ kind: 'evaluate', round: 1, modelVersion: 1 });
    expect((await waitTask(h, a, 2, 'fit')).evaluate?.round).toBe(1);
    for (const [i, node] of nodes.entries()) expect((await postEvaluation(h, node, studyId, 1, i)).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'completed' ? true : undefined));
  });

  run("a silent node: round r's evaluation closes at its deadline while round r+1 goes on; a restart resumes both open rounds", async (h) => {
    const { studyId, nodes } = await threeNodes(h, { rounds: 3, evaluationSchedule: 'with-next-fit' });
    const [a, b] = nodes;
    await submitAll(h, studyId, 1, nodes);
    expect(await h.until(async () => phaseOf(h, studyId, 2))).toBe('fit');
    // a and b evaluate round 1 and train round 2; c says nothing.
    for (const [i, node] of [a, b].entries()) {
      expect((await waitTask(h, node, 2, 'fit')).evaluate?.round).toBe(1);
      expect((await postEvaluation(h, node, studyId, 1, i)).status).toBe(201);
    }
    await submitAll(h, studyId, 2, [a, b]);
    // Two rounds open across a restart: both are re-armed.
    await h.restart();
    expect((await rounds(h, studyId)).map((r) => r.phase)).toEqual(['evaluate', 'fit']);
    h.advanceClock(61_000); // round 1's evaluation deadline, not round 2's fit deadline
    await h.built.rounds.advanceRound(studyId, 1);
    await h.built.rounds.advanceRound(studyId, 2);
    expect((await rounds(h, studyId)).map((r) => r.phase)).toEqual(['completed', 'fit']);
    const completed = await h.built.db.selectFrom('audit_log').select('data').where('study_id', '=', studyId).where('kind', '=', 'round.completed').executeTakeFirstOrThrow();
    const data = (typeof completed.data === 'string' ? JSON.parse(completed.data) : completed.data) as { evaluations: number; closedBy: string };
    expect(data).toMatchObject({ evaluations: 2, closedBy: 'deadline' });
    // Round 2's fit closes at its own deadline with a and b: round 3 opens beside round 2's evaluation.
    h.advanceClock(300_000);
    await h.built.rounds.advanceRound(studyId, 2);
    expect(await h.until(async () => ((await phaseOf(h, studyId, 3)) === 'fit' ? true : undefined))).toBe(true);
    expect(await phaseOf(h, studyId, 2)).toBe('evaluate');
  });

  run('a budget that cannot pay for round r+1 stops the study only once round r has closed with its evaluations', async (h) => {
    const central = { noiseMultiplier: 2, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 };
    const eps = (r: number) => computeEpsilon({ q: 1, sigma: 2, steps: r, delta: 1e-5 }, 'rdp');
    const studyId = await h.createStudy(tinyStudy(withPublicMetadata({ rounds: 3, minNodesPerRound: 2, minNodesToStart: 2, evaluationSchedule: 'with-next-fit', privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central } })));
    const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b')];
    await waitTask(h, nodes[0], 1, 'fit');
    await submitAll(h, studyId, 1, nodes);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'evaluate' ? true : undefined));
    // No round 2 (the budget cannot pay for it), and not stopped yet: round 1 still evaluates.
    for (const node of nodes) expect(await taskOf(h, node)).toMatchObject({ kind: 'evaluate', round: 1 });
    expect(await studyState(h, studyId)).toBe('running');
    for (const node of nodes) expect((await h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, noisedEvaluation([0, 1], [1, 0]), `${studyId}/1`)).status).toBe(201);
    const study = await h.until(async () => {
      const s = await h.built.db.selectFrom('studies').select(['state', 'stop_reason']).where('id', '=', studyId).executeTakeFirstOrThrow();
      return s.state === 'stopped' ? s : undefined;
    });
    expect(study.stop_reason).toMatch(/privacy budget: round 2/);
    expect((await rounds(h, studyId)).map((r) => r.phase)).toEqual(['completed']);
    expect(await h.built.db.selectFrom('privacy_ledger').select('round').where('study_id', '=', studyId).execute()).toEqual([{ round: 1 }]);
  });
}, 120_000);
