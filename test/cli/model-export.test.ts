import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '../../models/tf.ts';
import { encodeTable, inferFeatureSpec, initBackend, nodeKindFor, readCsvTable, setWeights, writeCsvTable, type CsvTable } from '../../models/index.ts';
import { targetMap } from '../../models/kinds/regression.ts';
import { predictScores } from '../../models/train.ts';
import { validationSplit } from '../../client-node/data.ts';
import { encodedWidth, isNumericTarget } from '../../protocols/feature-spec.ts';
import { StudyConfig, StudyStatus, type StudyConfigInput } from '../../protocols/messages.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { generateIdentity } from '../../protocols/crypto/index.ts';
import { coordinatorProcess, nodeProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { BIN, type RunningProcess } from '../helpers/processes.ts';

const CHURN = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const VALUE = fileURLToPath(new URL('../../data/customer_value.csv', import.meta.url));

/** `fedmark <args>` as a real process: exit code and output, whatever the code. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

interface Scenario {
  kind: 'binary' | 'regression';
  data: string;
  regionColumn: string;
  regions: string[];
  rowsPerNode: number;
  study: (table: CsvTable) => StudyConfigInput;
  idColumn?: string;
}

const SCENARIOS: Scenario[] = [
  {
    kind: 'binary',
    data: CHURN,
    regionColumn: 'area_code',
    regions: ['area_code_408', 'area_code_415', 'area_code_510'],
    rowsPerNode: 300,
    study: (t) => ({ name: 'export-binary', features: inferFeatureSpec(t, { target: 'churn', exclude: ['area_code', 'state'] }), model: { kind: 'mlp', hidden: [8] }, training: { localEpochs: 1, learningRate: 0.05 }, rounds: 2, minNodesPerRound: 3, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 300 }),
  },
  {
    kind: 'regression',
    data: VALUE,
    regionColumn: 'region',
    regions: ['eu-west', 'us-east'],
    rowsPerNode: 400,
    idColumn: 'customer_id',
    study: (t) => ({ name: 'export-regression', task: { kind: 'regression', loss: 'tweedie' }, features: inferFeatureSpec(t, { target: 'spend_12m', exclude: ['customer_id', 'region', 'country', 'consent'], task: 'regression' }), model: { kind: 'mlp', hidden: [8] }, training: { localEpochs: 1, learningRate: 0.01 }, rounds: 2, minNodesPerRound: 2, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 300 }),
  },
];

interface Run {
  scenario: Scenario;
  studyId: string;
  config: StudyConfig;
  status: StudyStatus;
  /** The nodes' validation rows, pooled: what the coordinator's round-2 metrics were computed on. */
  validation: CsvTable;
}

/**
 * A short federation of real processes (a coordinator on PGlite, one node process per region,
 * 2 rounds) for a binary and a regression study, then the operator's commands as real processes:
 * `fedmark model export`, `fedmark predict`, `fedmark model verify`.
 */
describe('fedmark model export / predict / verify after a real federation', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-model-export-'));
  const processes: RunningProcess[] = [];
  let coordinator: CoordinatorProcess;
  let fingerprint: string;
  const runs: Run[] = [];

  beforeAll(async () => {
    coordinator = await coordinatorProcess(dir, { dataDir: join(dir, 'db') });
    await coordinator.start();
    fingerprint = ((await (await coordinator.api('/v1/coordinator/key')).json()) as { fingerprint: string }).fingerprint;
    const started = SCENARIOS.map(async (scenario) => {
      const full = readCsvTable({ path: scenario.data });
      const column = full.header.indexOf(scenario.regionColumn);
      const slices = scenario.regions.map((region) => full.rows.filter((r) => r[column] === region).slice(0, scenario.rowsPerNode));
      const config = StudyConfig.parse(scenario.study({ header: full.header, rows: slices.flat(), lineOf: full.lineOf }));
      const study = (await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json()) as { id: string };
      const validation: string[][] = [];
      for (const [i, region] of scenario.regions.entries()) {
        const csv = join(dir, `${scenario.kind}-${region}`, 'data.csv');
        mkdirSync(join(csv, '..'), { recursive: true });
        writeCsvTable(csv, full.header, slices[i]);
        const table: CsvTable = { header: full.header, rows: slices[i], lineOf: (r) => r + 2 };
        validation.push(...validationSplit(table, config, study.id)[1].map((r) => slices[i][r]));
        const { token } = (await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: `${scenario.kind}-${region}`, region }) })).json()) as { token: string };
        processes.push(nodeProcess(coordinator.url, token, csv));
      }
      return { scenario, studyId: study.id, config, validation: { header: full.header, rows: validation, lineOf: (r: number) => r + 2 } };
    });
    for (const s of await Promise.all(started)) {
      let status: StudyStatus;
      for (;;) {
        status = StudyStatus.parse(await (await coordinator.api(`/v1/studies/${s.studyId}?wait=30&seen=0`)).json());
        if (status.state === 'completed') break;
        await new Promise((r) => setTimeout(r, 500));
      }
      runs.push({ ...s, status });
    }
    await Promise.all(processes.map((p) => p.stop()));
  }, 600_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await Promise.all((coordinator?.all ?? []).map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  for (const scenario of SCENARIOS) {
    describe(`${scenario.kind} study`, () => {
      const run = () => runs.find((r) => r.scenario === scenario)!;
      const out = join(dir, `export-${scenario.kind}`);
      const auth = () => ['--coordinator', coordinator.url, '--token', coordinator.admin];

      it('exports model v2 as a real process, checked against the pinned coordinator key; the lineage names round, participants, privacy', async () => {
        const { studyId, status } = run();
        expect(status.rounds.map((r) => r.phase)).toEqual(['completed', 'completed']);
        const res = await cli(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', out, '--fingerprint', fingerprint, '--json', ...auth()]);
        expect(res.stderr).toBe('');
        expect(res.code).toBe(0);
        expect(JSON.parse(res.stdout)).toMatchObject({ modelVersion: 2, round: 2, fingerprint });
        const lineage = JSON.parse(readFileSync(join(out, 'lineage.json'), 'utf8'));
        expect(lineage.modelSha256).toBe(status.rounds[1].modelSha256);
        expect(lineage.participants.map((p: { name: string }) => p.name).sort()).toEqual(scenario.regions.map((r) => `${scenario.kind}-${r}`).sort());
        expect(lineage.privacy.mechanisms).toEqual(['none (no differential privacy)']);
        expect(lineage.rounds.map((r: { round: number }) => r.round)).toEqual([1, 2]);
      }, 120_000);

      it("tf.loadLayersModel (over HTTP, tfjs's own loader) predicts as fedmark's own model to 1e-5", async () => {
        const { config, studyId, validation } = run();
        const own = await ownPredictions(coordinator, config, studyId, validation);
        const server = createServer((req, res) => res.end(readFileSync(join(out, new URL(req.url!, 'http://x').pathname))));
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
        try {
          const net = await tf.loadLayersModel(`http://127.0.0.1:${(server.address() as { port: number }).port}/model.json`);
          const data = encodeTable(validation, config.features);
          const output = tf.tidy(() => (net.predict(tf.tensor2d(data.x, [data.n, data.width])) as tf.Tensor).dataSync());
          expect(data.n).toBeGreaterThan(50);
          for (let r = 0; r < data.n; r++) expect(Math.abs(output[r] - own.outputs[r])).toBeLessThan(1e-5);
          net.dispose();
        } finally {
          server.close();
        }
      }, 120_000);

      it("fedmark predict reproduces the coordinator's round-2 validation metrics and fedmark's own scores", async () => {
        const { config, studyId, validation, status } = run();
        const csv = join(dir, `${scenario.kind}-validation.csv`);
        writeCsvTable(csv, validation.header, validation.rows);
        const scoresCsv = join(dir, `${scenario.kind}-scores.csv`);
        const res = await cli(['predict', '--model', out, '--data', csv, '--out', scoresCsv, '--json', ...(scenario.idColumn ? ['--id-column', scenario.idColumn] : [])]);
        expect(res.stderr).toBe('');
        expect(res.code).toBe(0);
        const { metrics } = JSON.parse(res.stdout) as { metrics: Record<string, number> };
        const reported = status.rounds[1].validationMetrics as Record<string, number>;
        expect(metrics.n).toBe(reported.n);
        const keys = scenario.kind === 'binary' ? ['logLoss', 'brier'] : ['rmse', 'mae', 'bias', 'r2'];
        for (const k of keys) expect(Math.abs(metrics[k] - reported[k]), k).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(reported[k])));
        const own = await ownPredictions(coordinator, config, studyId, validation);
        const scored = readCsvTable({ path: scoresCsv });
        expect(scored.header).toEqual(scenario.idColumn ? [scenario.idColumn, 'score'] : [...validation.header, 'score']);
        scored.rows.forEach((row, r) => expect(Math.abs(Number(row.at(-1)) - own.scores[r])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(own.scores[r]))));
      }, 120_000);

      it('predict names the missing feature columns', async () => {
        const { validation, config } = run();
        const drop = config.features.features[0].name;
        const at = validation.header.indexOf(drop);
        const csv = join(dir, `${scenario.kind}-without.csv`);
        writeCsvTable(csv, validation.header.filter((_, i) => i !== at), validation.rows.map((r) => r.filter((_, i) => i !== at)));
        const res = await cli(['predict', '--model', out, '--data', csv, '--out', join(dir, 'never.csv')]);
        expect(res.code).toBe(1);
        expect(res.stderr).toContain(`line 1: missing feature column "${drop}"`);
      }, 60_000);

      it('verify passes offline and online, and fails after one weight byte changes and with a wrong key', async () => {
        const ok = await cli(['model', 'verify', '--model', out, '--fingerprint', fingerprint]);
        expect(ok.code).toBe(0);
        expect(ok.stdout).toMatch(/^OK: model v2 of study/);
        expect(ok.stdout).toContain(`participants (${scenario.regions.length})`);
        expect(ok.stdout).toContain('privacy: none');
        const online = await cli(['model', 'verify', '--study', run().studyId, '--version', '1', '--fingerprint', fingerprint, ...auth()]);
        expect(online.code).toBe(0);
        expect(online.stdout).toMatch(/^OK: model v1 of study/);

        const tampered = join(dir, `tampered-${scenario.kind}`);
        cpSync(out, tampered, { recursive: true });
        const weights = readFileSync(join(tampered, 'weights.bin'));
        weights[5] ^= 0x10;
        writeFileSync(join(tampered, 'weights.bin'), weights);
        const changed = await cli(['model', 'verify', '--model', tampered]);
        expect(changed.code).toBe(1);
        expect(changed.stderr).toMatch(/^FAILED: weights\.bin differs from the signed model at byte 5 \(tensor dense_0\/kernel, value 1\)/);

        const impostor = join(dir, 'impostor.asc');
        writeFileSync(impostor, (await generateIdentity({ name: 'impostor', passphrase: 'impostor-passphrase' })).publicKeyArmored);
        const wrongKey = await cli(['model', 'verify', '--model', out, '--key', impostor]);
        expect(wrongKey.code).toBe(1);
        expect(wrongKey.stderr).toMatch(/^FAILED: the signature over model\.fmw does not verify with coordinator key/);
        const wrongPin = await cli(['model', 'verify', '--model', out, '--fingerprint', 'ab'.repeat(20)]);
        expect(wrongPin.code).toBe(1);
        const refused = await cli(['model', 'export', '--study', run().studyId, '--format', 'tfjs', '--out', join(dir, 'refused'), '--fingerprint', 'ab'.repeat(20), ...auth()]);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain(`serves key ${fingerprint}, not the pinned --fingerprint`);
      }, 180_000);
    });
  }
});

/** fedmark's own model on `table`: model v2 as the coordinator serves it, in the nodes' network. */
async function ownPredictions(coordinator: CoordinatorProcess, config: StudyConfig, studyId: string, table: CsvTable) {
  await initBackend('wasm');
  const bytes = new Uint8Array(await (await coordinator.api(`/v1/studies/${studyId}/models/2`)).arrayBuffer());
  const net = nodeKindFor(config).createModel(config, encodedWidth(config.features));
  setWeights(net, decodeWeights(bytes));
  const data = encodeTable(table, config.features);
  const outputs = predictScores(net, data.x, data.n, data.width);
  net.dispose();
  const target = config.features.target;
  const toScore = config.task.kind === 'regression' && isNumericTarget(target) ? targetMap(config.task, target).fromOutput : (z: number) => z;
  return { outputs, scores: Float64Array.from(outputs, toScore) };
}

/**
 * A proxy in front of a real coordinator that tampers with what `fedmark model export` downloads:
 * `model` flips the last byte of every model body (and sends the matching hash header, as a
 * man in the middle would); `key` serves another key as the coordinator's.
 */
async function tamperingProxy(target: string, admin: string, mode: 'model' | 'key', impostor: { publicKeyArmored: string; fingerprint: string }) {
  const { sha256Hex } = await import('../../protocols/weights-codec.ts');
  const server = createServer((req, res) => {
    void (async () => {
      const upstream = await fetch(target + req.url, { headers: { authorization: req.headers.authorization ?? `Bearer ${admin}` } });
      let body = new Uint8Array(await upstream.arrayBuffer());
      const headers: Record<string, string> = {};
      upstream.headers.forEach((v, k) => (headers[k] = v));
      delete headers['content-length'];
      delete headers['content-encoding'];
      if (mode === 'model' && headers['fedmark-sha256']) {
        body = Uint8Array.from(body);
        body[body.length - 1] ^= 0x01;
        headers['fedmark-sha256'] = sha256Hex(body);
      }
      if (mode === 'key' && req.url === '/v1/coordinator/key') body = new TextEncoder().encode(JSON.stringify({ fingerprint: impostor.fingerprint, publicKey: impostor.publicKeyArmored, rotations: [] }));
      res.writeHead(upstream.status, headers).end(body);
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => server.close() };
}

describe('fedmark model export refuses a model the coordinator did not sign', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-model-export-mitm-'));
  let coordinator: CoordinatorProcess;
  let studyId: string;
  let impostor: { publicKeyArmored: string; fingerprint: string };

  beforeAll(async () => {
    coordinator = await coordinatorProcess(dir, { dataDir: join(dir, 'db') });
    await coordinator.start();
    const table = readCsvTable({ path: CHURN });
    const config = SCENARIOS[0].study({ header: table.header, rows: table.rows.slice(0, 200), lineOf: table.lineOf });
    // No node needed: a study's round-0 model is signed when the study is created.
    studyId = ((await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json()) as { id: string }).id;
    impostor = await generateIdentity({ name: 'impostor', passphrase: 'impostor-passphrase' });
  }, 240_000);
  afterAll(async () => {
    await Promise.all((coordinator?.all ?? []).map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('verify: a usage mistake exits 2 (a failed check exits 1), naming the flags', async () => {
    const neither = await cli(['model', 'verify']);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain('give either --model DIR (an export, offline) or --study ID (online)');
    const both = await cli(['model', 'verify', '--model', dir, '--version', '1']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--version goes with --study');
  }, 120_000);

  it('exports the round-0 model straight from the coordinator', async () => {
    const res = await cli(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', join(dir, 'direct'), '--coordinator', coordinator.url, '--token', coordinator.admin, '--json']);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ modelVersion: 0 });
  }, 120_000);

  it("a DP study's lineage names its mechanism, budget and the epsilon spent, and verify prints them", async () => {
    const table = readCsvTable({ path: CHURN });
    const config = { ...SCENARIOS[0].study({ header: table.header, rows: table.rows.slice(0, 200), lineOf: table.lineOf }), name: 'export-dp', minNodesPerRound: 2, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: 5, central: { noiseMultiplier: 8, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 1 } } };
    const dpStudy = ((await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json()) as { id: string }).id;
    const out = join(dir, 'dp');
    const exported = await cli(['model', 'export', '--study', dpStudy, '--format', 'tfjs', '--out', out, '--coordinator', coordinator.url, '--token', coordinator.admin]);
    expect(exported.stderr).toBe('');
    const lineage = JSON.parse(readFileSync(join(out, 'lineage.json'), 'utf8'));
    expect(lineage.privacy).toMatchObject({ mechanisms: ['central DP (client-level): noise multiplier 8, fixed clipping, node sampling rate 1'], accountant: 'rdp', delta: 1e-5, budgetEpsilon: 5, epsilon: 0 });
    const verified = await cli(['model', 'verify', '--model', out]);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toContain('privacy: central DP (client-level): noise multiplier 8');
    expect(verified.stdout).toContain('epsilon: client-level 0.000 of a budget of 5, delta 0.00001');
    expect(verified.stdout).toContain('from the folder itself (pass --fingerprint or --key');
  }, 180_000);

  for (const mode of ['model', 'key'] as const) {
    it(`refuses ${mode === 'model' ? 'changed model bytes (with a matching hash header)' : "another key served as the coordinator's"}, and writes nothing`, async () => {
      const proxy = await tamperingProxy(coordinator.url, coordinator.admin, mode, impostor);
      try {
        const out = join(dir, `via-${mode}`);
        const res = await cli(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', out, '--coordinator', proxy.url, '--token', coordinator.admin]);
        expect(res.code).toBe(1);
        expect(res.stderr).toMatch(new RegExp(`model v0 of study ${studyId} \\(sha256 [0-9a-f]{64}\\) is not signed by the coordinator key ${mode === 'key' ? impostor.fingerprint : '[0-9a-f]{40}'}`));
        expect(() => readFileSync(join(out, 'model.json'))).toThrow();
      } finally {
        proxy.close();
      }
    }, 120_000);
  }
});
