/**
 * `npm run bench`: the numbers behind our speed and privacy claims, as one JSON document on the
 * last line of stdout (machine-readable, also written to bench/results/latest.json; `npm run
 * --silent bench` leaves npm's own header out) and readable tables on stderr. Sections can be picked: `npm run bench -- --only aggregation,training`.
 *
 * Benchmarks are not tests: nothing here asserts a time.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '../models/tf.ts';
import { benchAggregation, FLOWER_AGGREGATE_SECONDS, numpyFloor } from './aggregation-bench.ts';
import { benchCoordinatorPath } from './coordinator-path-bench.ts';
import { trainBench, trainBenchRatios } from './train-bench.ts';
import { privacyUtility } from './privacy-utility.ts';
import { noiseBench } from './noise-bench.ts';
import { strategiesBench, strategiesBenchSettings, STRATEGIES_TABLE_HEADER, strategiesTableRows } from './strategies-bench.ts';
import { attacksBench, attacksBenchSettings, ATTACKS_TABLE_HEADER, attacksTableRows } from './attacks-bench.ts';
import { createModel, encodeTable, inferFeatureSpec, initBackend, readCsvTable, splitRows, subset, trainLocal } from '../models/index.ts';
import { clippedGradientSum, clippedGradientSumNaive, dpSgdLayers } from '../models/dp-sgd.ts';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import { computeEpsilon } from '../protocols/privacy/index.ts';

const DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));
const SECTIONS = ['aggregation', 'training', 'trainers', 'dpsgd', 'accountant', 'noise', 'demo', 'kinds', 'privacy', 'strategies', 'attacks'] as const;

const { values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' }, legacy: { type: 'boolean' } }, allowPositionals: true });
const wanted = new Set(values.only ? values.only.split(',') : SECTIONS);
const say = (line = '') => process.stderr.write(line + '\n');
const results: Record<string, unknown> = { machine: { cpus: (await import('node:os')).cpus().length, node: process.version, at: new Date().toISOString() } };

function table(title: string, header: string[], rows: Array<Array<string | number>>) {
  say(`\n${title}`);
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toPrecision(4)) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  for (const r of cells) say('  ' + r.map((c, i) => String(c).padStart(widths[i])).join('  '));
}

function median(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

if (wanted.has('aggregation')) {
  const agg = await benchAggregation({ updates: 100, parameters: 1_000_000 });
  // The floor (numpy's mean over the stacked updates, memory bandwidth) in the same sitting, and Flower's aggregate() as recorded.
  const floor = numpyFloor(100, 1_000_000);
  const vsFloor = floor.seconds ? agg.seconds / floor.seconds : null;
  results.aggregation = { ...agg, numpyFloor: floor, ratioToFloor: vsFloor, flowerAggregateSeconds: FLOWER_AGGREGATE_SECONDS, speedupVsFlower: FLOWER_AGGREGATE_SECONDS / agg.seconds };
  table(`FedAvg aggregation (zero-copy decode + ${agg.kernel} fold, float64 sums; median of ${agg.runs.length})`, ['updates', 'parameters', 'seconds', 'CPU s', 'GB/s', 'decode s', 'peak RSS MB', 'numpy floor s', 'x floor', 'x faster than Flower'], [[agg.updates, agg.parameters, agg.seconds, agg.cpuSeconds, agg.gbPerSecond, agg.decodeSeconds, agg.peakRssMb, floor.seconds ?? `- (${floor.skipped})`, vsFloor ?? '-', FLOWER_AGGREGATE_SECONDS / agg.seconds]]);
  // The coordinator's real path also resumes the round from the database and persists the running
  // sum after every update (crash safety); priced here on PGlite, before and after our bytea conversion.
  const paths = [await benchCoordinatorPath({ updates: 10, parameters: 1_000_000 }), await benchCoordinatorPath({ updates: 3, parameters: 1_000_000, byteaConversion: 'pglite-builtin' })];
  results.coordinatorPath = paths;
  table('Coordinator path per update (decode, resume, fold, persist 8 MB float64 state in a transaction; PGlite)', ['bytea conversion', 'updates', 'parameters', 's/update', 'fold s/update', 'db s/update', 'GB/s'], paths.map((p) => [p.byteaConversion, p.updates, p.parameters, p.seconds / p.updates, p.foldSeconds / p.updates, p.databaseSeconds / p.updates, p.gbPerSecond]));
}

const churn = (() => {
  const t = readCsvTable({ path: DATA });
  const spec = inferFeatureSpec(t, { target: 'churn' });
  const all = encodeTable(t, spec);
  const [trainIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
  return { spec, train: subset(all, trainIdx) };
})();

if (wanted.has('training')) {
  const rows: Array<Record<string, unknown>> = [];
  for (const backend of ['tensorflow', 'wasm', 'cpu'] as const) {
    try {
      await initBackend(backend);
    } catch (err) {
      rows.push({ backend, available: false, reason: err instanceof Error ? err.message.split('\n')[0] : String(err) });
      continue;
    }
    const model = createModel({ kind: 'mlp', hidden: [32, 16] }, encodedWidth(churn.spec), 42);
    const config = TrainingConfig.parse({ localEpochs: 1, batchSize: 32 });
    await trainLocal(model, churn.train, config); // warm-up: kernels compiled, memory allocated
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await trainLocal(model, churn.train, { ...config, localEpochs: 2 });
      times.push((performance.now() - t) / 1000);
    }
    model.dispose();
    rows.push({ backend, available: true, model: `mlp ${encodedWidth(churn.spec)}-32-16-1`, batchSize: 32, rows: churn.train.n, samplesPerSecond: (2 * churn.train.n) / median(times) });
  }
  results.training = rows;
  table('Local training throughput (shipped churn data, MLP, batch 32, median of 3)', ['backend', 'samples/s', 'note'], rows.map((r) => [String(r.backend), r.available ? Math.round(r.samplesPerSecond as number) : '-', r.available ? '' : String(r.reason).slice(0, 60)]));
  await initBackend('wasm');
}

if (wanted.has('trainers')) {
  // Issue 13, local training: fused trainer vs TensorFlow.js wasm vs PyTorch CPU (bench/train-bench.ts).
  const rows = await trainBench();
  const ratios = trainBenchRatios(rows);
  results.localTraining = { model: 'mlp 40-64-32-1, adam, synthetic rows', rows, ratios };
  const round = (x: number | null | undefined) => (x == null ? '-' : Math.round(x));
  table('Local training, MLP 40-64-32-1 + Adam (fused = FEDMARK_TRAINER=fused; PyTorch skipped without torch)', ['trainer', 'batch', 'samples/s', 'samples/CPU-s', 'threads', 'note'], rows.map((r) => [r.trainer, r.batch, round(r.samplesPerSecond), round(r.samplesPerCpuSecond), r.threads, r.note ?? '']));
  table('Local training ratios (> 1: fused faster; PyTorch at 2 threads)', ['batch', 'fused / tfjs-wasm', 'fused / pytorch', 'per CPU-second'], ratios.map((q) => [q.batch, q.fusedOverTfjs ?? '-', q.fusedOverPytorch ?? '-', q.fusedOverPytorchCpu ?? '-']));
  await initBackend('wasm');
}

if (wanted.has('dpsgd')) {
  await initBackend('wasm');
  const model = createModel({ kind: 'mlp', hidden: [32, 16] }, encodedWidth(churn.spec), 42);
  const layers = dpSgdLayers(model);
  const batch = 64;
  const x = tf.tensor2d(churn.train.x.subarray(0, batch * churn.train.width), [batch, churn.train.width]);
  const y = tf.tensor2d(churn.train.y.subarray(0, batch), [batch, 1]);
  const timeIt = (fn: () => void, reps: number) => {
    fn();
    const t = performance.now();
    for (let i = 0; i < reps; i++) fn();
    return (performance.now() - t) / reps / 1000;
  };
  const vectorized = timeIt(() => tf.tidy(() => void clippedGradientSum(layers, x, y, 1).grads.map((g) => g.dataSync())), 50);
  const naive = timeIt(() => clippedGradientSumNaive(layers, x, y, 1).forEach((g) => g.dispose()), 3);
  results.dpSgd = { batch, vectorizedSecondsPerStep: vectorized, naiveSecondsPerStep: naive, speedup: naive / vectorized };
  table(`DP-SGD per-example clipping, one step of ${batch} rows (MLP, wasm)`, ['method', 'ms/step', 'speedup'], [
    ['vectorized (one batched pass)', vectorized * 1000, naive / vectorized],
    ['one example at a time', naive * 1000, 1],
  ]);
  model.dispose();
}

if (wanted.has('accountant')) {
  const rows: Array<Record<string, unknown>> = [];
  for (const [q, sigma, steps] of [[0.01, 1.1, 1000], [0.01, 1.1, 10000], [1, 5, 20]] as const) {
    for (const accountant of ['rdp', 'pld'] as const) {
      const t = performance.now();
      const epsilon = computeEpsilon({ q, sigma, steps, delta: 1e-5 }, accountant);
      rows.push({ accountant, q, sigma, steps, delta: 1e-5, epsilon, ms: performance.now() - t });
    }
  }
  results.accountant = rows;
  table('Privacy accountants (epsilon at delta 1e-5; PLD never below the truth, tighter than RDP)', ['accountant', 'q', 'sigma', 'steps', 'epsilon', 'ms'], rows.map((r) => [String(r.accountant), r.q as number, r.sigma as number, r.steps as number, r.epsilon as number, r.ms as number]));
}

if (wanted.has('noise')) {
  const rows = noiseBench();
  results.noise = rows;
  table('Noise sampler (OS CSPRNG; exact discrete Gaussian vs the Box-Muller it replaced; best of 3)', ['sampler', 'values', 's', 'samples/s'], rows.map((r) => [r.sampler, r.values, r.seconds, Math.round(r.samplesPerSecond)]));
}

if (wanted.has('demo')) {
  const { runDemo } = await import('../cli/demo.ts');
  const out = mkdtempSync(join(tmpdir(), 'fedmark-bench-demo-'));
  const rounds = 20;
  const wall = performance.now();
  const demo = await runDemo({ rounds, nodes: 10, out, localBaseline: false, progress: process.stderr });
  const wallSeconds = (performance.now() - wall) / 1000;
  // Split each round from the logs: training (slowest node), aggregation (coordinator) and the
  // evaluation phase are measured; "transfer+wait" is what remains of the fit phase (HTTP, OpenPGP
  // signing, sealing and verification, long-poll scheduling, waiting for the slowest node): a
  // residual, not a measured transfer.
  const read = (f: string) => readFileSync(join(out, 'logs', f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const coordinator = read('coordinator.log');
  const nodes = readdirSync(join(out, 'logs')).filter((f) => f.startsWith('node-')).map(read);
  const perRound: Array<{ round: number; seconds: number; fitSeconds: number; trainSeconds: number; aggregateSeconds: number; transferAndWaitSeconds: number; evaluationSeconds: number }> = [];
  for (let r = 2; r <= rounds; r++) {
    const started = coordinator.find((l) => l.msg === 'round started' && l.round === r)?.time as number;
    const aggregated = coordinator.find((l) => l.msg === 'round aggregated' && l.round === r);
    const completed = coordinator.find((l) => l.msg === 'round completed' && l.round === r)?.time as number;
    const train = Math.max(...nodes.map((n) => (n.find((l) => l.msg === 'sent model update' && l.round === r)?.trainSeconds as number) ?? 0));
    const fitSeconds = ((aggregated?.time as number) - started) / 1000;
    const aggregateSeconds = (aggregated?.aggregateMs as number) / 1000;
    perRound.push({ round: r, seconds: (completed - started) / 1000, fitSeconds, trainSeconds: train, aggregateSeconds, transferAndWaitSeconds: fitSeconds - train - aggregateSeconds, evaluationSeconds: (completed - (aggregated?.time as number)) / 1000 });
  }
  const med = (k: keyof (typeof perRound)[number]) => median(perRound.map((p) => p[k] as number));
  results.demo = { rounds, nodes: demo.nodes, wallSeconds, globalTestAuc: demo.globalTestAuc, medianRound: { seconds: med('seconds'), train: med('trainSeconds'), aggregate: med('aggregateSeconds'), transferAndWait: med('transferAndWaitSeconds'), evaluation: med('evaluationSeconds') }, perRound };
  table(`Demo federation: ${demo.nodes} node processes, ${rounds} rounds over HTTP (median round of 2..${rounds})`, ['round s', 'train s', 'aggregate s', 'transfer+wait s (residual)', 'evaluation s', 'wall s', 'test AUC'], [
    [med('seconds'), med('trainSeconds'), med('aggregateSeconds'), med('transferAndWaitSeconds'), med('evaluationSeconds'), wallSeconds, demo.globalTestAuc ?? '-'],
  ]);
  rmSync(out, { recursive: true, force: true });
}

// Issue 9's model kinds on their shipped data, as `npm start -- --task forecast|recommend --json`
// prints them: the global model against its baseline and the mean local-only model (and the
// nodes' personalized models), with the demo's wall time.
if (wanted.has('kinds')) {
  const { runDemo } = await import('../cli/demo.ts');
  const pick = (r: object, keys: string[]) => Object.fromEntries(keys.map((k) => [k, (r as Record<string, unknown>)[k] ?? null]));
  const kinds: Record<string, Record<string, unknown>> = {};
  for (const [task, keys] of [
    ['forecast', ['globalWape', 'naiveWape', 'meanLocalOnlyWape', 'personalizedWape', 'globalMase', 'naiveMase', 'meanLocalOnlyMase', 'nodes']],
    ['recommend', ['globalRecallAtK', 'popularityRecallAtK', 'meanLocalOnlyRecallAtK', 'personalizedRecallAtK', 'globalNdcgAtK', 'popularityNdcgAtK', 'meanLocalOnlyNdcgAtK', 'personalizedNdcgAtK', 'nodes']],
  ] as const) {
    const out = mkdtempSync(join(tmpdir(), `fedmark-bench-${task}-`));
    try {
      const started = performance.now();
      const result = await runDemo({ task, out, progress: process.stderr });
      // Wall time of the whole demo as a user runs it (data, processes, federation, baselines, audit).
      kinds[task] = { ...pick(result, [...keys]), wallSeconds: (performance.now() - started) / 1000 };
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }
  results.kinds = kinds;
  const f = kinds.forecast;
  const r = kinds.recommend;
  const n = (v: unknown) => (typeof v === 'number' ? v : '-');
  table('Demand forecasting (npm start -- --task forecast): test WAPE, lower is better', ['global', 'seasonal naive', 'mean local-only', 'personalized', 'nodes', 'wall s'], [[n(f.globalWape), n(f.naiveWape), n(f.meanLocalOnlyWape), n(f.personalizedWape), n(f.nodes), n(f.wallSeconds)]]);
  table('Recommendation (npm start -- --task recommend): recall@10, higher is better', ['global', 'popularity', 'mean local-only', 'personalized', 'nodes', 'wall s'], [[n(r.globalRecallAtK), n(r.popularityRecallAtK), n(r.meanLocalOnlyRecallAtK), n(r.personalizedRecallAtK), n(r.nodes), n(r.wallSeconds)]]);
}

if (wanted.has('privacy')) {
  // `--quick`: one run per DP row, tuned rows only (about 3 minutes on an idle 2-core machine);
  // `--legacy`: also the DP-SGD settings before tuning.
  await initBackend('wasm');
  const { repeats, rows } = await privacyUtility({ quick: values.quick, legacy: values.legacy, progress: say });
  results.privacyUtility = { data: 'data/mlc_churn.csv, 10 regions by state, test = held-out 20%', delta: 1e-5, repeats, quick: values.quick ?? false, at: new Date().toISOString(), rows };
  // Also on its own (latest.json holds only the sections of the last run): the README's table.
  mkdirSync(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
  writeFileSync(fileURLToPath(new URL(`./results/privacy-utility${values.quick ? '-quick' : ''}.json`, import.meta.url)), JSON.stringify(results.privacyUtility, null, 2));
  const f = (x: number | null, digits = 3) => (x === null ? '-' : x.toFixed(digits));
  table(
    `Privacy vs utility (shipped churn data, 10 regions by state, test AUC on 1,000 held-out rows; DP rows: mean of ${repeats} run(s) +- std; epsilon spent = what the accountant charges each node; delta 1e-5)`,
    ['model, mechanism', 'features', 'params', 'eps target', 'eps spent', 'accountant', 'noise mult.', 'q', 'batch (min-max)', 'steps/round', 'rounds', 'clip', 'lr', 'noise norm of mean', 'test AUC', 'std'],
    rows.map((r) => [r.label, r.features === 'lean' ? 'lean' : 'all', r.parameters, r.epsilon ?? '-', f(r.epsilonSpent), r.accountant ?? '-', f(r.noiseMultiplier), f(r.samplingRate), r.expectedBatch ? `${r.expectedBatch[0].toFixed(0)}-${r.expectedBatch[1].toFixed(0)}` : String(r.batchSize ?? '-'), r.stepsPerRound ?? (r.localEpochs ? `${r.localEpochs} epoch` : '-'), r.rounds, r.clipNorm ?? '-', r.learningRate, f(r.noiseNormOfMean, 2), f(r.testAuc, 4), r.testAucRuns.length > 1 ? f(r.testAucStd, 4) : '-']),
  );
}

if (wanted.has('strategies')) {
  await initBackend('wasm');
  const settings = strategiesBenchSettings();
  const rows = await strategiesBench();
  results.strategies = { settings, rows };
  table(
    `Strategies (shipped churn data, ${settings.rounds} rounds, MLP 32-16, ${settings.localEpochs} local epoch(s) of Adam lr 0.01 batch 32 for every strategy, default parameters; global test AUC; in process)`,
    STRATEGIES_TABLE_HEADER,
    strategiesTableRows(rows),
  );
}

if (wanted.has('attacks')) {
  // Real processes (a coordinator and 10 nodes per federation, 21 federations): about 10 minutes on 2 cores.
  const settings = attacksBenchSettings();
  const rows = await attacksBench();
  results.attacks = { settings, rows };
  table(
    `Attacks and defenses (shipped churn data, 10 nodes of which ${settings.malicious} attacks, ${settings.rounds} rounds of MLP 32-16 per federation; test AUC of the final global model, validation AUC as the coordinator reports it)`,
    ATTACKS_TABLE_HEADER,
    attacksTableRows(rows),
  );
}

mkdirSync(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
writeFileSync(fileURLToPath(new URL('./results/latest.json', import.meta.url)), JSON.stringify(results, null, 2));
process.stdout.write(JSON.stringify(results) + '\n');
