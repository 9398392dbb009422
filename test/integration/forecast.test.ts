import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, readCsvTable, setWeights, writeCsvTable, type CsvTable } from '../../models/index.ts';
import { inferForecastSpec } from '../../models/forecast-features.ts';
import { forecastKind } from '../../models/kinds/forecast.ts';
import { loadTable } from '../../client-node/data.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';
import { ForecastTask, poolForecast, type ForecastStats } from '../../protocols/model-kinds/forecast.ts';
import { StudyConfig, StudyStatus, type StudyConfigInput } from '../../protocols/messages.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { coordinatorProcess, nodeProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { BIN, type RunningProcess } from '../helpers/processes.ts';

const RIDERSHIP = fileURLToPath(new URL('../../data/chicago_ridership.csv', import.meta.url));
const STATIONS = [['Clark_Lake', 'Austin'], ['Belmont', 'California']];

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

/**
 * A forecast study between real processes: a coordinator (PGlite) and two node processes, each
 * holding two Chicago stations since mid-2015, 3 rounds of FedAvg on a level-relative log1p
 * linear model. The coordinator's pooled WAPE / MASE / bias of the final model must be the ones
 * computed here from the published weights on the two nodes' own time-split validation rows.
 * Then `fedmark model export` and `fedmark forecast` as real processes.
 */
describe('forecast study between real processes, then fedmark forecast on the exported model', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-forecast-'));
  const processes: RunningProcess[] = [];
  let coordinator: CoordinatorProcess;
  let skipped = false;
  let studyId = '';
  let status: StudyStatus;
  let config: StudyConfig;
  const parts: CsvTable[] = [];

  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) {
      skipped = true;
      return;
    }
    const full = readCsvTable({ path: RIDERSHIP });
    const rows = full.rows.filter((r) => r[0] >= '2015-06-01' && STATIONS.flat().includes(r[1]));
    const task = ForecastTask.parse({ kind: 'forecast', date: 'date', series: 'station', frequency: 'day', horizon: 7, lags: [7, 14, 21, 28], windows: [7], level: 28, covariates: ['temp', 'percip'] });
    const spec = inferForecastSpec({ header: full.header, rows, lineOf: (i) => i + 2 }, task, 'riders');
    const input: StudyConfigInput = { name: 'forecast-it', task, model: { kind: 'linear' }, features: spec, training: { localEpochs: 1, learningRate: 0.003, batchSize: 64 }, rounds: 3, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 300 };
    config = StudyConfig.parse(input);
    coordinator = await coordinatorProcess(dir, { dataDir: join(dir, 'db') });
    await coordinator.start();
    studyId = ((await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(input) })).json()) as { id: string }).id;
    for (const [i, stations] of STATIONS.entries()) {
      const csv = join(dir, `node-${i}`, 'data.csv');
      mkdirSync(join(csv, '..'), { recursive: true });
      const mine = rows.filter((r) => stations.includes(r[1]));
      parts.push({ header: full.header, rows: mine, lineOf: (r) => r + 2 });
      writeCsvTable(csv, full.header, mine);
      const { token } = (await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId, nodeName: `node-${i}`, region: `r${i}` }) })).json()) as { token: string };
      processes.push(nodeProcess(coordinator.url, token, csv));
    }
    for (;;) {
      status = StudyStatus.parse(await (await coordinator.api(`/v1/studies/${studyId}?wait=30&seen=0`)).json());
      if (status.state === 'completed' || status.state === 'stopped') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await Promise.all(processes.map((p) => p.stop()));
  }, 600_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await Promise.all((coordinator?.all ?? []).map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs 3 rounds and pools WAPE, MASE and bias exactly as a central evaluation of the published model', async () => {
    if (skipped) return;
    expect(status.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    const last = status.rounds.at(-1)!.validationMetrics!;
    // 2 nodes x 2 stations x the last 7 days.
    expect(last.n).toBe(28);
    expect(last.series).toBe(4);
    for (const k of ['wape', 'naiveWape', 'mase', 'naiveMase', 'bias']) expect(Number.isFinite(last[k])).toBe(true);
    const bytes = new Uint8Array(await (await coordinator.api(`/v1/studies/${studyId}/models/3`)).arrayBuffer());
    await initBackend();
    const kind = forecastKind(config);
    const model = kind.createModel(config, encodedWidth(config.features));
    setWeights(model, decodeWeights(bytes));
    const stats = parts.map((t) => kind.evaluate(model, loadTable(t, 'part', config, 0).validation).stats as ForecastStats);
    const central = poolForecast(stats);
    for (const k of ['wape', 'naiveWape', 'mase', 'naiveMase', 'bias']) expect(last[k], k).toBeCloseTo(central[k]!, 6);
    // The round-0 model the coordinator published starts from the level forecast: output kernel zero.
    const round0 = decodeWeights(new Uint8Array(await (await coordinator.api(`/v1/studies/${studyId}/models/0`)).arrayBuffer()));
    expect(Array.from(round0[0].values).every((v) => v === 0)).toBe(true);
    // Training moved the model: the round-1 and round-3 WAPEs differ.
    expect(status.rounds[0].validationMetrics!.wape).not.toBe(last.wape);
  });

  it('fedmark forecast writes the 7 days after each station\'s last value from the exported model; refuses a longer horizon', async () => {
    if (skipped) return;
    const out = join(dir, 'export');
    const exported = await cli(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', out, '--coordinator', coordinator.url, '--token', coordinator.admin]);
    expect(exported.code, exported.stderr).toBe(0);
    const history = join(dir, 'node-0', 'data.csv');
    const file = join(dir, 'forecasts.csv');
    const res = await cli(['forecast', '--model', out, '--data', history, '--horizon', '7', '--out', file, '--json']);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 14, series: 2, horizon: 7 });
    const written = readCsvTable({ path: file });
    expect(written.header).toEqual(['date', 'station', 'forecast']);
    expect(written.rows.filter((r) => r[1] === 'Austin').map((r) => r[0])).toEqual(['2016-08-15', '2016-08-16', '2016-08-17', '2016-08-18', '2016-08-19', '2016-08-20', '2016-08-21']);
    for (const r of written.rows) expect(Number(r[2])).toBeGreaterThan(0);
    // Clark_Lake (about 13k riders a weekday) is forecast far above Austin (about 1.5k).
    const mean = (s: string) => written.rows.filter((r) => r[1] === s).reduce((a, r) => a + Number(r[2]), 0) / 7;
    expect(mean('Clark_Lake')).toBeGreaterThan(3 * mean('Austin'));
    const tooFar = await cli(['forecast', '--model', out, '--data', history, '--horizon', '8']);
    expect(tooFar.code).not.toBe(0);
    expect(tooFar.stderr).toMatch(/--horizon 8: the model was trained to forecast at most 7 periods ahead/);
    expect(tooFar.stderr).not.toMatch(/\n\s+at /);
    expect(readFileSync(file, 'utf8').split('\n').length).toBe(16);
  });
});
