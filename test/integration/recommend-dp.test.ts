import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCsvTable, writeCsvTable } from '../../models/csv-table.ts';
import { StudyStatus, type StudyConfigInput } from '../../protocols/messages.ts';
import { EvaluationStats, isNoised, statsRows } from '../../protocols/model-kinds/kind.ts';
import { recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { recommendEvaluationNoiseStd } from '../../protocols/privacy/noised-recommend.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { interactionItems } from '../../scripts/generate-interactions.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { coordinatorProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/interactions.csv', import.meta.url));
const REGIONS = ['north', 'south', 'east'];
const ROUNDS = 3;
const DP_SGD = { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05, stepsPerRound: 10, learningRate: 0.5, expectedBatchSize: 16 };

/**
 * A recommend study under user-level DP-SGD between real processes (issue 9 section 2): a
 * coordinator and three `fedmark node` processes run 3 rounds; every evaluation the coordinator
 * stored is the noised user-level form (std z sqrt(3)), every round's metrics are marked noised,
 * and every node's ledger holds, per round, its DP-SGD spend over users (q, z, steps) and its
 * evaluation (q 1, z 5, 1 step), with epsilon spent > 0.
 */
describe('recommend study under user-level DP-SGD between real processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-recommend-dp-'));
  const processes: RunningProcess[] = [];
  let coordinator: CoordinatorProcess | undefined;
  let skipped = false;
  let status: StudyStatus | undefined;
  let stored: Array<{ round: number; num_examples: number; stats: unknown }> = [];
  let updateMetas: Array<{ node_id: string; round: number; meta: unknown }> = [];

  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) return void (skipped = true);
    const database = await backend.create();
    coordinator = await coordinatorProcess(dir, database);
    await coordinator.start();
    const table = readCsvTable({ path: DATA });
    const region = table.header.indexOf('region');
    const customer = table.header.indexOf('customer');
    const rows = table.rows.filter((r) => Number(r[customer].slice(1)) <= 600);
    const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', timestamp: 'ts', items: { vocabulary: interactionItems() }, factors: 4 };
    const input: StudyConfigInput = {
      name: 'recommend-dp-it',
      task,
      model: { kind: 'linear' },
      features: recommendStudyFeatures(task),
      training: { learningRate: 0.05 },
      privacy: { delta: 1e-5, dpSgd: DP_SGD },
      rounds: ROUNDS,
      minNodesPerRound: 3,
      minNodesToStart: 3,
      roundDeadlineSeconds: 300,
      evaluationDeadlineSeconds: 300,
      bounds: { maxUpdateNorm: 200 },
    };
    const created = await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(input) })).json();
    expect(created.id, JSON.stringify(created)).toBeTruthy();
    const studyId = created.id as string;
    for (const name of REGIONS) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      const csv = join(nodeDir, 'data.csv');
      writeCsvTable(csv, table.header, rows.filter((r) => r[region] === name));
      const { token } = await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId, nodeName: name, region: name }) })).json();
      processes.push(runFedmark(['node', '--coordinator', coordinator.url, '--token', token, '--data', csv, '--state-dir', join(nodeDir, 'state'), '--ledger-dir', join(nodeDir, 'ledgers'), '--backend', 'wasm']));
    }
    for (;;) {
      status = StudyStatus.parse(await (await coordinator.api(`/v1/studies/${studyId}`)).json());
      if (status.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await Promise.all([...processes, ...coordinator.all].map((p) => p.stop()));
    const opened = await openDatabase({ dataDir: database.dataDir, databaseUrl: database.databaseUrl });
    try {
      stored = (await opened.db.selectFrom('evaluations').select(['round', 'num_examples', 'stats']).where('study_id', '=', studyId).execute()) as typeof stored;
      updateMetas = (await opened.db.selectFrom('updates').select(['node_id', 'round', 'meta']).where('study_id', '=', studyId).execute()) as typeof updateMetas;
    } finally {
      await opened.db.destroy();
    }
  }, 900_000);

  afterAll(async () => {
    await Promise.all([...processes, ...(coordinator?.all ?? [])].map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs 3 rounds with the three nodes; every evaluation is noised (user-level, std 5 sqrt(3)) and so is every round\'s metric', (ctx) => {
    if (skipped) return ctx.skip();
    expect(status!.state).toBe('completed');
    expect(status!.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    for (const r of status!.rounds) {
      expect(r.updatesReceived).toBe(3);
      expect(r.validationMetrics).toMatchObject({ noised: 1, k: 10 });
      expect(r.validationMetrics!.n).toBeGreaterThan(0);
    }
    expect(stored).toHaveLength(3 * ROUNDS);
    for (const row of stored) {
      const stats = EvaluationStats.parse(typeof row.stats === 'string' ? JSON.parse(row.stats) : row.stats);
      expect(isNoised(stats)).toBe(true);
      expect(stats).toMatchObject({ kind: 'recommend', k: 10, noise: { mechanism: 'discrete-gaussian', noiseStd: recommendEvaluationNoiseStd(5) } });
      expect(Number(row.num_examples)).toBe(statsRows(stats));
    }
  });

  it("charges every node's own ledger each round: DP-SGD over users (q 0.05, z 1, 10 steps) and the evaluation (q 1, z 5, 1 step)", (ctx) => {
    if (skipped) return ctx.skip();
    for (const name of REGIONS) {
      const ledgers = readdirSync(join(dir, name, 'ledgers')).filter((f) => f.endsWith('.jsonl'));
      expect(ledgers).toHaveLength(1);
      const entries = readFileSync(join(dir, name, 'ledgers', ledgers[0]), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(entries.filter((e) => e.samplingRate === DP_SGD.samplingRate && e.noiseMultiplier === DP_SGD.noiseMultiplier && e.steps === DP_SGD.stepsPerRound)).toHaveLength(ROUNDS);
      expect(entries.filter((e) => e.samplingRate === 1 && e.noiseMultiplier === 5 && e.steps === 1)).toHaveLength(ROUNDS);
    }
    // The spend each node reported with its updates (update.dpSgd, public): positive, growing by round.
    expect(updateMetas).toHaveLength(3 * ROUNDS);
    const byNode = new Map<string, number[]>();
    for (const u of [...updateMetas].sort((a, b) => a.round - b.round)) {
      const meta = (typeof u.meta === 'string' ? JSON.parse(u.meta) : u.meta) as { dpSgd?: { epsilonTotal: number; epsilonRound: number; samplingRate: number } };
      expect(meta.dpSgd!.epsilonRound).toBeGreaterThan(0);
      expect(meta.dpSgd!.samplingRate).toBe(DP_SGD.samplingRate);
      byNode.set(u.node_id, [...(byNode.get(u.node_id) ?? []), meta.dpSgd!.epsilonTotal]);
    }
    expect(byNode.size).toBe(3);
    for (const totals of byNode.values()) {
      expect(totals[0]).toBeGreaterThan(0);
      for (let i = 1; i < totals.length; i++) expect(totals[i]).toBeGreaterThan(totals[i - 1]);
    }
  });
});
