/**
 * Strategies on the shipped churn data: each of the nine strategies (protocols/strategies, with
 * their default parameters) run for 20 rounds on two splits of the training rows:
 *   - `10-regions`: the demo's default, states grouped into 10 regions of similar size;
 *   - `51-states`: one node per state (`--partition-by state --nodes 51`), 40-100 rows a node.
 * Global test AUC on the demo's held-out split (20%, stratified, seed 42).
 *
 * The federation is simulated in one process, as bench/privacy-utility.ts does: the real Strategy
 * objects (createStrategy: configureFit -> aggregateFit -> accept -> finish(failures) -> applies) and
 * the real node training (the study's model kind, `NodeModelKind.train`, which honours FedProx's
 * proximalMu from the fit instructions), without HTTP, signatures or a database. Every node of
 * the split takes part in every round and none fails.
 *
 * Memory per strategy: `aggregationBytes` is what one round's aggregation holds, the most over
 * the rounds: the state() bytes (the float64 running sum of the mean-delta strategies) plus the
 * kept update frames (k float32 models for trimmed mean, median and Krum); `peakRssMb` the
 * highest process RSS sampled after each accepted update during that run (the whole process:
 * TensorFlow.js and the data included; tiny differences between strategies at this model size).
 *
 *   npm run bench -- --only strategies
 *   node bin/run-ts.js bench/strategies-bench.ts [--rounds 20] [--local-epochs 1] [--strategies fedavg,krum] [--splits 51-states] [--set fedadam.serverLearningRate=0.1]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { StudyConfig } from '../protocols/messages.ts';
import { modelTensorSpecs, type ModelSpec } from '../protocols/model-spec.ts';
import { poolStudyEvaluation, type PooledMetrics } from '../protocols/model-kinds/kind.ts';
import { createStrategy, STRATEGY_NAMES, StrategyConfig, type StrategyName, type StrategyNode } from '../protocols/strategies/index.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { encodeTable, getWeights, inferFeatureSpec, initBackend, readCsvTable, setWeights, splitRows, subset, type EncodedData } from '../models/index.ts';
import { nodeKindFor } from '../models/kinds/index.ts';
import { partitionByColumn } from '../cli/partition.ts';

const DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));

export const STRATEGY_SPLITS = ['10-regions', '51-states'] as const;
export type StrategySplit = (typeof STRATEGY_SPLITS)[number];

export interface StrategyBenchRow {
  strategy: StrategyName;
  /** The strategy's parameters as run (its config defaults). */
  params: StrategyConfig;
  split: StrategySplit;
  nodes: number;
  rounds: number;
  /** Global test AUC after the last round. */
  testAuc: number | null;
  /** Global test AUC after each round (index 0: round 1). */
  aucByRound: Array<number | null>;
  /** Bytes the round's aggregation holds at its largest (running sum, or kept updates). */
  aggregationBytes: number;
  /** One float32 model, for scale. */
  modelBytes: number;
  parameters: number;
  peakRssMb: number;
  seconds: number;
}

export interface StrategiesBenchOptions {
  rounds?: number;
  /** Local epochs per round, the same for every strategy (default 1, the study default). */
  localEpochs?: number;
  strategies?: readonly StrategyName[];
  /** Parameters other than a strategy's defaults, e.g. { fedadam: { serverLearningRate: 0.1 } }. */
  params?: Partial<Record<StrategyName, Record<string, number>>>;
  splits?: readonly StrategySplit[];
  model?: ModelSpec;
  /** Per-run progress lines (default stderr). */
  progress?: (line: string) => void;
}

/** The settings every strategy runs with (stated in the output). */
export function strategiesBenchSettings(options: StrategiesBenchOptions = {}) {
  return {
    rounds: options.rounds ?? 20,
    model: options.model ?? ({ kind: 'mlp', hidden: [32, 16] } as ModelSpec),
    // The study's training defaults (Adam, learning rate 0.01, batch 32), as the demo runs them.
    localEpochs: options.localEpochs ?? 1,
    seed: 42,
  };
}

export async function strategiesBench(options: StrategiesBenchOptions = {}): Promise<StrategyBenchRow[]> {
  const { rounds, model: modelSpec, localEpochs, seed } = strategiesBenchSettings(options);
  const progress = options.progress ?? ((line: string) => process.stderr.write(line + '\n'));
  const table = readCsvTable({ path: DATA });
  const spec = inferFeatureSpec(table, { target: 'churn' });
  const all = encodeTable(table, spec);
  const [trainIdx, testIdx] = splitRows(all.n, [0.8, 0.2], seed, all.y);
  const test = subset(all, testIdx);
  const state = table.rows.map((r) => r[table.header.indexOf('state')]);
  const splits: Record<StrategySplit, EncodedData[]> = {
    '10-regions': partitionByColumn(state, trainIdx, 10).map((p) => subset(all, p.rows)),
    '51-states': partitionByColumn(state, trainIdx, 51).map((p) => subset(all, p.rows)),
  };
  const width = encodedWidth(spec);
  const parameters = modelTensorSpecs(modelSpec, width).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);

  const rows: StrategyBenchRow[] = [];
  for (const split of options.splits ?? STRATEGY_SPLITS) {
    const parts = splits[split];
    for (const name of options.strategies ?? STRATEGY_NAMES) {
      const params = StrategyConfig.parse({ name, ...(options.params?.[name] ?? {}) });
      const study = StudyConfig.parse({
        name: `strategies bench: ${name} on ${split}`,
        task: { kind: 'binary' },
        model: modelSpec,
        strategy: params,
        features: spec,
        training: { localEpochs, seed },
        rounds,
        minNodesPerRound: parts.length,
        minNodesToStart: parts.length,
        seed,
      });
      const t = performance.now();
      const run = await simulateFederation(study, parts, test);
      const aucByRound = run.metricsByRound.map((m) => m.auc ?? null);
      const row = { testAuc: aucByRound[aucByRound.length - 1] ?? null, aucByRound, aggregationBytes: run.aggregationBytes, peakRssMb: run.peakRssMb };
      rows.push({ strategy: name, params, split, nodes: parts.length, rounds, ...row, modelBytes: parameters * 4, parameters, seconds: (performance.now() - t) / 1000 });
      progress(`  strategies: ${name.padEnd(12)} ${split.padEnd(10)} AUC ${row.testAuc?.toFixed(4) ?? '-'}  aggregation ${(row.aggregationBytes / 1024).toFixed(1)} KiB  ${((performance.now() - t) / 1000).toFixed(1)}s`);
    }
  }
  return rows;
}

/**
 * One federation of any study (strategy, model kind) in process, every node every round; the
 * kind's pooled metrics of the global model on `test` after each round (a regression study's
 * mean-only baseline is its spec's target center).
 */
export async function simulateFederation(study: StudyConfig, parts: EncodedData[], test: EncodedData) {
  const kind = nodeKindFor(study);
  const strategy = createStrategy(study);
  const width = test.width;
  const model = kind.createModel(study, width);
  const nodes: StrategyNode[] = parts.map((_, i) => ({ id: `node-${String(i + 1).padStart(2, '0')}`, region: `region-${i + 1}` }));
  let global: WeightSet = getWeights(model); // round 0: the study's seeded initial weights
  let serverState = strategy.initialServerState(global);
  let aggregationBytes = 0;
  let peakRss = process.memoryUsage().rss;
  const metricsByRound: PooledMetrics[] = [];
  try {
    for (let round = 1; round <= study.rounds; round++) {
      const instructions = strategy.configureFit(round, serverState, nodes, study.training);
      const fit = strategy.aggregateFit(global, serverState, { round, participants: nodes.length });
      let keptBytes = 0;
      for (let i = 0; i < parts.length; i++) {
        setWeights(model, global);
        await kind.train(model, parts[i], { study, instructions: instructions.get(nodes[i].id)!, global, seed: study.training.seed + round });
        const accepted = fit.accept(getWeights(model), parts[i].n);
        keptBytes += accepted.kept?.byteLength ?? 0;
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
      }
      aggregationBytes = Math.max(aggregationBytes, fit.state().byteLength + keptBytes);
      const outcome = fit.finish([]);
      global = outcome.weights ?? global;
      serverState = outcome.serverState;
      setWeights(model, global);
      metricsByRound.push(poolStudyEvaluation(study, [kind.evaluate(model, test).stats]));
    }
  } finally {
    model.dispose();
  }
  return { metricsByRound, aggregationBytes, peakRssMb: peakRss / 2 ** 20 };
}

/** The results as one table per split (for bench/run.ts and the command line). */
export function strategiesTableRows(rows: StrategyBenchRow[]): Array<Array<string | number>> {
  return rows.map((r) => [r.strategy, paramsText(r.params), r.split, r.nodes, r.testAuc ?? '-', Math.max(...r.aucByRound.map((a) => a ?? 0)), r.aggregationBytes / 1024, r.peakRssMb, r.seconds]);
}
export const STRATEGIES_TABLE_HEADER = ['strategy', 'parameters', 'split', 'nodes', 'test AUC', 'best round AUC', 'aggregation KiB', 'peak RSS MB', 'seconds'];

function paramsText(params: StrategyConfig): string {
  const entries = Object.entries(params).filter(([k]) => k !== 'name');
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(' ') : '-';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { rounds: { type: 'string' }, 'local-epochs': { type: 'string' }, strategies: { type: 'string' }, splits: { type: 'string' }, set: { type: 'string', multiple: true } } });
  const params: Partial<Record<StrategyName, Record<string, number>>> = {};
  for (const assignment of values.set ?? []) {
    const m = /^([a-z-]+)\.([A-Za-z]+)=(.+)$/.exec(assignment);
    if (!m) throw new Error(`--set ${assignment}: expected strategy.param=value`);
    (params[m[1] as StrategyName] ??= {})[m[2]] = Number(m[3]);
  }
  await initBackend('wasm');
  const rows = await strategiesBench({
    rounds: values.rounds ? Number(values.rounds) : undefined,
    localEpochs: values['local-epochs'] ? Number(values['local-epochs']) : undefined,
    strategies: values.strategies ? (values.strategies.split(',') as StrategyName[]) : undefined,
    splits: values.splits ? (values.splits.split(',') as StrategySplit[]) : undefined,
    params,
  });
  process.stdout.write(JSON.stringify({ settings: strategiesBenchSettings({ rounds: values.rounds ? Number(values.rounds) : undefined, localEpochs: values['local-epochs'] ? Number(values['local-epochs']) : undefined }), rows }) + '\n');
}
