import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StudyStatus } from '../../protocols/messages.ts';
import { computeEpsilon, epsilonFromRdp, rdpCurve } from '../../protocols/privacy/index.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { churnStudy, coordinatorProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

/**
 * Issue 10: under DP an evaluation is a noised release charged to the node's ledger, so a node's
 * `--max-epsilon` may refuse it after the node trained. The node then says so (status
 * `privacy-ceiling`, the ledger's reason, no statistics), and the coordinator closes the
 * evaluation phase as soon as every other node reported, with an `evaluation.refused` audit entry,
 * instead of waiting for the deadline. Real processes: a coordinator and three nodes, one of them
 * capped between the cost of its training and that of its training plus one evaluation.
 * The round's recorded close (`closedBy` in its audit entry) says whether all reports or the deadline closed it.
 */
describe('an evaluation refused by the node\'s privacy ceiling does not hold the round to its deadline', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-eval-refused-'));
  const nodes: RunningProcess[] = [];
  let coordinator: CoordinatorProcess | undefined;
  let drop: (() => Promise<void>) | undefined;
  let status: StudyStatus | undefined;
  let entries: Array<{ kind: string; round: number | null; data: Record<string, unknown> }> = [];
  let cappedId = '';

  const delta = 1e-5;
  const dpSgd = { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05, stepsPerRound: 10, learningRate: 0.5, expectedBatchSize: 32 };
  // The capped node can pay for round 1's DP-SGD (its fit check passes) but not for the noised
  // evaluation on top: (q 1, z 5, 1 step) composed with it as RDP curves, as its ledger composes them.
  const fitOnly = computeEpsilon({ q: dpSgd.samplingRate, sigma: dpSgd.noiseMultiplier, steps: dpSgd.stepsPerRound, delta }, 'rdp');
  const fitCurve = rdpCurve(dpSgd.samplingRate, dpSgd.noiseMultiplier, dpSgd.stepsPerRound);
  const evalCurve = rdpCurve(1, 5, 1);
  const withEvaluation = epsilonFromRdp(Float64Array.from(fitCurve, (v, i) => v + evalCurve[i]), delta).epsilon;
  const ceiling = (fitOnly + withEvaluation) / 2;

  beforeAll(async () => {
    const database = await (await backendOrSkip('pglite'))!.create();
    drop = database.drop;
    coordinator = await coordinatorProcess(dir, database);
    await coordinator.start();
    const { config, regions } = churnStudy(dir, {
      name: 'eval-refused',
      rounds: 1,
      training: { localEpochs: 1, learningRate: 0.05, validationFraction: 0.2 },
      roundDeadlineSeconds: 3600,
      // Long enough for two honest evaluations on a busy machine; a round that waited for the
      // capped node would close here, recorded as closed by its deadline.
      evaluationDeadlineSeconds: 240,
      privacy: { accountant: 'rdp', delta, dpSgd },
    });
    const study = await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
    for (const [i, { region, csv }] of regions.entries()) {
      const { token } = await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
      const capped = i === 2 ? ['--max-epsilon', String(ceiling)] : [];
      nodes.push(runFedmark(['node', '--coordinator', coordinator.url, '--token', token, '--data', csv, '--state-dir', join(csv, '..', 'state'), '--ledger-dir', join(csv, '..', 'ledgers'), '--backend', 'wasm', ...capped]));
    }
    for (;;) {
      status = StudyStatus.parse(await (await coordinator.api(`/v1/studies/${study.id}`)).json());
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 250));
    }
    cappedId = status.nodes.find((n) => n.name === regions[2].region)!.id;
    entries = (await (await coordinator.api('/v1/audit/export')).json()).entries;
  }, 600_000);

  afterAll(async () => {
    await Promise.all([...nodes, ...(coordinator?.all ?? [])].map((p) => p.stop()));
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the capped node trained, then refused the evaluation with its ledger\'s reason and no statistics', () => {
    expect(fitOnly).toBeLessThan(ceiling);
    expect(withEvaluation).toBeGreaterThan(ceiling);
    const round = status!.rounds[0];
    expect(round.updatesReceived).toBe(3);
    const capped = status!.nodes.find((n) => n.id === cappedId)!;
    expect(capped.state).toBe('privacy-ceiling');
    expect(capped.message).toMatch(/^refusing to evaluate in round 1: .*over its ceiling/);
    const said = entries.filter((e) => e.kind === 'node.status' && e.data.nodeId === cappedId && e.data.state === 'privacy-ceiling');
    expect(said).toHaveLength(1);
    expect(said[0].data.data).toBeNull();
    expect(entries.some((e) => e.kind === 'evaluation.received' && e.data.nodeId === cappedId)).toBe(false);
  });

  it('the coordinator records the refusal and closes the evaluation when the other two reported, not at its deadline', () => {
    const refused = entries.filter((e) => e.kind === 'evaluation.refused');
    expect(refused).toEqual([expect.objectContaining({ round: 1, data: { nodeId: cappedId, reason: 'privacy-budget' } })]);
    const completed = entries.find((e) => e.kind === 'round.completed' && e.round === 1)!;
    expect(completed.data).toMatchObject({ evaluations: 2, refused: 1, closedBy: 'all-in' });
    expect(status!.rounds[0].phase).toBe('completed');
    expect(status!.rounds[0].validationMetrics?.noised).toBe(1);
  });
});
