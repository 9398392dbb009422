/**
 * Privacy vs utility on the shipped churn data, 10 regions by state as `npm start` splits them: the
 * federation simulated in one process (the real strategies and the nodes' real training code,
 * DP-SGD included, without HTTP) so that a table of configurations fits in a benchmark run. Test
 * AUC on the demo's held-out 20% (stratified, seed 42; the feature spec from the training rows).
 *
 * Every DP row's noise multiplier is calibrated by the accountant named in the row, and the
 * epsilon printed is what that accountant charges each node for the whole study (every node runs
 * the same sampling rate, steps and noise, so every node spends the same). Under DP every update
 * weighs the same in FedAvg, as in the product (counts are not weights under DP).
 *
 * The DP noise comes from the OS CSPRNG (as on a real node), so DP rows vary from run to run:
 * each is the mean over `repeats` runs, with the spread.
 */
import { fileURLToPath } from 'node:url';
import { FedAvg } from '../protocols/strategies/fedavg.ts';
import { StrategyConfig, strategyFromConfig, type MeanDeltaStrategyBase } from '../protocols/strategies/index.ts';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { initialWeights, modelTensorSpecs, type ModelSpec } from '../protocols/model-spec.ts';
import { ClientLevelDpStrategy } from '../protocols/privacy/client-level-dp.ts';
import { calibrateSigma, computeEpsilonDetails } from '../protocols/privacy/index.ts';
import type { DpSgdConfig } from '../protocols/privacy/study-privacy.ts';
import type { Strategy } from '../protocols/strategies/strategy.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { createModel, encodeTable, evaluateModel, getWeights, inferFeatureSpec, readCsvTable, setWeights, splitRows, subset, trainLocal, type EncodedData } from '../models/index.ts';
import { trainDpSgd } from '../models/dp-sgd.ts';
import { partitionByColumn } from '../cli/partition.ts';
import { DP_SGD_PRESETS, dpSgdPresetFor, dpSgdPresetModel, dpSgdPresetPlan, type DpSgdPreset } from '../protocols/privacy/dp-presets.ts';

const DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));

export interface Federation {
  parts: EncodedData[];
  test: EncodedData;
  width: number;
}

/** The demo's split: 80/20 stratified (seed 42), spec from the training rows, regions by state. */
export function churnFederation(regions = 10, exclude: string[] = []): Federation {
  const table = readCsvTable({ path: DATA });
  const labels = encodeTable(table, inferFeatureSpec(table, { target: 'churn' })).y;
  const [trainIdx, testIdx] = splitRows(table.rows.length, [0.8, 0.2], 42, labels);
  const spec = inferFeatureSpec({ ...table, rows: trainIdx.map((i) => table.rows[i]), lineOf: (i: number) => table.lineOf(trainIdx[i]) }, { target: 'churn', exclude });
  const all = encodeTable(table, spec);
  const stateCol = table.header.indexOf('state');
  const parts = partitionByColumn(table.rows.map((r) => r[stateCol]), trainIdx, regions).map((p) => subset(all, p.rows));
  return { parts, test: subset(all, testIdx), width: encodedWidth(spec) };
}

export type Mechanism = 'none' | 'dp-sgd' | 'client-level';

export interface PrivacyUtilityConfig {
  label?: string;
  mechanism: Mechanism;
  model: ModelSpec;
  rounds: number;
  delta?: number;
  /** The study's strategy (default FedAvg); under client-level DP the wrapper's inner strategy. */
  strategy?: StrategyConfig;
  /** none: the study's local training (defaults: TrainingConfig's). */
  training?: Partial<TrainingConfig>;
  /** dp-sgd: the preset's fields (target epsilon, expected batch on the smallest node, ...). */
  dpSgd?: DpSgdPreset & { epsilon: number };
  /** client-level: target epsilon and clip norm, q = 1 (every node every round). */
  clientLevel?: { epsilon: number; clipNorm: number; accountant?: 'rdp' | 'pld' };
}

export interface PrivacyUtilityRow {
  label: string;
  mechanism: Mechanism;
  strategy: string;
  model: string;
  parameters: number;
  nodes: number;
  rounds: number;
  /** Target epsilon (null: no DP). */
  epsilon: number | null;
  /** Epsilon the accountant charges each node for the whole study (record-level for DP-SGD, client-level for central DP). */
  epsilonSpent: number | null;
  accountant: string | null;
  delta: number | null;
  noiseMultiplier: number | null;
  /** DP-SGD: Poisson sampling rate, expected batch on the smallest / largest node, steps per round. */
  samplingRate: number | null;
  expectedBatch: [number, number] | null;
  stepsPerRound: number | null;
  /** Local batch size (no DP) or null. */
  batchSize: number | null;
  clipNorm: number | null;
  learningRate: number;
  localEpochs: number | null;
  /** Client-level DP: L2 norm of the noise on the mean update (z C sqrt(d) / nodes) vs the signal's bound C. */
  noiseNormOfMean: number | null;
  testAuc: number;
  testAucRuns: number[];
  testAucStd: number;
  seconds: number;
}

const modelName = (m: ModelSpec) => (m.kind === 'mlp' ? `mlp ${m.hidden.join('-')}${m.activation === 'tanh' ? ' tanh' : ''}` : m.kind);

export async function runPrivacyUtility(fed: Federation, config: PrivacyUtilityConfig, repeats = 1): Promise<PrivacyUtilityRow> {
  const delta = config.delta ?? 1e-5;
  const specs = modelTensorSpecs(config.model, fed.width);
  const parameters = specs.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
  const model = createModel(config.model, fed.width, 42);
  const base = {
    label: config.label ?? config.mechanism,
    mechanism: config.mechanism,
    strategy: config.strategy ? JSON.stringify(config.strategy) : 'fedavg',
    model: modelName(config.model),
    parameters,
    nodes: fed.parts.length,
    rounds: config.rounds,
  };
  let row: Omit<PrivacyUtilityRow, 'testAuc' | 'testAucRuns' | 'testAucStd' | 'seconds'>;
  const inner = () => (config.strategy ? strategyFromConfig(StrategyConfig.parse(config.strategy)) : new FedAvg());
  let strategy: () => Strategy = inner;
  let train: (data: EncodedData, round: number) => Promise<void>;
  let weight: (data: EncodedData) => number = () => 1;
  if (config.mechanism === 'none') {
    const training = TrainingConfig.parse(config.training ?? {});
    train = async (data, r) => void (await trainLocal(model, data, training, { seed: 42 + r }));
    weight = (data) => data.n;
    row = { ...base, epsilon: null, epsilonSpent: null, accountant: null, delta: null, noiseMultiplier: null, samplingRate: null, expectedBatch: null, stepsPerRound: null, batchSize: training.batchSize, clipNorm: null, learningRate: training.learningRate, localEpochs: training.localEpochs, noiseNormOfMean: null };
  } else if (config.mechanism === 'dp-sgd') {
    const p = config.dpSgd!;
    const plan = dpSgdPresetPlan(p, { epsilon: p.epsilon, delta, rounds: config.rounds, nodeRows: fed.parts.map((d) => d.n) });
    const dp: DpSgdConfig = plan.dpSgd;
    train = async (data) => void (await trainDpSgd(model, data, dp));
    const sizes = fed.parts.map((d) => d.n);
    row = { ...base, epsilon: p.epsilon, epsilonSpent: plan.epsilonSpent, accountant: plan.accountant, delta, noiseMultiplier: dp.noiseMultiplier, samplingRate: dp.samplingRate, expectedBatch: [dp.samplingRate * Math.min(...sizes), dp.samplingRate * Math.max(...sizes)], stepsPerRound: dp.stepsPerRound ?? null, batchSize: null, clipNorm: dp.clipNorm, learningRate: dp.learningRate, localEpochs: null, noiseNormOfMean: null };
  } else {
    const c = config.clientLevel!;
    const accountant = c.accountant ?? 'pld';
    const z = calibrateSigma({ q: 1, steps: config.rounds, delta, epsilon: c.epsilon, accountant });
    const spent = computeEpsilonDetails({ q: 1, sigma: z, steps: config.rounds, delta }, accountant);
    const training = TrainingConfig.parse(config.training ?? {});
    strategy = () => new ClientLevelDpStrategy(inner() as MeanDeltaStrategyBase, { noiseMultiplier: z, clipping: { kind: 'fixed', norm: c.clipNorm } });
    train = async (data, r) => void (await trainLocal(model, data, training, { seed: 42 + r }));
    row = { ...base, epsilon: c.epsilon, epsilonSpent: spent.epsilon, accountant: spent.accountant, delta, noiseMultiplier: z, samplingRate: 1, expectedBatch: null, stepsPerRound: null, batchSize: training.batchSize, clipNorm: c.clipNorm, learningRate: training.learningRate, localEpochs: training.localEpochs, noiseNormOfMean: (z * c.clipNorm * Math.sqrt(parameters)) / fed.parts.length };
  }

  const t = performance.now();
  const runs: number[] = [];
  for (let k = 0; k < repeats; k++) {
    const s = strategy();
    let global: WeightSet = initialWeights(specs, 42);
    let serverState = s.initialServerState(global);
    for (let r = 1; r <= config.rounds; r++) {
      const round = s.aggregateFit(global, serverState, { round: r, participants: fed.parts.length });
      for (const data of fed.parts) {
        setWeights(model, global);
        await train(data, r);
        round.accept(getWeights(model), weight(data));
      }
      const outcome = round.finish([]);
      global = outcome.weights ?? global;
      serverState = outcome.serverState;
    }
    setWeights(model, global);
    runs.push(evaluateModel(model, fed.test).auc);
  }
  model.dispose();
  const mean = runs.reduce((a, b) => a + b, 0) / runs.length;
  const std = Math.sqrt(runs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, runs.length - 1));
  return { ...row, testAuc: mean, testAucRuns: runs, testAucStd: std, seconds: (performance.now() - t) / 1000 };
}

/**
 * Columns left out of the features for the tuned DP rows (Tramer & Boneh 2021: DP needs good
 * features): the partition column (state: 51 one-hot columns, each node holds a few states, so
 * their weights learn nothing shared and collect noise), and columns that repeat another
 * (total_*_charge = total_*_minutes x a flat rate; area_code). The model without them is as good
 * without DP (the "no DP, lean features" rows) and has 17 inputs instead of 81.
 */
export const LEAN_EXCLUDE = ['state', 'area_code', 'total_day_charge', 'total_eve_charge', 'total_night_charge', 'total_intl_charge'];

/** The table of `npm run bench -- --only privacy`: LR and MLP, no DP / DP-SGD at epsilon 8 and 3 (the presets, and before tuning) / client-level DP. */
export function privacyUtilityConfigs(options: { quick?: boolean; legacy?: boolean } = {}): Array<{ features: 'all' | 'lean'; config: PrivacyUtilityConfig }> {
  const out: Array<{ features: 'all' | 'lean'; config: PrivacyUtilityConfig }> = [];
  const mlp: ModelSpec = { kind: 'mlp', hidden: [32, 16] };
  const logreg: ModelSpec = { kind: 'logreg' };
  for (const [name, model] of [['logreg', logreg], ['mlp', mlp]] as const) {
    out.push({ features: 'all', config: { label: `${name}, no DP (study defaults)`, mechanism: 'none', model, rounds: 20 } });
    out.push({ features: 'lean', config: { label: `${name}, no DP (study defaults)`, mechanism: 'none', model, rounds: 20 } });
    for (const epsilon of [8, 3]) {
      const presetName = dpSgdPresetFor(name, epsilon);
      const preset: DpSgdPreset = DP_SGD_PRESETS[presetName];
      // The preset's hidden activation (tanh for mlp-strong), as the demo applies it.
      const tuned = dpSgdPresetModel(preset, model);
      out.push({ features: 'lean', config: { label: `${name}, DP-SGD preset ${presetName}`, mechanism: 'dp-sgd', model: tuned, rounds: preset.rounds, dpSgd: { ...preset, epsilon } } });
      // The same preset on all 81 inputs (the demo's features): what the feature choice is worth.
      if (!options.quick && name === 'mlp') out.push({ features: 'all', config: { label: `${name}, DP-SGD preset ${presetName}`, mechanism: 'dp-sgd', model: tuned, rounds: preset.rounds, dpSgd: { ...preset, epsilon } } });
      // The preset's settings with ReLU: what the activation alone is worth.
      if (!options.quick && tuned !== model) out.push({ features: 'lean', config: { label: `${name}, DP-SGD preset ${presetName} with ReLU`, mechanism: 'dp-sgd', model, rounds: preset.rounds, dpSgd: { ...preset, epsilon } } });
    }
    if (options.legacy) {
      for (const epsilon of [8, 3]) {
        const old = DP_SGD_PRESETS.legacy;
        out.push({ features: 'all', config: { label: `${name}, DP-SGD before tuning`, mechanism: 'dp-sgd', model, rounds: old.rounds, dpSgd: { ...old, epsilon } } });
      }
    }
    // Client-level DP with 10 nodes: the noise on the mean update dwarfs any node's clipped update.
    out.push({ features: 'all', config: { label: `${name}, client-level DP (central, q = 1)`, mechanism: 'client-level', model, rounds: 20, clientLevel: { epsilon: 8, clipNorm: 0.5 } } });
  }
  return out;
}

export type PrivacyUtilityTableRow = PrivacyUtilityRow & { features: 'all' | 'lean'; excluded: string[] };

/**
 * DP-SGD rows: mean of `repeats` runs (5; 1 with quick: one run varies by about +-0.015 AUC). No-DP rows are deterministic, and the
 * client-level row is far off whatever the draw: one run each. `legacy`: also the settings before
 * tuning (expected batch 32, one epoch a round, RDP), on both models.
 */
export async function privacyUtility(options: { quick?: boolean; legacy?: boolean; repeats?: number; progress?: (line: string) => void } = {}): Promise<{ repeats: number; rows: PrivacyUtilityTableRow[] }> {
  const feds = { all: churnFederation(10), lean: churnFederation(10, LEAN_EXCLUDE) };
  const repeats = options.repeats ?? (options.quick ? 1 : 5);
  const rows: PrivacyUtilityTableRow[] = [];
  for (const { features, config } of privacyUtilityConfigs(options)) {
    const row = await runPrivacyUtility(feds[features], config, config.mechanism === 'dp-sgd' ? repeats : 1);
    rows.push({ ...row, features, excluded: features === 'lean' ? LEAN_EXCLUDE : [] });
    options.progress?.(`  privacy-utility: ${row.label} (${features} features) eps=${row.epsilon ?? '-'} AUC ${row.testAuc.toFixed(4)} (${row.seconds.toFixed(1)} s)`);
  }
  return { repeats, rows };
}
