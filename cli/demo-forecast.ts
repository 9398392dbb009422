import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { StudyConfig, type StudyConfigInput } from '../protocols/messages.ts';
import { ForecastTask, poolForecast, type ForecastStats } from '../protocols/model-kinds/forecast.ts';
import { StrategyConfig } from '../protocols/strategies/config.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { makeMissingTest, parseNumericCell } from '../models/cells.ts';
import { parseDay, weekday, formatDay } from '../models/calendar.ts';
import { readCsvTable, writeCsvTable, type CsvTable } from '../models/csv-table.ts';
import { inferForecastSpec } from '../models/forecast-features.ts';
import { initBackend } from '../models/backend.ts';
import { setWeights } from '../models/model-factory.ts';
import { forecastKind } from '../models/kinds/forecast.ts';
import type { EncodedData } from '../models/encode.ts';
import { loadForecastTable } from '../client-node/data-forecast.ts';
import { partitionByColumn } from './partition.ts';
import { trainAlone } from './demo-local-only.ts';
import { auditLine, fmt, prepareDemoOut, runFederation } from './demo-federation.ts';
import { personalizedFields, personalizedLines, personalizedSummary, tableHeader, tableRow, type TableColumn } from './demo-table.ts';
import type { AnyDemoOptions } from './demo.ts';

/**
 * The forecast demo (`npm start -- --task forecast`): a long-format CSV (date, series, target,
 * covariates) split across nodes by --partition-by (default: the series column; whole series per
 * node), one global model trained by FedAvg across every node's series, and the final table on the
 * held-out test = the last --horizon periods of every series (the nodes' own validation rows):
 * the global model, the seasonal-naive forecast, each local-only model (trained on its node's
 * series alone for the same number of epochs, evaluated on the same node's series only) and their
 * mean, and the personalized models (fedmark node --personalize) when present.
 */

const SHIPPED = fileURLToPath(new URL('../data/chicago_ridership.csv', import.meta.url));
/** The shipped data's last two years (of 15): the demo's window, so it runs in well under 2 minutes. */
const SHIPPED_DAYS = 730;
/**
 * What each side gets (scripts/forecast-settings.ts, the shipped data, 8 nodes, 20 rounds): the
 * federation 5 local epochs a round at Adam 0.002 (global WAPE 0.059; 1 epoch at 0.001: 0.077;
 * 3 at 0.002: 0.059 but 0.058-0.071 over the last rounds); each local-only model the same compute,
 * rounds x local epochs = 100 epochs on its node alone, at its own best rate for that budget,
 * Adam 0.001 (mean WAPE 0.064; at 0.0003: 0.068, 0.002: 0.070, 0.003: 0.069). The linear model
 * (--model linear) at 5 x 0.002: global 0.101, local-only mean 0.083, both above seasonal naive.
 */
const DEFAULT_LOCAL_EPOCHS = 5;
const FEDERATED_LEARNING_RATE = 0.002;
const LOCAL_ONLY_LEARNING_RATE = 0.001;

export interface ForecastDemoResult {
  studyId: string;
  task: 'forecast';
  horizon: number;
  frequency: 'day' | 'week';
  series: number;
  nodes: number;
  rounds: number;
  testRows: number;
  globalWape: number | null;
  globalMase: number | null;
  globalBias: number | null;
  naiveWape: number | null;
  naiveMase: number | null;
  meanLocalOnlyWape: number | null;
  meanLocalOnlyMase: number | null;
  meanLocalOnlyBias: number | null;
  /** The local-only models' statistics pooled (each on its own node's series): the same rows as globalWape. */
  localOnlyPooledWape: number | null;
  localOnly: Array<{ node: string; series: string[]; trainRows: number; testWape: number | null; testMase: number | null; globalWape: number | null }>;
  /** The last round's pooled validation metrics, as the coordinator computed them from the nodes' reports. */
  federatedValidationWape: number | null;
  personalizedWape: number | null;
  personalizedMase: number | null;
  globalValidationWape: number | null;
  personalizedNodes: number;
  wallSeconds: number;
  outDir: string;
  audit: { dir: string; ok: boolean; entries: number | null };
}

/** The forecast demo's plan: the data, its task and spec, and the node partitions (all checked before anything is written). */
export interface Plan {
  table: CsvTable;
  task: ForecastTask;
  target: string;
  parts: Array<{ name: string; rows: number[]; values: string[] }>;
  note: string;
}

export async function runForecastDemo(options: AnyDemoOptions): Promise<ForecastDemoResult> {
  const started = performance.now();
  const say = (line: string) => (options.progress ?? (options.json ? process.stderr : process.stdout)).write(`${line}\n`);
  if (options.epsilon !== undefined || options.dpSgd) throw new Error(`${options.dpSgd ? '--dp-sgd' : '--epsilon'}: a forecast study cannot run under DP yet (its WAPE and MASE sums have no noised form; the coordinator refuses it)`);
  const plan = planForecast(options);
  const { table, task, target } = plan;
  const spec = inferForecastSpec(table, task, target);
  const rounds = options.rounds ?? 20;
  const localEpochs = options.localEpochs ?? DEFAULT_LOCAL_EPOCHS;
  // An MLP by default (--model linear for the one-layer model): on the shipped data the linear model
  // stays above the local-only mean however it is trained (scripts/forecast-settings.ts).
  const model = options.model === 'linear' || options.model === 'logreg' ? { kind: 'linear' as const } : { kind: 'mlp' as const, hidden: [16] };
  const studyConfig: StudyConfigInput = {
    name: `demo: forecast ${target} from ${(options.data ?? SHIPPED).split('/').pop()}`,
    task,
    model,
    strategy: StrategyConfig.parse(options.strategy ?? { name: 'fedavg' }),
    features: spec,
    // Measured on the shipped data (scripts/forecast-settings.ts): 5 local epochs of Adam at 0.002,
    // batches of 64 (FedAvg restarts Adam every round: 1 epoch a round at 0.001 was still far from
    // converged after 20 rounds, and wobbled 0.076-0.084 WAPE from round to round).
    training: { localEpochs, learningRate: FEDERATED_LEARNING_RATE, batchSize: 64, seed: options.seed ?? 42 },
    rounds,
    minNodesPerRound: Math.max(2, Math.ceil(plan.parts.length / 2)),
    minNodesToStart: plan.parts.length,
    roundDeadlineSeconds: Math.max(120, 6 * plan.parts.length),
    evaluationDeadlineSeconds: Math.max(60, 3 * plan.parts.length),
    seed: options.seed ?? 42,
  };
  const study = StudyConfig.parse(studyConfig);

  const outDir = prepareDemoOut(options.out);
  writeFileSync(join(outDir, 'spec.json'), JSON.stringify(spec, null, 2) + '\n');
  for (const p of plan.parts) {
    mkdirSync(join(outDir, 'nodes', p.name), { recursive: true });
    writeCsvTable(join(outDir, 'nodes', p.name, 'data.csv'), table.header, p.rows.map((i) => table.rows[i]));
  }
  say(`fedmark demo (forecast): ${table.rows.length} rows of ${options.data ?? SHIPPED}${plan.note}`);
  say(`  ${plan.parts.length} nodes; test = the last ${task.horizon} ${task.frequency === 'day' ? 'days' : 'weeks'} of every series (direct strategy: every lag >= ${task.horizon}); output in ${outDir}`);
  const fed = await runFederation<{ validationWape: number | null }>({
    studyConfig,
    outDir,
    databaseUrl: options.databaseUrl,
    say,
    nodeFlags: options.personalize === false ? [] : ['--personalize'],
    intro: [`  ${rounds} rounds of fedavg, forecast of ${target} (log1p, level ${task.level}), lags ${task.lags.join(' ')}, model ${model.kind}${model.kind === 'mlp' ? ` ${encodedWidth(spec)}-16-1` : ''}`],
    nodes: plan.parts.map((p) => ({ name: p.name, dataFile: join(outDir, 'nodes', p.name, 'data.csv'), rows: p.rows.length, values: p.values })),
    roundMetrics: (m) => ({ text: `federated val WAPE ${fmt(m?.wape)}  MASE ${fmt(m?.mase)}`, fields: { validationWape: m?.wape ?? null } }),
  });

  // The test: each node's own time-split validation rows, built as the node builds them.
  await initBackend(process.env.FEDMARK_TF_BACKEND as 'wasm' | undefined);
  const kind = forecastKind(study);
  const width = encodedWidth(spec);
  const nodes = plan.parts.map((p) => ({ part: p, data: loadForecastTable({ header: table.header, rows: p.rows.map((i) => table.rows[i]), lineOf: (i) => i + 2 }, p.name, study, 0, undefined, undefined) }));
  const evaluate = (w: WeightSet, data: EncodedData) => {
    const m = kind.createModel(study, width);
    try {
      setWeights(m, w);
      return kind.evaluate(m, data).stats as ForecastStats;
    } finally {
      m.dispose();
    }
  };
  const globalStats = nodes.map((n) => evaluate(fed.weights, n.data.validation));
  const global = poolForecast(globalStats);
  const localOnly: ForecastDemoResult['localOnly'] = [];
  const localStats: ForecastStats[] = [];
  if (options.localBaseline !== false) {
    say(`  training local-only baselines (each node's series alone, ${rounds * localEpochs} epochs at Adam ${LOCAL_ONLY_LEARNING_RATE}: the same compute, the local models' best rate) ...`);
    for (const [i, n] of nodes.entries()) {
      const stats = evaluate(await trainAlone(kind, study, width, n.data.train, rounds * localEpochs, LOCAL_ONLY_LEARNING_RATE), n.data.validation);
      localStats.push(stats);
      const m = poolForecast([stats]);
      localOnly.push({ node: n.part.name, series: n.part.values, trainRows: n.data.train.n, testWape: m.wape, testMase: m.mase, globalWape: poolForecast([globalStats[i]]).wape });
    }
  }
  const meanOf = (xs: Array<number | null>) => {
    const ok = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null;
  };
  const localPooled = localStats.length ? poolForecast(localStats) : null;
  const meanLocal = { wape: meanOf(localStats.map((s) => poolForecast([s]).wape)), mase: meanOf(localStats.map((s) => poolForecast([s]).mase)), bias: meanOf(localStats.map((s) => poolForecast([s]).bias)) };
  const summary = personalizedSummary(fed.status);

  const columns: TableColumn[] = [{ header: 'test WAPE', width: 9 }, { header: 'MASE', width: 7 }, { header: 'bias', width: 7 }];
  const cells = (m: { wape?: number | null; mase?: number | null; bias?: number | null } | null) => [fmt(m?.wape), fmt(m?.mase), fmt(m?.bias)];
  say('');
  say(`test: the last ${task.horizon} periods of each of the ${global.series} series (${global.n} rows); WAPE = sum|error| / sum|actual|, MASE scaled by each series' in-sample seasonal-naive error`);
  say(tableHeader(columns));
  say(tableRow(columns, 'federated global model', cells(global)));
  say(tableRow(columns, `seasonal naive (same ${task.frequency === 'day' ? 'weekday' : 'week'} a season back)`, [fmt(global.naiveWape), fmt(global.naiveMase), '']));
  for (const l of localOnly) say(tableRow(columns, `local-only ${l.node} (${abbreviate(l.series)})`, [fmt(l.testWape), fmt(l.testMase), '']));
  if (localOnly.length) {
    say(tableRow(columns, 'mean of local-only models', cells(meanLocal)));
    say(tableRow(columns, 'local-only models pooled (global\'s rows)', cells(localPooled)));
  }
  for (const line of personalizedLines(summary, columns, (m) => cells(m))) say(line);
  say(auditLine(fed.audit));

  const last = fed.status.rounds.at(-1)?.validationMetrics ?? null;
  const result: ForecastDemoResult = {
    studyId: fed.studyId,
    task: 'forecast',
    horizon: task.horizon,
    frequency: task.frequency,
    series: global.series ?? 0,
    nodes: plan.parts.length,
    rounds,
    testRows: global.n ?? 0,
    globalWape: global.wape,
    globalMase: global.mase,
    globalBias: global.bias,
    naiveWape: global.naiveWape,
    naiveMase: global.naiveMase,
    meanLocalOnlyWape: meanLocal.wape,
    meanLocalOnlyMase: meanLocal.mase,
    meanLocalOnlyBias: meanLocal.bias,
    localOnlyPooledWape: localPooled?.wape ?? null,
    localOnly,
    federatedValidationWape: last?.wape ?? null,
    ...(personalizedFields(summary, 'wape', 'Wape') as { personalizedWape: number | null; globalValidationWape: number | null; personalizedNodes: number }),
    personalizedMase: personalizedFields(summary, 'mase', 'Mase').personalizedMase,
    wallSeconds: (performance.now() - started) / 1000,
    outDir,
    audit: { dir: fed.audit.dir, ok: fed.audit.ok, entries: fed.audit.entries },
  };
  writeFileSync(join(outDir, 'summary.json'), JSON.stringify(result, null, 2) + '\n');
  if (options.json) process.stdout.write(JSON.stringify(result) + '\n');
  return result;
}

/**
 * The data, the task and the node partitions from the flags; every refusal names its flag and
 * happens before anything is written. Shipped data: date, station, riders, the last two years.
 * Covariates: every other numeric column (not --exclude'd, not the partition column).
 */
export function planForecast(options: AnyDemoOptions): Plan {
  const dataPath = resolve(options.data ?? SHIPPED);
  const shipped = dataPath === SHIPPED;
  const date = options.date ?? (shipped ? 'date' : undefined);
  const series = options.series ?? (shipped ? 'station' : undefined);
  const target = options.target ?? (shipped ? 'riders' : undefined);
  if (!date) throw new Error('--date is required with --data (the date column, YYYY-MM-DD)');
  if (!series) throw new Error('--series is required with --data (the series id column: store, product, store x product)');
  if (!target) throw new Error('--target is required with --data (the numeric column to forecast)');
  const full = readCsvTable({ path: dataPath }, options.delimiter ? { delimiter: options.delimiter } : {});
  for (const [flag, col] of [['--date', date], ['--series', series], ['--target', target]] as const) {
    if (!full.header.includes(col)) throw new Error(`${flag}: no column "${col}" in ${dataPath} (columns: ${full.header.join(', ')})`);
  }
  const dateCol = full.header.indexOf(date);
  let table = full;
  let note = '';
  if (shipped) {
    // The demo's window: the shipped file's last two years (the file stays whole).
    const last = full.rows.reduce((m, r) => Math.max(m, parseDay(r[dateCol]) ?? -Infinity), -Infinity);
    const from = formatDay(last - SHIPPED_DAYS + 1);
    const keep = full.rows.flatMap((r, i) => (r[dateCol] >= from ? [i] : []));
    table = { header: full.header, rows: keep.map((i) => full.rows[i]), lineOf: (i) => full.lineOf(keep[i]) };
    note = ` (the last ${SHIPPED_DAYS} days, from ${from})`;
  }
  const days = table.rows.map((r) => parseDay(r[dateCol])).filter((d): d is number => d !== undefined);
  const frequency = days.length >= 3 && days.every((d) => weekday(d) === weekday(days[0])) ? 'week' : 'day';
  const horizon = options.horizon ?? (frequency === 'day' ? 14 : 8);
  const exclude = new Set((options.exclude ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const name of exclude) if (!table.header.includes(name)) throw new Error(`--exclude: no column "${name}" in ${dataPath}`);
  const partitionBy = options.partitionBy ?? series;
  if (!table.header.includes(partitionBy)) throw new Error(`--partition-by: no column "${partitionBy}" in ${dataPath} (columns: ${table.header.join(', ')})`);
  const covariates = numericColumns(table).filter((c) => ![date, series, target, partitionBy].includes(c) && !exclude.has(c));
  // Lags in whole seasons from the horizon on (a daily lag a multiple of 7 keeps the weekday).
  const first = frequency === 'day' ? 7 * Math.ceil(horizon / 7) : horizon;
  const step = frequency === 'day' ? 7 : 1;
  const lags = Array.from({ length: 6 }, (_, k) => first + k * step);
  const task = ForecastTask.parse({ kind: 'forecast', date, series, frequency, horizon, lags, windows: frequency === 'day' ? [7] : [4], level: frequency === 'day' ? 28 : 8, calendar: frequency === 'day' ? ['dow', 'year', 'holiday'] : ['year', 'holiday'], covariates });
  const nodeCount = options.nodes ?? 8;
  if (nodeCount < 2) throw new Error('--nodes must be at least 2: a federation of one is just local training');
  const col = table.header.indexOf(partitionBy);
  const parts = partitionByColumn(table.rows.map((r) => r[col]), table.rows.map((_, i) => i), nodeCount).filter((p) => p.rows.length > 0);
  if (parts.length < 2) throw new Error(`--partition-by ${partitionBy} gave ${parts.length} node with rows: a federation needs at least 2`);
  if (partitionBy !== series) {
    // Series cut across nodes would leak nothing but make each node's lags full of gaps: refuse.
    const owner = new Map<string, string>();
    const sCol = table.header.indexOf(series);
    for (const p of parts) for (const i of p.rows) {
      const id = table.rows[i][sCol];
      if (owner.has(id) && owner.get(id) !== p.name) throw new Error(`--partition-by ${partitionBy}: series "${id}" would be split across nodes (${owner.get(id)} and ${p.name}); partition by a column that holds whole series`);
      owner.set(id, p.name);
    }
  }
  return { table, task, target, parts: parts.map((p) => ({ name: p.name, rows: p.rows, values: p.values })), note };
}

/** Columns whose every non-missing cell is a number (and that have at least one). */
function numericColumns(table: CsvTable): string[] {
  const isMissing = makeMissingTest(['NA']);
  return table.header.filter((_, c) => {
    let seen = 0;
    for (const r of table.rows) {
      const cell = r[c] ?? '';
      if (isMissing(cell)) continue;
      if (Number.isNaN(parseNumericCell(cell))) return false;
      seen++;
    }
    return seen > 0;
  });
}


function abbreviate(values: string[]): string {
  const text = values.length <= 1 ? values.join('') : `${values[0]} +${values.length - 1}`;
  return text.length > 18 ? `${text.slice(0, 17)}.` : text;
}
