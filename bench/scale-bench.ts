/**
 * Scale (issue 13): a simulated federation of many nodes against a real coordinator process, and
 * the coordinator's memory, CPU and traffic round by round.
 *
 *   node bin/run-ts.js bench/scale-bench.ts --nodes 100 --parameters 1000000 --rounds 5 [--postgres]
 *       [--regions R] [--fit-concurrency 8] [--poll-seconds 20]
 *   node bin/run-ts.js bench/scale-bench.ts --demo [--nodes 51] [--rounds 20] [--postgres]
 *       # the real demo (`fedmark demo --partition-by state --nodes 51 --json --no-local-baseline`),
 *       # its wall time and its coordinator's RSS sampled from /proc
 *
 * The nodes are bench/sim/sim-node.ts: the node's own client code (OpenPGP identity, one-time
 * token enrollment, signed requests, release step, updates sealed to the pinned coordinator key,
 * signed global models verified) without training: each sends a deterministic pseudo-update of
 * the global model, and node 0 checks every published model against the expected FedAvg. The
 * coordinator is `fedmark coordinator` as a child process (PGlite, or a fresh PostgreSQL database
 * with --postgres). One line of JSON on stdout; progress on stderr.
 */
import { setMaxListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { StudyConfig, type RoundSummary, type StudyConfigInput } from '../protocols/messages.ts';
import { modelTensorSpecs } from '../protocols/model-spec.ts';
import { readProc, sampleProcess, startCoordinator, type CoordinatorChild, type ProcSample } from './sim/coordinator-process.ts';
import { makePatterns } from './sim/pseudo-update.ts';
import { nodeStateDir, Semaphore, SimNode, SIM_JURISDICTION, type Simulation } from './sim/sim-node.ts';
import { installTrafficCounter, type TrafficCounter } from './sim/traffic.ts';
import { benchDemo } from './sim/demo-run.ts';
import { memoryBreakdown, type MemoryBreakdown } from './sim/memory-breakdown.ts';

export interface ScaleOptions {
  nodes: number;
  /** Target model size; the MLP's hidden widths are chosen to come closest (see `parameters` in the result). */
  parameters: number;
  rounds: number;
  postgres?: boolean;
  /** Nodes building, sealing and sending an update at once (default 8). */
  fitConcurrency?: number;
  /**
   * How many regions the nodes are spread over (node i in region i mod regions). Default: one per
   * node, as the demo's partners: no region reaches the 2 nodes a regional model needs. With fewer
   * regions the coordinator also folds, signs and stores one regional model per region a round.
   */
  regions?: number;
  /** The nodes' long-poll wait, seconds (default 20, as a real node). */
  pollSeconds?: number;
  /** Progress lines (stderr by default). */
  log?: (line: string) => void;
}

export interface RoundResult {
  round: number;
  /** The coordinator's own timestamps: round opened (fit) to round closed (evaluations in). */
  seconds: number;
  /** Round opened to the next round opened (includes the close and the opening of the next). */
  cycleSeconds: number | null;
  updatesReceived: number;
  /** CPU the coordinator process spent in the round window (utime + stime). */
  coordinatorCpuSeconds: number;
  /** VmRSS sampled every 100 ms in the round window: its largest value, and the first sample after the round closed. */
  rssMbMax: number;
  rssMbAfter: number;
  /** VmHWM (peak RSS since start) after the round. */
  hwmMbAfter: number;
  /** When the round was seen closed: RSS split by /proc smaps (PGlite's wasm, malloc's brk heap, other anonymous) and V8's heap from /metrics. */
  memoryAfter: MemoryBreakdown | null;
  /** HTTP bodies of the round: sealed updates and evaluations up, global models down. */
  uploadedBytes: number;
  downloadedBytes: number;
  modelDownloads: number;
  /** Models received in their tasks (Task.model) rather than downloaded. */
  modelsInTasks: number;
  /** The published model against the expected FedAvg of the pseudo-updates (node 0's check). */
  aggregation: { maxAbsError: number; maxUlpError: number; violations: number; updates: number } | null;
}

export interface ScaleResult {
  bench: 'scale';
  database: 'pglite' | 'postgres';
  nodes: number;
  regions: number;
  parameters: number;
  hidden: number[];
  rounds: RoundResult[];
  /** Every round's model equals the FedAvg of the updates sent (within float32 rounding). */
  aggregationExact: boolean;
  /** Enrollment of every node (key generation, token, enroll, ready) and the wait for round 1. */
  setupSeconds: number;
  /** Task polls the coordinator did not answer in time (the node waited 5 s and asked again, as a real node does). */
  unreachablePolls: number;
  /** Tasks that failed without a refusal (a transfer cut by its timeout) and were taken again, as a real node does. */
  taskErrors: string[];
  /** First round opened to the last closed. */
  roundsWallSeconds: number;
  medianRoundSeconds: number;
  memory: {
    rssMbAfterRound1: number;
    rssMbAfterLast: number;
    /** Least-squares slope of rssMbAfter over rounds 2.. (MB a round; near 0 when memory is flat). */
    slopeMbPerRound: number;
    coordinatorPeakRssMb: number;
    coordinatorIdleRssMb: number;
  };
  coordinatorCpuSeconds: number;
  simulator: { cpuSeconds: number; peakRssMb: number };
  otherTraffic: TrafficCounter['other'];
  loadAverage: { start: number[]; end: number[] };
}

const SIM_FEATURES: StudyConfigInput['features'] = {
  target: { column: 'y', positive: '1' },
  features: [
    { name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 },
    { name: 'b', kind: 'numeric', mean: 0, std: 1, fill: 0 },
    { name: 'c', kind: 'categorical', categories: ['p', 'q', 'r'] },
  ],
};

/** Two hidden layers whose MLP (over `inputs` features) has about `parameters` weights. */
export function hiddenFor(parameters: number, inputs: number): number[] {
  const h1 = Math.min(1000, Math.max(2, Math.round(Math.sqrt(parameters))));
  const h2 = Math.max(1, Math.round((parameters - (inputs + 1) * h1 - 1) / (h1 + 2)));
  return [h1, h2];
}

/** The study every simulated node joins: a binary MLP of ~`parameters` weights, all nodes every round. */
export function simStudy(opts: Pick<ScaleOptions, 'nodes' | 'parameters' | 'rounds'>): StudyConfigInput {
  const inputs = encodedWidth(StudyConfig.parse({ name: 'x', model: { kind: 'logreg' }, features: SIM_FEATURES, rounds: 1 }).features);
  return {
    name: `scale-sim-${opts.nodes}x${opts.parameters}`,
    model: { kind: 'mlp', hidden: hiddenFor(opts.parameters, inputs) },
    features: SIM_FEATURES,
    rounds: opts.rounds,
    minNodesPerRound: opts.nodes,
    minNodesToStart: opts.nodes,
    roundDeadlineSeconds: 3600,
    evaluationDeadlineSeconds: 3600,
  };
}

export async function benchScale(options: ScaleOptions): Promise<ScaleResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-scale-'));
  const loadStart = loadavg();
  const cpuStart = process.cpuUsage();
  const coordinator = await startCoordinator(dir, { postgres: options.postgres });
  const sampler = sampleProcess(coordinator.pid, 100);
  const traffic = installTrafficCounter();
  let simPeakRss = process.memoryUsage.rss();
  const simRss = setInterval(() => (simPeakRss = Math.max(simPeakRss, process.memoryUsage.rss())), 200);
  try {
    const input = simStudy(options);
    const study = StudyConfig.parse(input);
    const parameters = modelTensorSpecs(study.model, encodedWidth(study.features)).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    const { id: studyId } = await coordinator.api<{ id: string }>('POST', '/v1/studies', input);
    log(`scale: coordinator ${coordinator.url} (${coordinator.database}, pid ${coordinator.pid}), study ${studyId}: ${options.nodes} nodes x ${parameters} parameters x ${options.rounds} rounds`);
    const idle = readProc(coordinator.pid);
    const started = Date.now();
    const { rounds, setupSeconds, unreachablePolls, taskErrors } = await runSimulation(coordinator, studyId, study, parameters, dir, options, log, traffic);
    const samples = sampler.stop();
    const perRound = roundResults(rounds, samples, traffic);
    return summarize({ options, coordinator, parameters, study, perRound, setupSeconds, unreachablePolls, taskErrors, samples, traffic, idle, loadStart, started, cpuStart, simPeakRss });
  } finally {
    clearInterval(simRss);
    sampler.stop();
    traffic.uninstall();
    await coordinator.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Enrolls the nodes, runs them until the study ends, and returns the coordinator's round summaries with node 0's checks. */
async function runSimulation(coordinator: CoordinatorChild, studyId: string, study: StudyConfig, parameters: number, dir: string, options: ScaleOptions, log: (l: string) => void, traffic: TrafficCounter) {
  const abort = new AbortController();
  // Every node waiting out an unanswered poll listens on it (no leak: they return when it aborts).
  setMaxListeners(0, abort.signal);
  const sim: Simulation = { patterns: makePatterns(parameters), parameters, expected: new Map(), checks: new Map(), events: new Map(), fitSlots: new Semaphore(options.fitConcurrency ?? 8), unreachable: 0, taskErrors: [], onModelInTask: (task) => traffic.modelInTask(task.modelVersion), signal: abort.signal };
  const t0 = Date.now();
  const nodes: SimNode[] = [];
  for (let i = 0; i < options.nodes; i++) {
    const { token } = await coordinator.api<{ token: string }>('POST', '/v1/enrollment-tokens', { studyId, nodeName: `sim-${i}`, region: `region-${i % (options.regions ?? options.nodes)}`, jurisdiction: SIM_JURISDICTION });
    nodes.push(await SimNode.enroll(sim, coordinator.url, nodeStateDir(dir, i), i, token, study));
  }
  const setupSeconds = (Date.now() - t0) / 1000;
  log(`scale: ${nodes.length} nodes enrolled and ready in ${setupSeconds.toFixed(1)} s`);
  const running = nodes.map((n) => n.run(options.pollSeconds ?? 20));
  const failed = Promise.race(running.map((p) => p.then(() => new Promise<never>(() => {})))).catch((err: unknown) => {
    abort.abort();
    throw err;
  });
  const status = await Promise.race([waitForEnd(coordinator, studyId, options.rounds, log), failed]);
  abort.abort();
  // Nodes in a long poll return when it ends (the study's end wakes them, or the poll times out).
  await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, ((options.pollSeconds ?? 20) + 5) * 1000))]);
  if (status.state !== 'completed') throw new Error(`study ended ${status.state}: ${status.stopReason ?? 'no reason'}`);
  return { rounds: status.rounds.map((r) => ({ ...r, check: sim.checks.get(r.round) ?? null, memory: status.memory.get(r.round) ?? null })), setupSeconds, unreachablePolls: sim.unreachable, taskErrors: sim.taskErrors };
}

interface StudyView {
  state: string;
  stopReason: string | null;
  rounds: RoundSummary[];
  changeCount: number;
}

/** Follows the study (long-polled status) until it is no longer running; logs each closed round. */
async function waitForEnd(coordinator: CoordinatorChild, studyId: string, rounds: number, log: (l: string) => void): Promise<StudyView & { memory: Map<number, MemoryBreakdown> }> {
  let seen = -1;
  let logged = 0;
  const memory = new Map<number, MemoryBreakdown>();
  for (;;) {
    const status = await coordinator.api<StudyView>('GET', `/v1/studies/${studyId}?wait=20${seen >= 0 ? `&seen=${seen}` : ''}`);
    seen = status.changeCount;
    for (const r of status.rounds.filter((x) => x.closedAt && x.round > logged).sort((a, b) => a.round - b.round)) {
      const p = readProc(coordinator.pid);
      log(`scale: round ${r.round}/${rounds} ${r.phase} in ${((Date.parse(r.closedAt!) - Date.parse(r.startedAt)) / 1000).toFixed(2)} s, ${r.updatesReceived} updates; coordinator RSS ${p?.rssMb.toFixed(0) ?? '?'} MB, VmHWM ${p?.hwmMb.toFixed(0) ?? '?'} MB, CPU ${p?.cpuSeconds.toFixed(1) ?? '?'} s so far`);
      const m = await memoryBreakdown(coordinator.pid, coordinator.url);
      if (m) {
        memory.set(r.round, m);
        log(`scale: round ${r.round} memory: wasm ${m.wasmRssMb.toFixed(0)} MB, brk heap ${m.brkHeapRssMb.toFixed(0)} MB, other anon ${m.otherAnonRssMb.toFixed(0)} MB, files ${m.fileRssMb.toFixed(0)} MB; V8 heap used/total ${m.v8HeapUsedMb?.toFixed(0)}/${m.v8HeapTotalMb?.toFixed(0)} MB, external ${m.externalMb?.toFixed(0)} MB`);
      }
      logged = r.round;
    }
    if (status.state !== 'running') return { ...status, memory };
  }
}

type RoundWithCheck = RoundSummary & { check: RoundResult['aggregation']; memory: MemoryBreakdown | null };

/** Per round: timing from the coordinator's timestamps, memory and CPU from the samples in its window, traffic by round. */
function roundResults(rounds: RoundWithCheck[], samples: ProcSample[], traffic: TrafficCounter): RoundResult[] {
  const sorted = [...rounds].sort((a, b) => a.round - b.round);
  return sorted.map((r, k) => {
    const start = Date.parse(r.startedAt);
    const end = r.closedAt ? Date.parse(r.closedAt) : start;
    const next = sorted[k + 1] ? Date.parse(sorted[k + 1].startedAt) : null;
    const inside = samples.filter((s) => s.t >= start && s.t <= end);
    const before = [...samples].reverse().find((s) => s.t <= start) ?? samples[0];
    const after = samples.find((s) => s.t > end) ?? samples[samples.length - 1];
    const t = traffic.rounds.get(r.round) ?? { uploadedBytes: 0, downloadedBytes: 0, modelDownloads: 0, modelsInTasks: 0, updates: 0 };
    return {
      round: r.round,
      seconds: (end - start) / 1000,
      cycleSeconds: next === null ? null : (next - start) / 1000,
      updatesReceived: r.updatesReceived,
      coordinatorCpuSeconds: after.cpuSeconds - before.cpuSeconds,
      rssMbMax: Math.max(after.rssMb, ...inside.map((s) => s.rssMb)),
      rssMbAfter: after.rssMb,
      hwmMbAfter: after.hwmMb,
      memoryAfter: r.memory,
      uploadedBytes: t.uploadedBytes,
      downloadedBytes: t.downloadedBytes,
      modelDownloads: t.modelDownloads,
      modelsInTasks: t.modelsInTasks,
      aggregation: r.check,
    };
  });
}

function slope(ys: number[]): number {
  if (ys.length < 2) return 0;
  const xs = ys.map((_, i) => i);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((s, x, i) => s + (x - mx) * (ys[i] - my), 0);
  const den = xs.reduce((s, x) => s + (x - mx) ** 2, 0);
  return num / den;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function summarize(x: { options: ScaleOptions; coordinator: CoordinatorChild; parameters: number; study: StudyConfig; perRound: RoundResult[]; setupSeconds: number; unreachablePolls: number; taskErrors: string[]; samples: ProcSample[]; traffic: TrafficCounter; idle: ProcSample | undefined; loadStart: number[]; started: number; cpuStart: NodeJS.CpuUsage; simPeakRss: number }): ScaleResult {
  const { perRound, samples } = x;
  const cpu = process.cpuUsage(x.cpuStart);
  const first = perRound[0];
  const last = perRound[perRound.length - 1];
  return {
    bench: 'scale',
    database: x.coordinator.database,
    nodes: x.options.nodes,
    regions: x.options.regions ?? x.options.nodes,
    parameters: x.parameters,
    hidden: x.study.model.kind === 'mlp' ? x.study.model.hidden : [],
    rounds: perRound,
    aggregationExact: perRound.length > 0 && perRound.every((r) => r.aggregation !== null && r.aggregation.violations === 0 && r.aggregation.updates === x.options.nodes),
    setupSeconds: x.setupSeconds,
    unreachablePolls: x.unreachablePolls,
    taskErrors: x.taskErrors,
    roundsWallSeconds: perRound.reduce((s, r, i) => s + (i < perRound.length - 1 && r.cycleSeconds !== null ? r.cycleSeconds : r.seconds), 0),
    medianRoundSeconds: median(perRound.map((r) => r.seconds)),
    memory: {
      rssMbAfterRound1: first?.rssMbAfter ?? NaN,
      rssMbAfterLast: last?.rssMbAfter ?? NaN,
      slopeMbPerRound: slope(perRound.slice(1).map((r) => r.rssMbAfter)),
      coordinatorPeakRssMb: Math.max(...samples.map((s) => s.hwmMb)),
      coordinatorIdleRssMb: x.idle?.rssMb ?? NaN,
    },
    coordinatorCpuSeconds: samples.length ? samples[samples.length - 1].cpuSeconds - samples[0].cpuSeconds : NaN,
    simulator: { cpuSeconds: (cpu.user + cpu.system) / 1e6, peakRssMb: x.simPeakRss / (1024 * 1024) },
    otherTraffic: x.traffic.other,
    loadAverage: { start: x.loadStart, end: loadavg() },
  };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function positiveInt(args: string[], name: string, fallback: number): number {
  const raw = flag(args, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

async function main(args: string[]) {
  if (args.includes('--demo')) {
    const result = await benchDemo({ nodes: positiveInt(args, '--nodes', 51), rounds: positiveInt(args, '--rounds', 20), postgres: args.includes('--postgres') });
    process.stdout.write(JSON.stringify(result) + '\n');
    if (result.exitCode !== 0) process.exitCode = 1;
    return;
  }
  const result = await benchScale({
    nodes: positiveInt(args, '--nodes', 100),
    parameters: positiveInt(args, '--parameters', 1_000_000),
    rounds: positiveInt(args, '--rounds', 5),
    postgres: args.includes('--postgres'),
    fitConcurrency: positiveInt(args, '--fit-concurrency', 8),
    regions: flag(args, '--regions') === undefined ? undefined : positiveInt(args, '--regions', 1),
    pollSeconds: positiveInt(args, '--poll-seconds', 20),
  });
  process.stdout.write(JSON.stringify(result) + '\n');
  if (!result.aggregationExact) process.exitCode = 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`scale bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
