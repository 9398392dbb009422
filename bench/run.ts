/**
 * `npm run bench`: the numbers behind our speed and privacy claims, as one JSON document on the
 * last line of stdout (machine-readable, also written to bench/results/latest.json; `npm run
 * --silent bench` leaves npm's own header out) and readable tables on stderr. Sections can be picked: `npm run bench -- --only aggregation,training`.
 * The demo runs three times (`--demo-runs N`, bench/demo-runs.ts): its figures are medians over the runs.
 *
 * Benchmarks are not tests: nothing here asserts a time.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '../models/tf.ts';
import { fedavgFigures } from './aggregation-bench.ts';
import { nodeTransportBench } from './node-transport-bench.ts';
import { benchServicePath, type ServicePathResult } from './coordinator-path-bench.ts';
import { speedRows, speedTableCells, SPEED_TABLE_HEADER } from './speed-table.ts';
import { benchScale } from './scale-bench.ts';
import { benchDemo } from './sim/demo-run.ts';
import { compareFlower } from './compare-flower.ts';
import { pgliteProtocolBench } from './pglite-protocol-bench.ts';
import { trainBench, trainBenchRatios } from './train-bench.ts';
import { cryptoRequestBench } from './crypto-request-bench.ts';
import { privacyUtility } from './privacy-utility.ts';
import { noiseBench } from './noise-bench.ts';
import { strategiesBench, strategiesBenchSettings, STRATEGIES_TABLE_HEADER, strategiesTableRows } from './strategies-bench.ts';
import { attacksBench, attacksBenchSettings, ATTACKS_TABLE_HEADER, attacksTableRows } from './attacks-bench.ts';
import { createModel, encodeTable, inferFeatureSpec, initBackend, readCsvTable, splitRows, subset, trainLocal } from '../models/index.ts';
import { clippedGradientSum, clippedGradientSumNaive, dpSgdLayers } from '../models/dp-sgd.ts';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import { computeEpsilon } from '../protocols/privacy/index.ts';
import { roundAnatomy } from './round-anatomy.ts';
import { parseDemoRuns, summarizeDemoRuns, type DemoRunFigures } from './demo-runs.ts';

const DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));
const SECTIONS = ['aggregation', 'training', 'trainers', 'dpsgd', 'accountant', 'noise', 'demo', 'kinds', 'privacy', 'strategies', 'attacks', 'scale', 'speed', 'crypto', 'transport', 'pglite'] as const;

const { values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' }, legacy: { type: 'boolean' }, 'compare-flower': { type: 'boolean' }, postgres: { type: 'string' }, 'demo-runs': { type: 'string' } }, allowPositionals: true });
const wanted = new Set<string>(values.only ? values.only.split(',') : SECTIONS);
const unknown = [...wanted].filter((s) => !(SECTIONS as readonly string[]).includes(s));
if (unknown.length) {
  process.stderr.write(`npm run bench: unknown section ${unknown.join(', ')} (sections: ${SECTIONS.join(', ')})\n`);
  process.exit(2);
}
let demoRuns: number;
try {
  demoRuns = parseDemoRuns(values['demo-runs'], values.quick ?? false);
} catch (err) {
  process.stderr.write(`npm run bench: ${(err as Error).message}\n`);
  process.exit(2);
}
// Issue 13's table (`speed`) is built from the sections that measure its figures.
if (wanted.has('speed')) for (const s of ['aggregation', 'trainers', 'demo', 'scale']) wanted.add(s);
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

type PerRound = { round: number; seconds: number; fitSeconds: number; trainSeconds: number; aggregateSeconds: number; transferAndWaitSeconds: number; evaluationSeconds: number };
type DemoRun = { figures: DemoRunFigures; nodes: number; perRound: PerRound[]; medianRound: Record<'seconds' | 'train' | 'aggregate' | 'transferAndWait' | 'evaluation', number>; anatomy: ReturnType<typeof roundAnatomy> };

/** One run of the 10-node demo, its figures and its rounds from the processes' logs. */
async function measureDemo(rounds: number): Promise<DemoRun> {
  const { runDemo } = await import('../cli/demo.ts');
  const out = mkdtempSync(join(tmpdir(), 'fedmark-bench-demo-'));
  try {
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
    const perRound: PerRound[] = [];
    for (let r = 2; r <= rounds; r++) {
      const started = coordinator.find((l) => l.msg === 'round started' && l.round === r)?.time as number;
      const aggregated = coordinator.find((l) => l.msg === 'round aggregated' && l.round === r);
      const completed = coordinator.find((l) => l.msg === 'round completed' && l.round === r)?.time as number;
      const train = Math.max(...nodes.map((n) => (n.find((l) => l.msg === 'sent model update' && l.round === r)?.trainSeconds as number) ?? 0));
      const fitSeconds = ((aggregated?.time as number) - started) / 1000;
      const aggregateSeconds = (aggregated?.aggregateMs as number) / 1000;
      perRound.push({ round: r, seconds: (completed - started) / 1000, fitSeconds, trainSeconds: train, aggregateSeconds, transferAndWaitSeconds: fitSeconds - train - aggregateSeconds, evaluationSeconds: (completed - (aggregated?.time as number)) / 1000 });
    }
    const med = (k: keyof PerRound) => median(perRound.map((p) => p[k]));
    // The demo's own figures (cli/demo-federation.ts speedFigures): round 2.. median from the
    // coordinator's round lines, each process's peak RSS (VmHWM) and CPU as it reported them on exit.
    const figures: DemoRunFigures = { medianRoundSeconds: demo.medianRoundSeconds ?? null, roundOneSeconds: demo.roundOneSeconds ?? null, wallSeconds, globalTestAuc: demo.globalTestAuc ?? null, coordinatorPeakRssMb: demo.coordinatorPeakRssMb ?? null, nodePeakRssMb: demo.nodePeakRssMb ?? null, coordinatorCpuSeconds: demo.coordinatorCpuSeconds ?? null, nodeCpuSeconds: demo.nodeCpuSeconds ?? null };
    const medianRound = { seconds: med('seconds'), train: med('trainSeconds'), aggregate: med('aggregateSeconds'), transferAndWait: med('transferAndWaitSeconds'), evaluation: med('evaluationSeconds') };
    return { figures, nodes: demo.nodes, perRound, medianRound, anatomy: roundAnatomy(coordinator, nodes) };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

if (wanted.has('aggregation')) {
  // Issue 13: FedAvg of 100 x 1M (zero-copy decode + fold), the plain loop beside it, numpy's floor, Flower's aggregate().
  const agg = await fedavgFigures({ updates: 100, parameters: 1_000_000 });
  results.aggregation = agg;
  const floor = agg.numpyFloor;
  table(`FedAvg aggregation (zero-copy decode + ${agg.kernel} fold, float64 sums; median of 5)`, ['updates', 'parameters', 'seconds', 'CPU s', 'plain loop s', 'decode s', 'peak RSS MB', 'numpy floor s', 'x floor', 'x Flower aggregate()', 'goal s'], [[agg.updates, agg.parameters, agg.seconds, agg.cpuSeconds, agg.scalarKernel.seconds, agg.decodeSeconds, agg.peakRssMb, floor.seconds ?? `- (${floor.skipped})`, agg.ratioToFloor ?? '-', agg.ratioToFlower, agg.goalSeconds]]);
  // The coordinator's real path for one 1M-parameter update (the round service's submitUpdate:
  // decode, lock, fold, store once, audit, commit), on PGlite and on PostgreSQL when reachable.
  // Round 2 is a running coordinator's (round 1 of a new database grows its files: see timedRound).
  const paths: ServicePathResult[] = [await benchServicePath({ database: 'pglite', updates: 10 }), await benchServicePath({ database: 'pglite', updates: 10, round: 1 })];
  try {
    paths.push(await benchServicePath({ database: 'postgres', updates: 10 }));
  } catch (err) {
    say(`coordinator path on PostgreSQL skipped: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  results.coordinatorPath = paths;
  table('Coordinator path per 1M-parameter update (submitUpdate: decode, lock, fold, store once, audit, commit)', ['database', 'round', 'updates', 's/update', 'median s', 'CPU s/update', 'WAL bytes/update', 'decode s', 'fold s', 'persist s', 'close s'], paths.map((p) => [p.database, p.timedRound, p.updates, p.secondsPerUpdate, p.medianSecondsPerUpdate, p.cpuSecondsPerUpdate, Math.round(p.walBytesPerUpdate), p.components.decodeSeconds, p.components.foldSeconds, p.components.persistSeconds, p.closeSeconds]));
}

const churn = (() => {
  const t = readCsvTable({ path: DATA });
  const spec = inferFeatureSpec(t, { target: 'churn' });
  const all = encodeTable(t, spec);
  const [trainIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
  return { spec, train: subset(all, trainIdx) };
})();

if (wanted.has('training')) {
  // Per TensorFlow.js backend: TensorFlow.js's own trainer (the fused one is the default, section `trainers`).
  const savedTrainer = process.env.FEDMARK_TRAINER;
  process.env.FEDMARK_TRAINER = 'tfjs';
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
  if (savedTrainer === undefined) delete process.env.FEDMARK_TRAINER;
  else process.env.FEDMARK_TRAINER = savedTrainer;
  table('Local training throughput, TensorFlow.js trainer per backend (shipped churn data, MLP, batch 32, median of 3)', ['backend', 'samples/s', 'note'], rows.map((r) => [String(r.backend), r.available ? Math.round(r.samplesPerSecond as number) : '-', r.available ? '' : String(r.reason).slice(0, 60)]));
  await initBackend('wasm');
}

if (wanted.has('pglite')) {
  // Issue 13: a prepared execution on PGlite, its own message path against pglite-protocol.ts (bench/pglite-protocol-bench.ts).
  const rows = await pgliteProtocolBench({ executions: values.quick ? 300 : 2000 });
  results.pgliteProtocol = rows;
  table('PGlite prepared execution: PGlite\'s message path vs pglite-protocol.ts (ms per execution, median of 5 alternating blocks)', ['statement', 'PGlite ms', 'ours ms', 'ratio'], rows.map((r) => [r.statement, r.pgliteMs, r.oursMs, r.ratio]));
}

if (wanted.has('trainers')) {
  // Issue 13, local training: fused trainer vs TensorFlow.js wasm vs PyTorch CPU (bench/train-bench.ts).
  const rows = await trainBench();
  const ratios = trainBenchRatios(rows);
  results.localTraining = { model: 'mlp 40-64-32-1, adam, synthetic rows', rows, ratios };
  const round = (x: number | null | undefined) => (x == null ? '-' : Math.round(x));
  table('Local training, MLP 40-64-32-1 + Adam (fused: the default trainer; tfjs-wasm: FEDMARK_TRAINER=tfjs; PyTorch skipped without torch)', ['trainer', 'batch', 'samples/s', 'samples/CPU-s', 'threads', 'note'], rows.map((r) => [r.trainer, r.batch, round(r.samplesPerSecond), round(r.samplesPerCpuSecond), r.threads, r.note ?? '']));
  table('Local training ratios (> 1: fused faster; PyTorch at 2 threads, fused on 1)', ['batch', 'fused / tfjs-wasm', 'fused / pytorch', 'per CPU-second', 'recorded PyTorch samples/s', 'fused / recorded'], ratios.map((q) => [q.batch, q.fusedOverTfjs ?? '-', q.fusedOverPytorch ?? '-', q.fusedOverPytorchCpu ?? '-', q.recordedPytorch ?? '-', q.fusedOverRecordedPytorch ?? '-']));
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
  const rounds = 20;
  const runs: DemoRun[] = [];
  for (let i = 0; i < demoRuns; i++) {
    if (demoRuns > 1) say(`\nDemo federation: run ${i + 1} of ${demoRuns}`);
    runs.push(await measureDemo(rounds));
  }
  const summary = summarizeDemoRuns(runs.map((r) => r.figures));
  const { perRound, anatomy, medianRound, nodes } = runs[summary.medianRun];
  // The speed table's figures are the runs' medians (peak RSS: the highest run); the rounds tabled
  // below are the median run's.
  const f = summary.figures;
  results.demo = { rounds, nodes, runs: runs.map((r) => r.figures), range: summary.range, medianRun: summary.medianRun, ...f, medianRound, perRound, anatomy };
  if (demoRuns > 1) {
    table(`Demo federation: ${demoRuns} runs (the median of each figure, peak RSS the highest run; \`--demo-runs N\`)`, ['run', 'median round s', 'round 1 s', 'wall s', 'test AUC', 'coordinator peak MB', 'node peak MB'], [
      ...runs.map((r, i) => [i + 1, r.figures.medianRoundSeconds ?? '-', r.figures.roundOneSeconds ?? '-', r.figures.wallSeconds, r.figures.globalTestAuc ?? '-', r.figures.coordinatorPeakRssMb ?? '-', r.figures.nodePeakRssMb ?? '-']),
      ['summary', f.medianRoundSeconds ?? '-', f.roundOneSeconds ?? '-', f.wallSeconds ?? '-', f.globalTestAuc ?? '-', f.coordinatorPeakRssMb ?? '-', f.nodePeakRssMb ?? '-'],
    ]);
  }
  const which = demoRuns > 1 ? `; run ${summary.medianRun + 1}, the median one` : '';
  table(`Demo federation: ${nodes} node processes, ${rounds} rounds over HTTP (median round of 2..${rounds}${which})`, ['round s', 'train s', 'aggregate s', 'transfer+wait s (residual)', 'evaluation s', 'wall s', 'test AUC'], [
    [medianRound.seconds, medianRound.train, medianRound.aggregate, medianRound.transferAndWait, medianRound.evaluation, runs[summary.medianRun].figures.wallSeconds, runs[summary.medianRun].figures.globalTestAuc ?? '-'],
  ]);
  // The same rounds by phase, with each phase's CPU from the lines' cpuMs (bench/round-anatomy.ts).
  const am = anatomy.median;
  if (am) {
    table(`Demo federation: where a round goes (median over ${anatomy.perRound.length} rounds, ${anatomy.perRound[0].round}..${anatomy.perRound.at(-1)!.round}${which}; a round runs from its opening to the next's)`, ['round s', 'opening -> first update s', 'intakes s', 'close s', 'next opening s', 'coordinator CPU ms', 'nodes CPU ms (sum)'], [
      [am.seconds, am.firstUpdateSeconds, am.intakeSeconds, am.closeSeconds, am.openSeconds, am.coordinatorCpuMs ?? '-', am.nodesCpuMs ?? '-'],
    ]);
  }
  const mb = (x: number | null) => x ?? '-';
  table(`Demo federation: processes (peak RSS from each process's VmHWM, CPU over its life${demoRuns > 1 ? '; medians, peak RSS the highest run' : ''})`, ['round 1 s', 'coordinator peak MB', 'node peak MB (max)', 'coordinator CPU s', 'nodes CPU s (sum)'], [[mb(f.roundOneSeconds), mb(f.coordinatorPeakRssMb), mb(f.nodePeakRssMb), mb(f.coordinatorCpuSeconds), mb(f.nodeCpuSeconds)]]);
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

if (wanted.has('scale')) {
  // Issue 13, scale: the real demo with 51 nodes (one per state), and 100 simulated nodes x 1M
  // parameters speaking the real protocol to a real coordinator process (bench/scale-bench.ts).
  const demo51 = await benchDemo({ nodes: 51, rounds: 20 });
  // And with the coordinator on PostgreSQL (a new database), when the local server answers.
  let demo51Postgres: Awaited<ReturnType<typeof benchDemo>> | undefined;
  try {
    demo51Postgres = await benchDemo({ nodes: 51, rounds: 20, postgres: true });
  } catch (err) {
    say(`51 nodes on PostgreSQL skipped: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  const sim = await benchScale({ nodes: 100, parameters: 1_000_000, rounds: values.quick ? 3 : 5 });
  results.scale = { demo51, ...(demo51Postgres ? { demo51Postgres } : {}), simulation: sim };
  const demoRow = (run: typeof demo51) => {
    const dd = run.demo as { medianRoundSeconds?: number | null; globalTestAuc?: number | null } | null;
    return [run.database, run.wallSeconds, dd?.medianRoundSeconds ?? '-', dd?.globalTestAuc ?? '-', run.coordinator?.peakRssMb ?? '-', String(run.exitCode)];
  };
  table('51 node processes (one per state), 20 rounds: `fedmark demo --partition-by state --nodes 51 [--database-url]`', ['database', 'wall s', 'median round s', 'test AUC', 'coordinator peak MB', 'exit'], [demoRow(demo51), ...(demo51Postgres ? [demoRow(demo51Postgres)] : [])]);
  table(`Simulated federation: ${sim.nodes} nodes x ${sim.parameters} parameters, ${sim.database} (real HTTP, signed requests, sealed updates)`, ['round', 'seconds', 'coordinator RSS MB after', 'uploaded MB', 'downloaded MB'], sim.rounds.map((r) => [r.round, r.seconds, r.rssMbAfter, r.uploadedBytes / 1e6, r.downloadedBytes / 1e6]));
  say(`  memory slope ${sim.memory.slopeMbPerRound.toFixed(2)} MB/round over rounds 2..; coordinator peak ${sim.memory.coordinatorPeakRssMb} MB; every model = FedAvg of the updates sent: ${sim.aggregationExact}`);
}

if (values['compare-flower']) {
  // Optional: Flower 1.4 + PyTorch on the same federation, back to back with the demo (bench/compare-flower.ts).
  const compared = await compareFlower();
  results.compareFlower = compared;
  if (compared.skipped) say(`\n${compared.reason}`);
  else {
    const f = compared.flower;
    const m = compared.fedmark;
    const q = compared.ratios;
    const v = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x);
    table(`Side by side: Flower ${f.flowerVersion} + PyTorch vs fedmark, same split, model and rounds (ratio fedmark / Flower)`, ['figure', 'Flower', 'fedmark', 'ratio'], [
      ['test AUC', f.testAuc, v(m?.testAuc), v(q?.testAuc)],
      ['median round s', v(f.medianRoundSeconds), v(m?.medianRoundSeconds), v(q?.medianRound)],
      ['round 1 s', v(f.roundOneSeconds), v(m?.roundOneSeconds), v(q?.roundOne)],
      ['wall s', f.wallSeconds, v(m?.wallSeconds), v(q?.wall)],
      ['server / coordinator peak RSS MB', f.serverPeakRssMb, v(m?.coordinatorPeakRssMb), v(q?.serverPeakRss)],
      ['client / node peak RSS MB', f.clientPeakRssMbMax, v(m?.nodePeakRssMb), v(q?.nodePeakRss)],
    ]);
  }
}

if (wanted.has('crypto')) {
  // Issue 13's per-request costs: CPU ms of each OpenPGP operation on the coordinator's and a node's hot path.
  const figures = await cryptoRequestBench(values.quick ? 100 : 300);
  results.crypto = figures;
  table('Per-request crypto, CPU ms per operation (process.cpuUsage; wall beside it)', ['operation', 'side', 'CPU ms', 'wall ms', 'n'], figures.map((f) => [f.figure, f.side, f.cpuMsPerOp, f.wallMsPerOp, f.n]));
}

if (wanted.has('transport')) {
  // Issue 13, node CPU per round: fetch() against the node's node:http transport, same requests, same server.
  const figures = await nodeTransportBench(values.quick ? 300 : 1500);
  results.transport = figures;
  table('Node HTTP transport, CPU ms per request (client process only; wall beside it; two alternated passes)', ['request', 'transport', 'CPU ms', 'wall ms', 'n'], figures.map((f) => [f.figure, f.transport, f.cpuMsPerRequest, f.wallMsPerRequest, f.n]));
}

if (wanted.has('speed')) {
  type Demo = { globalTestAuc?: number | null; medianRoundSeconds?: number | null; wallSeconds?: number | null; coordinatorPeakRssMb?: number | null; nodePeakRssMb?: number | null };
  const demo = results.demo as Demo | undefined;
  const agg = results.aggregation as { seconds: number } | undefined;
  const paths = (results.coordinatorPath as ServicePathResult[] | undefined) ?? [];
  type Demo51 = { wallSeconds: number; demo: { medianRoundSeconds?: number | null } | null };
  const scale = results.scale as { demo51: Demo51; demo51Postgres?: Demo51 } | undefined;
  const training = results.localTraining as { rows: Array<{ trainer: string; batch: number; samplesPerSecond: number | null }> } | undefined;
  const fused = (batch: number) => training?.rows.find((r) => r.trainer === 'fused' && r.batch === batch)?.samplesPerSecond ?? null;
  const rows = speedRows({
    testAuc: demo?.globalTestAuc,
    medianRoundSeconds: demo?.medianRoundSeconds,
    wallSeconds: demo?.wallSeconds,
    coordinatorPeakRssMb: demo?.coordinatorPeakRssMb,
    nodePeakRssMb: demo?.nodePeakRssMb,
    aggregateSeconds: agg?.seconds,
    coordinatorPathSeconds: { pglite: paths.find((p) => p.database === 'pglite' && p.timedRound === 2)?.secondsPerUpdate, postgres: paths.find((p) => p.database === 'postgres')?.secondsPerUpdate },
    scale51WallSeconds: scale?.demo51.wallSeconds,
    scale51RoundSeconds: scale?.demo51.demo?.medianRoundSeconds,
    scale51Postgres: scale?.demo51Postgres ? { wallSeconds: scale.demo51Postgres.wallSeconds, roundSeconds: scale.demo51Postgres.demo?.medianRoundSeconds } : undefined,
    fusedSamplesPerSecond: { 64: fused(64), 1024: fused(1024) },
  });
  results.speed = rows;
  table("Issue 13's table: fedmark against Flower 1.4 + PyTorch as recorded on this machine (ratio fedmark / Flower; `--compare-flower` measures Flower again side by side)", SPEED_TABLE_HEADER, speedTableCells(rows));
}

mkdirSync(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
writeFileSync(fileURLToPath(new URL('./results/latest.json', import.meta.url)), JSON.stringify(results, null, 2));
process.stdout.write(JSON.stringify(results) + '\n');
