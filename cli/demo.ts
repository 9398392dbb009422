import { DP_SGD_PRESETS, dpSgdPlanWithEvaluation, dpSgdPresetFor, dpSgdPresetModel } from '../protocols/privacy/dp-presets.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import { encodedWidth, isNumericTarget, type FeatureSpec } from '../protocols/feature-spec.ts';
import { StudyConfig, type StudyConfigInput } from '../protocols/messages.ts';
import { EVERY_UPDATE_STRATEGIES, minimumUpdates, StrategyConfig } from '../protocols/strategies/config.ts';
import { poolStudyEvaluation, TaskSpec, type PooledMetrics } from '../protocols/model-kinds/kind.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import { ModelSpec } from '../protocols/model-spec.ts';
import { StudyPrivacy } from '../protocols/privacy/study-privacy.ts';
import { calibrateSigma } from '../protocols/privacy/index.ts';
import { encodeTable, inferFeatureSpec, initBackend, readCsvTable, setWeights, splitRows, subset, writeCsvTable, writeFeatureSpecFile, type CsvTable } from '../models/index.ts';
import type { CsvDelimiter } from '../models/csv-table.ts';
import { nodeKindFor } from '../models/kinds/index.ts';
import { partitionByColumn, partitionDirichlet, partitionRandom, partitionWarnings, type Partition } from './partition.ts';
import { trainAlone } from './demo-local-only.ts';
import { auditLine, fmt, fmtValue, prepareDemoOut, runFederation, speedFigures, type SpeedFigures } from './demo-federation.ts';
import { personalizedFields, personalizedLines, personalizedSummary, tableHeader, tableRow } from './demo-table.ts';
import type { AttackName } from '../client-node/attack.ts';

/** The demo's output folder, emptied (in cli/demo-federation.ts, shared by every kind's demo). */
export { prepareDemoOut };

const SHIPPED_DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));
/** The shipped regression data: 12-month spend by customer, with a region column. */
const SHIPPED_REGRESSION_DATA = fileURLToPath(new URL('../data/customer_value.csv', import.meta.url));
/**
 * The demo's regression loss unless --loss says otherwise (also in cli/main.ts's help). Tweedie
 * (power 1.5, log link): spend is a point mass at zero (42% of data/customer_value.csv) plus a
 * heavy right tail (the top 1% of customers hold 26% of it), which is the Tweedie compound
 * Poisson-gamma shape. Measured on that file (in process as bench/strategies-bench.ts does: 10
 * regions, 20 rounds of FedAvg, MLP 32-16, test split of 4,000 rows): tweedie R2 0.658 / RMSE 476.5 / MAE 144.9 / bias +1.4; mse 0.655 / 478.6 /
 * 159.9 / -13.8; huber 0.622 / 500.5 / 152.5 / -38.9; log1p 0.475 / 590.0 / 164.0 / -123.3
 * (mean-only baseline RMSE 814.3). Best on every metric, and the only one that does not
 * under-predict the total: log1p's back-transform predicts a geometric mean, huber discounts
 * the whales that carry the spend. The demo itself (`npm start -- --task regression`, nodes
 * holding out 20% for validation): global R2 0.678, RMSE 462.0 against local-only models' mean
 * R2 0.326, RMSE 660.2.
 */
export const DEFAULT_REGRESSION_LOSS = 'tweedie' as const;
export type RegressionLoss = 'mse' | 'huber' | 'tweedie' | 'log1p';

export type DemoTask = 'binary' | 'regression' | 'forecast' | 'recommend';

/**
 * The demo flags that belong to some tasks only: given with another task, each is refused naming
 * itself (before any file is touched), not silently ignored.
 */
const TASK_FLAGS: ReadonlyArray<{ flag: string; option: keyof AnyDemoOptions; tasks: readonly DemoTask[] }> = [
  { flag: '--date', option: 'date', tasks: ['forecast'] },
  { flag: '--series', option: 'series', tasks: ['forecast'] },
  { flag: '--horizon', option: 'horizon', tasks: ['forecast'] },
  { flag: '--user', option: 'user', tasks: ['recommend'] },
  { flag: '--item', option: 'item', tasks: ['recommend'] },
  { flag: '--positive', option: 'positive', tasks: ['binary'] },
  { flag: '--loss', option: 'loss', tasks: ['regression'] },
  { flag: '--dirichlet', option: 'dirichlet', tasks: ['binary'] },
];

/** Throws, naming the flag, when a task-specific demo flag is given with another task. */
export function checkTaskFlags(options: AnyDemoOptions): void {
  const task = options.task ?? 'binary';
  for (const { flag, option, tasks } of TASK_FLAGS) {
    if (options[option] === undefined || tasks.includes(task)) continue;
    // The messages cli/main.ts and the tests already know, kept word for word.
    if (flag === '--loss') throw new Error(`--loss ${options.loss} is a regression loss: add --task regression`);
    if (flag === '--positive' && task === 'regression') throw new Error('--positive names the positive class of a binary target: a regression target has none');
    if (flag === '--dirichlet' && task === 'regression') throw new Error('--dirichlet skews the split by class: a regression target has none; use --partition-by <column>');
    throw new Error(`${flag} applies to --task ${tasks.join(' or ')} only, not --task ${task}`);
  }
}

/** The demo's options for any task: forecast (cli/demo-forecast.ts) and recommend (cli/demo-recommend.ts) read the same fields. */
export interface AnyDemoOptions extends Omit<DemoOptions, 'task'> {
  task?: DemoTask;
}

export interface DemoOptions {
  data?: string;
  /** PostgreSQL for the demo's coordinator (`--database-url`); the embedded PGlite when absent. */
  databaseUrl?: string;
  target?: string;
  /** binary (default) or regression of a numeric target (AnyDemoOptions: also forecast and recommend). */
  task?: 'binary' | 'regression';
  /** forecast: the date column (daily or weekly). */
  date?: string;
  /** forecast: the series id column (store, product, store x product). */
  series?: string;
  /** forecast: periods held out and forecast at the end of every series. */
  horizon?: number;
  /** recommend: the user column. */
  user?: string;
  /** recommend: the item column. */
  item?: string;
  /** Nodes run `fedmark node --personalize` (default true; false with --no-personalize). */
  personalize?: boolean;
  /** Regression loss (default DEFAULT_REGRESSION_LOSS). */
  loss?: RegressionLoss;
  /** The study's aggregation strategy `{ name, ...params }` (default fedavg). */
  strategy?: z.input<typeof StrategyConfig>;
  positive?: string;
  partitionBy?: string;
  nodes?: number;
  dirichlet?: number;
  rounds?: number;
  /** logreg and linear are the same one-layer model (the name of the usual task); default mlp 32-16. */
  model?: 'logreg' | 'linear' | 'mlp';
  localEpochs?: number;
  out?: string;
  exclude?: string;
  /** Field delimiter of --data (default: detected from its header and first lines). */
  delimiter?: CsvDelimiter;
  seed?: number;
  localBaseline?: boolean;
  json?: boolean;
  /** Central (client-level) DP: the study's total epsilon; the noise multiplier is calibrated to it. */
  epsilon?: number;
  delta?: number;
  /** Clip norm of node updates under central DP. */
  clip?: number;
  /** Record-level DP-SGD on every node. */
  dpSgd?: boolean;
  /** Target record-level epsilon of DP-SGD over the whole study (default 3). */
  dpSgdEpsilon?: number;
  accountant?: 'rdp' | 'pld';
  /** Where progress lines go (default stdout, or stderr with --json). */
  progress?: NodeJS.WritableStream;
  /** FOR DEMOS AND TESTS: the first `count` nodes run as attackers (`fedmark node --attack`). */
  attackers?: { attack: AttackName; count: number };
  /** The study's fit and evaluation deadlines in seconds (default: 120 and 60, more with many nodes). */
  deadlines?: { round: number; evaluation: number };
  /** null: the study is created with `bounds: null`, no bounds on the nodes' claims (legacy, undefended); default: the study defaults. */
  bounds?: null;
  /** The study's evaluationSchedule (default 'with-next-fit'; 'own-phase' for comparison runs and tests). */
  evaluationSchedule?: 'own-phase' | 'with-next-fit';
}

export interface DemoResult extends SpeedFigures {
  studyId: string;
  task: 'binary' | 'regression';
  /** Regression only: the loss the model was fit with. */
  loss?: RegressionLoss;
  /** The study's strategy with its parameters (defaults filled in). */
  strategy: StrategyConfig;
  rounds: Array<{ round: number; phase: string; nodes: number; invited: number; meanLoss: number | null; validationAuc: number | null; validationR2?: number | null; validationRmse?: number | null; seconds: number; durationSeconds: number | null; failureReason: string | null; epsilonRound?: number; epsilonTotal?: number; dpSgdEpsilonTotal?: number }>;
  /** The kind's pooled metrics of the global model on the held-out test rows (auc, logLoss, brier; rmse, mae, r2, bias, baselineRmse, baselineMae). */
  globalTest: PooledMetrics;
  /** Binary: the global model's test AUC (null for regression). */
  globalTestAuc: number | null;
  /** Regression: the global model's test R^2, RMSE and MAE, and the mean-only baseline's RMSE (the target center of the spec predicting every row). */
  globalR2?: number | null;
  globalRmse?: number | null;
  globalMae?: number | null;
  baselineRmse?: number | null;
  baselineMae?: number | null;
  localOnly: Array<{ node: string; trainRows: number; testAuc: number | null; testR2?: number | null; testRmse?: number | null; testMae?: number | null }>;
  meanLocalOnlyAuc: number | null;
  meanLocalOnlyR2?: number | null;
  meanLocalOnlyRmse?: number | null;
  /**
   * Regional personalization (nodes run `fedmark node --personalize` unless --no-personalize): the
   * global model and the nodes' fine-tuned copies pooled over the same nodes' held-out rows at the
   * last round (null when no node personalized), and how many nodes sent personalized statistics.
   */
  globalValidationAuc?: number | null;
  personalizedAuc?: number | null;
  globalValidationR2?: number | null;
  personalizedR2?: number | null;
  globalValidationRmse?: number | null;
  personalizedRmse?: number | null;
  personalizedNodes?: number;
  modelPath: string;
  outDir: string;
  wallSeconds: number;
  nodes: number;
  partition: string;
  audit?: { dir: string; ok: boolean; entries: number | null };
  privacy: { accountant: string; delta: number; central: { epsilonBudget: number; noiseMultiplier: number; clipNorm: number; epsilonSpent: number } | null; dpSgd: { targetEpsilon: number; noiseMultiplier: number; samplingRate: number; epsilonSpentMax: number } | null } | null;
  /** With attackers: the attack and the nodes that ran it (their logs: logs/node-NAME.log). */
  attack?: { name: AttackName; nodes: string[] };
}

/**
 * The demo federation: one CSV split into regions, a coordinator process and one node process per
 * region on loopback, a study run to the end, then the global model compared with models each
 * region could have trained alone. The demo process itself plays the operator.
 */
export async function runDemo(options: DemoOptions): Promise<DemoResult>;
export async function runDemo(options: AnyDemoOptions): Promise<DemoResult | KindDemoResult>;
export async function runDemo(anyOptions: AnyDemoOptions): Promise<DemoResult | KindDemoResult> {
  checkTaskFlags(anyOptions);
  if (anyOptions.task === 'forecast' || anyOptions.task === 'recommend') return runKindDemo(anyOptions.task, anyOptions);
  const options = anyOptions as DemoOptions;
  const started = performance.now();
  const progress = options.progress ?? (options.json ? process.stderr : process.stdout);
  const say = (line: string) => progress.write(line + '\n');
  const regression = options.task === 'regression';
  const task = TaskSpec.parse(regression ? { kind: 'regression', loss: options.loss ?? DEFAULT_REGRESSION_LOSS } : { kind: 'binary' });
  const strategy = StrategyConfig.parse(options.strategy ?? { name: 'fedavg' });
  if (options.epsilon !== undefined && EVERY_UPDATE_STRATEGIES.has(strategy.name)) {
    throw new Error(`--epsilon (central DP) cannot wrap --strategy ${strategy.name}: the DP wrapper noises the mean of the updates, and ${strategy.name} does not aggregate through a mean; use fedavg, fedprox, fedavgm, fedadam, fedyogi or fedadagrad, or --dp-sgd`);
  }
  const shippedData = regression ? SHIPPED_REGRESSION_DATA : SHIPPED_DATA;
  const dataPath = resolve(options.data ?? shippedData);
  const shipped = dataPath === shippedData;
  const target = options.target ?? (shipped ? (regression ? 'spend_12m' : 'churn') : undefined);
  if (!target) throw new Error(`--target is required with --data (the ${regression ? 'numeric' : 'binary'} column to predict)`);
  const seed = options.seed ?? 42;
  const rounds = options.rounds ?? 20;
  const nodeCount = options.nodes ?? 10;
  const partitionBy = options.dirichlet !== undefined ? undefined : (options.partitionBy ?? (shipped ? (regression ? 'region' : 'state') : undefined));
  if (options.dirichlet !== undefined && options.partitionBy) throw new Error('give --partition-by or --dirichlet, not both');
  if (nodeCount < 2) throw new Error('--nodes must be at least 2: a federation of one is just local training');
  // 1. The data, its spec, a held-out test split, and one CSV per region.
  const table = readCsvTable({ path: dataPath }, options.delimiter ? { delimiter: options.delimiter } : {});
  const exclude = (options.exclude ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  // The shipped customer-value data's id column is not a feature (one value per row).
  if (shipped && regression && !exclude.includes('customer_id')) exclude.push('customer_id');
  const infer = (rows: CsvTable): FeatureSpec => (regression ? inferFeatureSpec(rows, { target, task: 'regression', exclude }) : inferFeatureSpec(rows, { target, positive: options.positive, exclude }));
  // Binary: stratified by class, so the test split has the data's churn rate (labels only: a
  // first spec over all rows is used for nothing else).
  const labels = regression ? undefined : encodeTable(table, infer(table)).y;
  const [trainIdx, testIdx] = splitRows(table.rows.length, [0.8, 0.2], seed, labels);
  // The study's spec comes from the training rows only: no statistic of a test row (feature
  // means and vocabularies, the target center the regression baseline predicts) shapes the model
  // or the baseline it is compared with.
  const spec = infer({ ...table, rows: trainIdx.map((i) => table.rows[i]), lineOf: (i: number) => table.lineOf(trainIdx[i]) });
  const encoded = encodeTable(table, spec);
  let partitions: Partition[];
  let partitionLabel: string;
  if (partitionBy) {
    const col = table.header.indexOf(partitionBy);
    if (col < 0) throw new Error(`--partition-by: no column "${partitionBy}" in ${dataPath} (columns: ${table.header.join(', ')})`);
    partitions = partitionByColumn(table.rows.map((r) => r[col]), trainIdx, nodeCount);
    partitionLabel = `by ${partitionBy} into ${partitions.length} regions`;
  } else if (options.dirichlet !== undefined) {
    partitions = partitionDirichlet(encoded.y, trainIdx, nodeCount, options.dirichlet, seed);
    partitionLabel = `label-skewed Dirichlet(${options.dirichlet}) over ${nodeCount} nodes`;
  } else {
    partitions = partitionRandom(trainIdx, nodeCount, seed);
    partitionLabel = `at random into ${nodeCount} nodes (seed ${seed}; --partition-by COLUMN for regions, --dirichlet ALPHA for label skew)`;
  }
  const warnings = partitionWarnings(partitions, regression ? undefined : encoded.y);
  partitions = partitions.filter((p) => p.rows.length > 0);
  if (partitions.length < 2) throw new Error(`the split gave ${partitions.length} node with rows: a federation needs at least 2 (raise --nodes or choose another --partition-by)`);

  const oneLayer = options.model === 'logreg' || options.model === 'linear';
  const baseModel = ModelSpec.parse(oneLayer ? { kind: regression ? 'linear' : 'logreg' } : { kind: 'mlp', hidden: [32, 16] });
  // Under DP-SGD the tuned preset also fixes the MLP's hidden activation (tanh at epsilon <= 4).
  const model = options.dpSgd ? dpSgdPresetModel(DP_SGD_PRESETS[dpSgdPresetFor(oneLayer ? 'logreg' : 'mlp', options.dpSgdEpsilon ?? 3)], baseModel) : baseModel;
  const training = TrainingConfig.parse({ localEpochs: options.localEpochs ?? 1, seed });
  const privacy = demoPrivacy(options, rounds, partitions.map((p) => p.rows.length));
  // Krum scores each update against its nearest others: it needs n > 2f + 2 updates a round.
  const needed = minimumUpdates(strategy);
  if (needed > partitions.length) {
    throw new Error(`--strategy ${strategy.name} needs at least ${needed} updates a round${strategy.name === 'krum' ? ` (more than 2 x ${strategy.byzantine} + 2, and at least --select ${strategy.select})` : ''} but the split has ${partitions.length} nodes: raise --nodes${strategy.name === 'krum' ? ' or lower --byzantine / --select' : ''}`);
  }
  const studyConfig: StudyConfigInput = {
    name: `demo: ${target} from ${dataPath.split('/').pop()}`,
    task,
    model,
    strategy,
    features: spec,
    training,
    rounds,
    minNodesPerRound: Math.max(2, Math.ceil(partitions.length / 2), needed),
    minNodesToStart: partitions.length,
    // All the node processes share this machine's cores: 51 of them (one per state) need far
    // longer for a round than 10 do, and a deadline missed here would fail rounds for no reason.
    roundDeadlineSeconds: options.deadlines?.round ?? Math.max(120, 6 * partitions.length),
    evaluationDeadlineSeconds: options.deadlines?.evaluation ?? Math.max(60, 3 * partitions.length),
    seed,
    // Each round's federated evaluation rides on the next round's fit tasks (issue 13; README "Study config").
    evaluationSchedule: options.evaluationSchedule ?? 'with-next-fit',
    ...(privacy ? { privacy } : {}),
    // Spread, not a field: the study schema strips a key it does not know (before claim bounds existed).
    ...(options.bounds === null ? { bounds: null } : {}),
  };
  const attackers = new Set(options.attackers ? partitions.slice(0, options.attackers.count).map((p) => p.name) : []);
  if (options.attackers && (options.attackers.count < 1 || options.attackers.count >= partitions.length)) throw new Error(`--malicious ${options.attackers.count}: between 1 and ${partitions.length - 1} of the ${partitions.length} nodes`);

  // Everything above may still refuse the run (a typo in --target, a split that cannot work):
  // only now is the previous run's output replaced.
  const outDir = prepareDemoOut(options.out);
  mkdirSync(join(outDir, 'logs'), { recursive: true });
  writeFeatureSpecFile(join(outDir, 'spec.json'), spec);
  for (const p of partitions) {
    mkdirSync(join(outDir, 'nodes', p.name), { recursive: true });
    writeCsvTable(join(outDir, 'nodes', p.name, 'data.csv'), table.header, p.rows.map((i) => table.rows[i]));
  }
  writeCsvTable(join(outDir, 'test.csv'), table.header, testIdx.map((i) => table.rows[i]));
  say(`fedmark demo: ${table.rows.length} rows of ${dataPath}`);
  say(`  split ${partitionLabel}; ${testIdx.length} rows held out for the test; output in ${outDir}`);
  for (const warning of warnings) say(`  WARNING: ${warning}`);

  // 2. The coordinator and the nodes, as separate processes, run the study (cli/demo-federation.ts).
  const intro: string[] = [];
  if (privacy?.central) intro.push(`  central DP: budget epsilon ${privacy.budgetEpsilon} at delta ${privacy.delta} -> noise multiplier ${privacy.central.noiseMultiplier.toFixed(3)}, clip ${options.clip ?? DEFAULT_CLIP} (${privacy.accountant} accountant)`);
  if (privacy?.dpSgd) intro.push(`  DP-SGD on every node: noise multiplier ${privacy.dpSgd.noiseMultiplier.toFixed(3)}, sampling rate ${privacy.dpSgd.samplingRate}, clip ${privacy.dpSgd.clipNorm}, target epsilon ${options.dpSgdEpsilon ?? 3} per node`);
  intro.push(`  ${rounds} rounds of ${describeStrategy(strategy)}, ${regression ? `regression of ${target} (${task.kind === 'regression' ? task.loss : ''} loss)` : `binary ${target}`}, model ${model.kind}${model.kind === 'mlp' ? ` ${encodedWidth(spec)}-${model.hidden.join('-')}-1` : ''}`);
  // TensorFlow.js for the test-set scoring, loaded while rounds 2+ run (not at start-up, where the nodes need the cores).
  let backend: Promise<unknown> | undefined;
  const warmBackend = () => (backend ??= initBackend(process.env.FEDMARK_TF_BACKEND as 'wasm' | undefined));
  const federation = await runFederation({
    studyConfig,
    outDir,
    databaseUrl: options.databaseUrl,
    afterRoundOne: () => void warmBackend().catch(() => undefined), // an error surfaces at the await below
    say,
    intro,
    // Each node fine-tunes the final global model on its own rows (the table's "personalized" row);
    // not in the attack comparison, which measures what the attackers do to the global model, nor
    // under DP: the fine-tuning and its noised evaluation would be charged on top of the epsilon
    // the flags asked for (and under central DP alone the node withholds them anyway).
    nodeFlags: personalizes(options) ? ['--personalize'] : [],
    nodes: partitions.map((p) => ({
      name: p.name,
      dataFile: join(outDir, 'nodes', p.name, 'data.csv'),
      rows: p.rows.length,
      values: p.values,
      ...(attackers.has(p.name) ? { flags: ['--attack', options.attackers!.attack], note: `ATTACKER: ${options.attackers!.attack}` } : {}),
    })),
    // 3. A line per finished round: the kind's pooled metrics of the global model on the nodes' held-out rows.
    roundMetrics: (metrics, r) =>
      regression
        ? { text: `federated val R2 ${fmt(metrics?.r2)}  RMSE ${fmtValue(metrics?.rmse)}`, fields: { validationR2: metrics?.r2 ?? null, validationRmse: metrics?.rmse ?? null } }
        : { text: `federated val AUC ${fmt(r.validationAuc)}` },
  });
  const { weights, modelPath, privacyReport: report } = federation;
  const federationSeconds = (federation.endedAt - started) / 1000;

  // 4. The global model on the held-out test split, against local-only models.
  await warmBackend();
  // Evaluated and trained through the study's model kind, as a node would: the same output
  // unit, loss, target transform and sufficient statistics as the federation.
  const studyParsed = StudyConfig.parse(studyConfig);
  const kind = nodeKindFor(studyParsed);
  const width = encodedWidth(spec);
  // What the mean-only baseline predicts (shown in the table; poolStudyEvaluation uses the same).
  const center = isNumericTarget(spec.target) ? spec.target.center : 0;
  const test = subset(encoded, testIdx);
  const evaluate = (w: WeightSet) => {
    const m = kind.createModel(studyParsed, width);
    try {
      setWeights(m, w);
      return poolStudyEvaluation(studyParsed, [kind.evaluate(m, test).stats]);
    } finally {
      m.dispose();
    }
  };
  const globalTest = evaluate(weights);

  const localOnly: DemoResult['localOnly'] = [];
  if (options.localBaseline !== false) {
    say(`  training local-only baselines (each region alone, ${rounds * training.localEpochs} epochs: the same compute) ...`);
    for (const p of partitions) {
      const trained = await trainAlone(kind, studyParsed, width, subset(encoded, p.rows), rounds * training.localEpochs);
      const m = evaluate(trained);
      localOnly.push(regression ? { node: p.name, trainRows: p.rows.length, testAuc: null, testR2: m.r2, testRmse: m.rmse, testMae: m.mae } : { node: p.name, trainRows: p.rows.length, testAuc: m.auc });
    }
  }
  const meanOf = (xs: Array<number | null | undefined>) => {
    const finite = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
  };
  const meanLocalOnlyAuc = regression ? null : meanOf(localOnly.map((l) => l.testAuc));
  const meanLocalOnlyR2 = regression ? meanOf(localOnly.map((l) => l.testR2)) : undefined;
  const meanLocalOnlyRmse = regression ? meanOf(localOnly.map((l) => l.testRmse)) : undefined;

  say('');
  const label = (l: DemoResult['localOnly'][number]) => {
    const p = partitions.find((x) => x.name === l.node)!;
    return `local-only ${l.node}${p.values.length ? ` (${abbreviate(p.values)})` : ''}`;
  };
  const personalized = personalizedSummary(federation.status);
  if (regression) {
    const columns = [{ header: 'train rows', width: 10 }, { header: 'test R2', width: 8 }, { header: 'test RMSE', width: 10 }];
    say(`test R2 and RMSE of ${target} on ${testIdx.length} held-out rows (mean-only baseline: predict ${fmtValue(center)} for every row)`);
    say(tableHeader(columns));
    say(tableRow(columns, 'federated global model', [String(trainIdx.length), fmt(globalTest.r2), fmtValue(globalTest.rmse)]));
    for (const l of localOnly) say(tableRow(columns, label(l), [String(l.trainRows), fmt(l.testR2), fmtValue(l.testRmse)]));
    if (meanLocalOnlyR2 !== null && meanLocalOnlyR2 !== undefined) say(tableRow(columns, 'mean of local-only models', ['', fmt(meanLocalOnlyR2), fmtValue(meanLocalOnlyRmse)]));
    say(tableRow(columns, 'mean-only baseline', ['', '', fmtValue(globalTest.baselineRmse)]));
    for (const line of personalizedLines(personalized, columns, (m) => ['', fmt(m?.r2), fmtValue(m?.rmse)])) say(line);
  } else {
    const columns = [{ header: 'train rows', width: 10 }, { header: 'test AUC', width: 8 }];
    say(`test AUC on ${testIdx.length} held-out rows`);
    say(tableHeader(columns));
    say(tableRow(columns, 'federated global model', [String(trainIdx.length), fmt(globalTest.auc)]));
    for (const l of localOnly) say(tableRow(columns, label(l), [String(l.trainRows), fmt(l.testAuc)]));
    if (meanLocalOnlyAuc !== null) say(tableRow(columns, 'mean of local-only models', ['', fmt(meanLocalOnlyAuc)]));
    for (const line of personalizedLines(personalized, columns, (m) => ['', fmt(m?.auc)])) say(line);
  }
  say('');
  say(`global model written to ${modelPath} (with ${join(outDir, 'global-model.json')}); federation took ${federationSeconds.toFixed(1)}s`);

  const result: DemoResult = {
    studyId: federation.studyId,
    task: regression ? 'regression' : 'binary',
    ...(task.kind === 'regression' ? { loss: task.loss } : {}),
    strategy,
    rounds: federation.rounds,
    globalTest,
    globalTestAuc: regression ? null : (globalTest.auc ?? null),
    ...(regression ? { globalR2: globalTest.r2, globalRmse: globalTest.rmse, globalMae: globalTest.mae, baselineRmse: globalTest.baselineRmse, baselineMae: globalTest.baselineMae, meanLocalOnlyR2, meanLocalOnlyRmse } : {}),
    localOnly,
    meanLocalOnlyAuc,
    // Regional personalization: the global and the personalized models on the nodes' own held-out rows.
    ...(regression ? { ...personalizedFields(personalized, 'r2', 'R2'), ...personalizedFields(personalized, 'rmse', 'Rmse') } : personalizedFields(personalized, 'auc', 'Auc')),
    modelPath,
    outDir,
    wallSeconds: (performance.now() - started) / 1000,
    // Issue 13's figures: median round, round 1 with the start-up, peak RSS of coordinator and nodes.
    ...speedFigures(federation),
    nodes: partitions.length,
    partition: partitionLabel,
    privacy: privacy
      ? {
          accountant: privacy.accountant,
          delta: privacy.delta,
          central: privacy.central ? { epsilonBudget: privacy.budgetEpsilon!, noiseMultiplier: privacy.central.noiseMultiplier, clipNorm: options.clip ?? DEFAULT_CLIP, epsilonSpent: report?.spentEpsilon ?? 0 } : null,
          dpSgd: privacy.dpSgd ? { targetEpsilon: options.dpSgdEpsilon ?? 3, noiseMultiplier: privacy.dpSgd.noiseMultiplier, samplingRate: privacy.dpSgd.samplingRate, epsilonSpentMax: Math.max(0, ...(report?.nodes ?? []).map((n) => n.dpSgd?.epsilonTotal ?? 0)) } : null,
        }
      : null,
  };
  if (options.attackers) result.attack = { name: options.attackers.attack, nodes: [...attackers] };
  if (privacy) {
    say(`privacy spent: ${privacy.central ? `client-level epsilon ${fmt(report?.spentEpsilon ?? 0)} of ${privacy.budgetEpsilon} (delta ${privacy.delta})` : 'no central DP'}${privacy.dpSgd ? `; DP-SGD record-level epsilon per node up to ${fmt(result.privacy!.dpSgd!.epsilonSpentMax)} (delta ${privacy.delta})` : ''}`);
  }
  result.audit = { dir: federation.audit.dir, ok: federation.audit.ok, entries: federation.audit.entries };
  say(auditLine(federation.audit));
  writeFileSync(join(outDir, 'summary.json'), JSON.stringify(result, null, 2));
  if (options.json) process.stdout.write(JSON.stringify(result) + '\n');
  return result;
}

/** Do the demo's nodes run `fedmark node --personalize`: unless --no-personalize, --attack or DP. */
export function personalizes(options: Pick<AnyDemoOptions, 'personalize' | 'attackers' | 'epsilon' | 'dpSgd'>): boolean {
  return options.personalize !== false && !options.attackers && options.epsilon === undefined && !options.dpSgd;
}

/** What the forecast and recommend demos return (their own result types, in their files). */
export type KindDemoResult = { studyId: string; task: 'forecast' | 'recommend' } & Record<string, unknown>;

/**
 * `--task forecast` and `--task recommend`: their own demos (cli/demo-forecast.ts, cli/demo-recommend.ts)
 * on the same federation runner (cli/demo-federation.ts), loaded only when asked for.
 */
async function runKindDemo(task: 'forecast' | 'recommend', options: AnyDemoOptions): Promise<KindDemoResult> {
  // A computed specifier: the module is typed by its own file, not required to type-check this one.
  const file = new URL(`./demo-${task}.ts`, import.meta.url).href;
  const module = (await import(file)) as Record<string, (options: AnyDemoOptions) => Promise<KindDemoResult>>;
  const run = module[task === 'forecast' ? 'runForecastDemo' : 'runRecommendDemo'];
  if (typeof run !== 'function') throw new Error(`--task ${task}: its demo is not available in this build (${file})`);
  return run(options);
}

const DEFAULT_CLIP = 0.5;

/** The study's privacy section from the demo flags: noise calibrated to the requested epsilon. */
function demoPrivacy(options: DemoOptions, rounds: number, nodeRows: number[]): StudyPrivacy | undefined {
  if (options.epsilon === undefined && !options.dpSgd) return undefined;
  const delta = options.delta ?? 1e-5;
  const accountant = options.accountant ?? 'rdp';
  const privacy: StudyPrivacy = { accountant, delta };
  if (options.epsilon !== undefined) {
    // Every ready node takes part in every round (q = 1): with few nodes, client-level DP is costly.
    const sigma = calibrateSigma({ q: 1, steps: rounds, delta, epsilon: options.epsilon, accountant });
    privacy.central = { noiseMultiplier: sigma, clipping: { kind: 'fixed', norm: options.clip ?? DEFAULT_CLIP }, nodeSamplingRate: 1 };
    privacy.budgetEpsilon = options.epsilon;
  }
  if (options.dpSgd) {
    // The tuned preset for the model (protocols/privacy/dp-presets.ts, measured by `npm run bench
    // -- --only privacy`): half of a node's rows a step, few steps, a public step denominator.
    const model = options.model === 'logreg' || options.model === 'linear' ? 'logreg' : 'mlp';
    const epsilon = options.dpSgdEpsilon ?? 3;
    const preset = DP_SGD_PRESETS[dpSgdPresetFor(model, epsilon)];
    // Every round's noised federated evaluation is charged to the same record-level ledger: a
    // quarter of the target goes to it, and the DP-SGD noise is calibrated so training and
    // evaluation together (composed as the node's ledger composes them) spend the target.
    const plan = dpSgdPlanWithEvaluation(preset, { epsilon, delta, rounds, nodeRows: nodeRows.map((n) => Math.max(1, Math.round(n * 0.8))) });
    privacy.dpSgd = plan.dpSgd;
    privacy.evaluation = { bins: 20, noiseMultiplier: plan.evaluation.noiseMultiplier };
  }
  return StudyPrivacy.parse(privacy);
}

function describeStrategy(strategy: StrategyConfig): string {
  const params = Object.entries(strategy).filter(([k]) => k !== 'name');
  return params.length ? `${strategy.name} (${params.map(([k, v]) => `${k} ${v}`).join(', ')})` : strategy.name;
}


function abbreviate(values: string[]): string {
  return values.length <= 6 ? values.join(' ') : `${values.slice(0, 5).join(' ')} +${values.length - 5}`;
}
