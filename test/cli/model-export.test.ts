import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import { registerModelCommands } from '../../cli/model-command.ts';
import { ADMIN, inProcessCoordinator, tinyStudy, type Harness, type TestNode } from '../coordinator/harness.ts';
import { backendOrSkip } from '../helpers/databases.ts';
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
import { decodeWeights, encodeWeights } from '../../protocols/weights-codec.ts';
import { generateIdentity, loadPrivateKey, signArtifact } from '../../protocols/crypto/index.ts';
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

/** `fedmark model ...` in this process: exit code and output; an error thrown by an action counts as exit 1 with its message. */
async function modelCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const program = new Command().exitOverride();
  registerModelCommands(program);
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  const before = process.exitCode;
  process.exitCode = 0;
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  let code: number | undefined;
  try {
    await program.parseAsync(['node', 'fedmark', ...args]);
  } catch (e) {
    code = (e as { exitCode?: number }).exitCode ?? 1;
    stderr += (e as Error).message;
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  code ??= Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { code, stdout, stderr };
}

/** A proxy in front of a coordinator that may send a request elsewhere (`route`) and rewrite the answer. */
async function rewritingProxy(target: string, route: (path: string) => string, rewrite: (path: string, headers: Record<string, string>, body: Uint8Array) => Promise<Uint8Array> | Uint8Array) {
  const server = createServer((req, res) => {
    void (async () => {
      const upstream = await fetch(target + route(req.url!), { headers: { authorization: req.headers.authorization ?? '' } });
      const headers: Record<string, string> = {};
      upstream.headers.forEach((v, k) => (headers[k] = v));
      delete headers['content-length'];
      delete headers['content-encoding'];
      const body = await rewrite(req.url!, headers, new Uint8Array(await upstream.arrayBuffer()));
      res.writeHead(upstream.status, headers).end(body);
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => server.close() };
}

const tinyWeights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

/** Plays one round of a DP study with whoever was sampled (as test/coordinator/privacy-readers.test.ts); true when it completed. */
async function playSampledRound(h: Harness, studyId: string, round: number, nodes: TestNode[]): Promise<boolean> {
  const phase = async () => (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds?.find((r: { round: number }) => r.round === round)?.phase as string | undefined;
  await h.until(async () => ((await phase()) === 'fit' ? true : undefined));
  const participants: string[] = (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body.participants;
  const selected = nodes.filter((n) => participants.includes(n.nodeId));
  for (const n of selected) expect((await h.submit(n, studyId, round, tinyWeights(0.01), { numExamples: 1 })).status).toBe(201);
  if (selected.length >= 2) await h.until(async () => ((await phase()) === 'evaluate' ? true : undefined));
  // Evaluations (or missing updates) are left to their deadline: the clock moves past it.
  h.advanceClock(61_000);
  await h.built.rounds.advanceRound(studyId, round);
  return (await h.until(async () => {
    const p = await phase();
    return p === 'completed' || p === 'failed' ? p : undefined;
  })) === 'completed';
}

/**
 * The coordinator's signed model statement, end to end on an in-process coordinator (PGlite)
 * serving HTTP, with `fedmark model export|verify` run in this process: a node-sampled study
 * (q = 0.5) whose analyst view nulls updatesReceived, and proxies that serve an older model as
 * the latest, an edited configuration, a statement signed by another key, or none.
 */
describe('fedmark model export / verify: the signed model statement', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-model-statement-'));
  let h: Harness | undefined;
  let server: Server | undefined;
  let url: string;
  let studyId: string;
  let latest: number;
  let fingerprint: string;
  let analyst: string;
  let impostor: { sign: (b: Uint8Array) => Promise<string> };

  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) return;
    h = await inProcessCoordinator(backend);
    server = h.app.listen(0, '127.0.0.1');
    await new Promise((r) => server!.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    fingerprint = h.built.keyring.current.fingerprint;
    studyId = await h.createStudy(tinyStudy({ rounds: 4, minNodesPerRound: 2, minNodesToStart: 8, roundDeadlineSeconds: 30, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: 2, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: 0.5 } } }));
    const nodes: TestNode[] = [];
    for (let i = 0; i < 8; i++) nodes.push(await h.enroll(studyId, `n${i}`, true, i < 4 ? 'eu' : 'us'));
    latest = 0;
    for (let round = 1; round <= 4 && latest === 0; round++) if (await playSampledRound(h, studyId, round, nodes)) latest = round;
    analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'eu team', region: 'eu' })).body.token as string;
    const other = await generateIdentity({ name: 'impostor', passphrase: 'impostor-passphrase' });
    const key = await loadPrivateKey(other.privateKeyArmored, 'impostor-passphrase');
    impostor = { sign: (b) => signArtifact(b, key) };
  }, 180_000);
  afterAll(async () => {
    if (server) await new Promise((r) => server!.close(r));
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const exportVia = (coordinator: string, out: string, token = ADMIN) => modelCli(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', out, '--fingerprint', fingerprint, '--coordinator', coordinator, '--token', token]);

  it("an analyst's export under node sampling (updatesReceived null) stores the statement and verifies offline and online; old exports need --allow-unsigned-lineage", async (ctx) => {
    if (!h) return ctx.skip();
    expect(latest).toBeGreaterThan(0);
    const out = join(dir, 'analyst');
    const exported = await exportVia(url, out, analyst);
    expect(exported.stderr).toBe('');
    expect(exported.code).toBe(0);
    const lineage = JSON.parse(readFileSync(join(out, 'lineage.json'), 'utf8'));
    expect(lineage.rounds.length).toBeGreaterThan(0);
    expect(lineage.rounds.every((r: { updatesReceived: unknown }) => r.updatesReceived === null)).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'model-statement.json'), 'utf8'))).toMatchObject({ format: 'fedmark-model-statement', studyId, modelVersion: latest, round: latest, modelSha256: lineage.modelSha256, signedBy: fingerprint });

    const offline = await modelCli(['model', 'verify', '--model', out, '--fingerprint', fingerprint]);
    expect(offline.stderr).toBe('');
    expect(offline.code).toBe(0);
    expect(offline.stdout).toMatch(new RegExp(`signed statement: study ${studyId}, model v${latest}, round ${latest}, config sha256 [0-9a-f]{64}`));
    expect(offline.stdout).toContain("not signed: as reported by the coordinator's API at export time\n  participants");
    const online = await modelCli(['model', 'verify', '--study', studyId, '--fingerprint', fingerprint, '--coordinator', url, '--token', analyst]);
    expect(online.stderr).toBe('');
    expect(online.stdout).toContain(`signed statement: study ${studyId}, model v${latest}`);

    rmSync(join(out, 'model-statement.json'));
    rmSync(join(out, 'model-statement.json.asc'));
    const old = await modelCli(['model', 'verify', '--model', out, '--fingerprint', fingerprint]);
    expect(old.code).toBe(1);
    expect(old.stderr).toMatch(/predates signed model statements.*--allow-unsigned-lineage/);
    const allowed = await modelCli(['model', 'verify', '--model', out, '--fingerprint', fingerprint, '--allow-unsigned-lineage']);
    expect(allowed.code).toBe(0);
    expect(allowed.stdout).toContain('UNVERIFIED LINEAGE: this export predates signed model statements');
  }, 120_000);

  it('an older signed model served as the latest fails export, and writes nothing', async (ctx) => {
    if (!h) return ctx.skip();
    const latestPath = `/v1/studies/${studyId}/model`;
    for (const header of ['kept', 'rewritten'] as const) {
      const proxy = await rewritingProxy(url, (p) => (p === latestPath ? `/v1/studies/${studyId}/models/0` : p), (p, headers, body) => {
        if (p === latestPath && header === 'rewritten') headers['fedmark-model-version'] = String(latest);
        return body;
      });
      try {
        const out = join(dir, `older-${header}`);
        const res = await exportVia(proxy.url, out);
        expect(res.code, header).toBe(1);
        expect(res.stderr).toMatch(new RegExp(`the signed model statement says modelVersion 0, but the coordinator's API says ${latest}`));
        expect(() => readFileSync(join(out, 'lineage.json'))).toThrow();
      } finally {
        proxy.close();
      }
    }
    // The latest model and statement, with only the version header changed: the header must agree with the signed statement.
    const header = await rewritingProxy(url, (p) => p, (p, headers, body) => {
      if (p === latestPath) headers['fedmark-model-version'] = '0';
      return body;
    });
    try {
      const res = await exportVia(header.url, join(dir, 'header-only'));
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(`the signed statement says version ${latest}, the fedmark-model-version header 0`);
    } finally {
      header.close();
    }
  }, 120_000);

  it("a configuration edited in transit, a statement signed by another key, a missing statement, a round that does not fit the schema: export refuses, naming it", async (ctx) => {
    if (!h) return ctx.skip();
    const statusPath = `/v1/studies/${studyId}`;
    const json = (body: Uint8Array, edit: (v: any) => void) => {
      const v = JSON.parse(new TextDecoder().decode(body));
      edit(v);
      return new TextEncoder().encode(JSON.stringify(v));
    };
    const cases: Array<{ name: string; rewrite: (p: string, headers: Record<string, string>, body: Uint8Array) => Promise<Uint8Array> | Uint8Array; error: RegExp }> = [
      { name: 'config', rewrite: (p, _h, body) => (p === statusPath ? json(body, (s) => (s.config.features.features[0].mean += 1000)) : body), error: /configSha256 [0-9a-f]{64}, but the study configuration in the coordinator's API hashes to/ },
      {
        name: 'signer',
        rewrite: async (_p, headers, body) => {
          if (headers['fedmark-model-statement']) headers['fedmark-model-statement-signature'] = Buffer.from(await impostor.sign(new Uint8Array(Buffer.from(headers['fedmark-model-statement'], 'base64')))).toString('base64');
          return body;
        },
        error: /model statement's signature does not verify with coordinator key/,
      },
      { name: 'none', rewrite: (_p, headers, body) => (delete headers['fedmark-model-statement'], body), error: /comes without a signed model statement/ },
      { name: 'schema', rewrite: (p, _h, body) => (p === statusPath ? json(body, (s) => (s.rounds[0].updatesReceived = 'many')) : body), error: /refusing to write lineage\.json: .*field rounds\.0\.updatesReceived/ },
    ];
    for (const c of cases) {
      const proxy = await rewritingProxy(url, (p) => p, c.rewrite);
      try {
        const out = join(dir, `tampered-${c.name}`);
        const res = await exportVia(proxy.url, out);
        expect(res.code, c.name).toBe(1);
        expect(res.stderr, c.name).toMatch(c.error);
        expect(() => readFileSync(join(out, 'lineage.json'))).toThrow();
      } finally {
        proxy.close();
      }
    }
  }, 120_000);
});
