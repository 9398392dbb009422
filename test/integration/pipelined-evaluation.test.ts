import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { StudyStatus } from '../../protocols/messages.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const ADMIN = 'integration-admin-token-0123456789';
const REGIONS = ['area_code_408', 'area_code_415', 'area_code_510'];
const ROUNDS = 3;

type Schedule = 'own-phase' | 'with-next-fit';
interface Run {
  status: StudyStatus;
  /** Deltas of the coordinator's request counters over the study, by route and status. */
  requests: Map<string, number>;
  nodes: RunningProcess[];
}

/**
 * evaluationSchedule (issue 13) between real processes: the same study (same data, seed and
 * nodes) run once per schedule on one coordinator, one after the other. 'with-next-fit' must
 * report every round's federated evaluation, with fewer task polls, each model downloaded once and
 * each evaluation riding on the node's next update request.
 */
describe('evaluation schedules between real processes (PGlite)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-pipelined-'));
  const processes: RunningProcess[] = [];
  const runs = new Map<Schedule, Run>();
  let drop: (() => Promise<void>) | undefined;
  let url = '';

  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res;
  };

  /** fedmark_http_requests_total, as `METHOD route status` -> count. */
  async function requestCounts(): Promise<Map<string, number>> {
    const text = await (await api('/metrics')).text();
    const counts = new Map<string, number>();
    for (const m of text.matchAll(/^fedmark_http_requests_total\{method="(\w+)",route="([^"]+)",status="(\d+)"\} (\d+)/gm)) counts.set(`${m[1]} ${m[2]} ${m[3]}`, Number(m[4]));
    return counts;
  }

  async function runStudy(schedule: Schedule): Promise<Run> {
    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const areaCol = table.header.indexOf('area_code');
    const config = { name: `pipelined ${schedule}`, model: { kind: 'logreg' }, features: spec, training: { localEpochs: 2, learningRate: 0.02 }, rounds: ROUNDS, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 120, evaluationSchedule: schedule };
    const study = await (await api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
    const before = await requestCounts();
    const nodes: RunningProcess[] = [];
    for (const region of REGIONS) {
      const nodeDir = join(dir, schedule, region);
      mkdirSync(nodeDir, { recursive: true });
      writeCsvTable(join(nodeDir, 'data.csv'), table.header, table.rows.filter((r) => r[areaCol] === region));
      const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
      const node = runFedmark(['node', '--coordinator', url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'wasm']);
      nodes.push(node);
      processes.push(node);
    }
    let status: StudyStatus;
    for (;;) {
      status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
      if (status.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const node of nodes) await node.exited;
    const after = await requestCounts();
    const requests = new Map([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)]));
    return { status, requests, nodes };
  }

  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) return;
    const database = await backend.create();
    drop = database.drop;
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', database.dataDir ?? join(dir, 'unused')], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'), DATABASE_URL: '' });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening', 180_000)).url);
    for (const schedule of ['own-phase', 'with-next-fit'] as const) runs.set(schedule, await runStudy(schedule));
  }, 600_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it("'with-next-fit': every round completes with its federated evaluation, AUC as with 'own-phase'", (ctx) => {
    if (runs.size < 2) return ctx.skip();
    for (const run of runs.values()) {
      expect(run.status.state).toBe('completed');
      expect(run.status.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
      for (const r of run.status.rounds) expect(r.validationAuc).toBeGreaterThan(0.6);
    }
    const own = runs.get('own-phase')!.status.rounds.map((r) => r.validationAuc!);
    const next = runs.get('with-next-fit')!.status.rounds.map((r) => r.validationAuc!);
    // Two studies, so two validation splits (each node's split is keyed by the random study id): the
    // two schedules' round AUCs differed by 0.007-0.026 in CI runs and by 0.055 in one (2026-12-03,
    // which failed the 0.05 bound this had). Pooled over ~1,000 validation rows with ~14% positives,
    // an AUC near 0.85 has a standard error of ~0.02 (Hanley and McNeil 1982), ~0.03 for the
    // difference of two splits, and each split also trains on different rows: 0.15 is far past
    // that noise and far below the gap to an untrained model. The bound only catches a gross
    // error (an untrained or foreign model scores ~0.5); which model each round evaluated is checked
    // by the download counts in the next test.
    for (let i = 0; i < ROUNDS; i++) expect(Math.abs(next[i] - own[i])).toBeLessThan(0.15);
  });

  it('each node evaluated every round, sent every update, and received each model version once (in its task, never downloaded)', (ctx) => {
    if (runs.size < 2) return ctx.skip();
    const run = runs.get('with-next-fit')!;
    for (const node of run.nodes) {
      expect(node.logs.filter((l) => l.msg === 'sent evaluation (sufficient statistics)').map((l) => l.round)).toEqual([1, 2, 3]);
      expect(node.logs.filter((l) => l.msg === 'sent model update').map((l) => l.round)).toEqual([1, 2, 3]);
    }
    // Versions 0..ROUNDS, once each, per node: each rode on the node's one task of a round
    // (Task.model; REGIONS x (ROUNDS + 1) tasks, next test), so none was downloaded.
    expect(run.requests.get('GET /v1/studies/:studyId/models/:version 200') ?? 0).toBe(0);
  });

  it("each evaluation but the last round's rode on the node's next update: one signed request where there were two", (ctx) => {
    if (runs.size < 2) return ctx.skip();
    const posts = (s: Schedule, what: 'evaluations' | 'updates') => runs.get(s)!.requests.get(`POST /v1/studies/:studyId/rounds/:round/${what} 201`) ?? 0;
    expect(posts('own-phase', 'evaluations')).toBe(REGIONS.length * ROUNDS);
    expect(posts('with-next-fit', 'evaluations')).toBe(REGIONS.length); // the last round's, on its own
    expect(posts('with-next-fit', 'updates')).toBe(REGIONS.length * ROUNDS);
    for (const node of runs.get('with-next-fit')!.nodes) {
      const sent = node.logs.filter((l) => l.msg === 'sent evaluation (sufficient statistics)');
      expect(sent.map((l) => [l.round, l.withUpdate ?? false])).toEqual([[1, true], [2, true], [3, false]]);
    }
  });

  it('a node takes one task a round (the last round adds its evaluation), where the own phase takes two; all but the first come on its update receipt', (ctx) => {
    if (runs.size < 2) return ctx.skip();
    // A task comes on the receipt of the node's update (?wait=S: UpdateReceipt.next) or from a
    // poll. 'with-next-fit': the first fit task is polled; every later one (fit r+1 carrying the
    // evaluation of model r, then the last round's evaluation) rides on an update receipt.
    // 'own-phase': the evaluate task of a round rides on that round's update; each fit task comes
    // after the evaluation was sent on its own, so it is polled.
    const polled = (s: Schedule) => runs.get(s)!.requests.get('GET /v1/tasks/next 200') ?? 0;
    expect(polled('own-phase')).toBe(REGIONS.length * ROUNDS);
    expect(polled('with-next-fit')).toBe(REGIONS.length);
    // Every task was received and worked on: the own phase's 2 a round, 'with-next-fit''s one a round plus the last evaluation.
    for (const [schedule, run] of runs) {
      for (const node of run.nodes) {
        const worked = node.logs.filter((l) => l.msg === 'sent model update' || (l.msg === 'sent evaluation (sufficient statistics)' && !l.withUpdate)).length;
        expect(worked, schedule).toBe(schedule === 'own-phase' ? 2 * ROUNDS : ROUNDS + 1);
      }
    }
  });
});
