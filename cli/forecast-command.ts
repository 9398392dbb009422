import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';

interface ForecastOptions {
  model: string;
  data: string;
  horizon?: number;
  out?: string;
  json?: boolean;
}

const positiveInt = (raw: string): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`must be a positive whole number of periods, got ${JSON.stringify(raw)}`);
  return n;
};

/**
 * `fedmark forecast --model DIR --data history.csv --horizon 12 [--out forecasts.csv]`: the
 * periods after each series' last value, with the feature construction the nodes trained with
 * (models/forecast-features.ts). Covariates of future periods: from rows of the file past a
 * series' last target value (target cell empty), else the last known value, else 0.
 */
export function registerForecastCommand(program: Command): void {
  program
    .command('forecast')
    .description("forecast each series of a long-format CSV with an exported forecast model (fedmark model export): writes date, series, forecast for the periods after each series' last value")
    .requiredOption('--model <dir>', 'export folder of a forecast study (model.json, weights.bin, preprocessing.json)')
    .requiredOption('--data <file>', "history in long format: the study's date, series, target and covariate columns; rows past a series' last value (target empty) give future covariates")
    .option('--horizon <n>', "periods ahead (at most the study's task.horizon; default: that horizon)", positiveInt)
    .option('--out <file>', 'CSV to write (default: stdout)')
    .option('--json', 'print a JSON summary on stdout (with --out)')
    .action(async (opts: ForecastOptions) => runForecast(opts));
}

async function runForecast(opts: ForecastOptions): Promise<void> {
  const { readCsvTable, writeCsvTable } = await import('../models/csv-table.ts');
  const { loadExport } = await import('../models/predict.ts');
  const { DataError } = await import('../models/errors.ts');
  const { ForecastTask } = await import('../protocols/model-kinds/forecast.ts');
  const { futureRows } = await import('../models/forecast-features.ts');
  const { encodeTable } = await import('../models/encode.ts');
  const { predictScores } = await import('../models/train.ts');
  const { forecastMap, forecastValue } = await import('../models/kinds/forecast.ts');
  const { formatDay } = await import('../models/calendar.ts');
  // The study's kind first (a cheap read): a binary or regression export is refused before TensorFlow loads.
  const kindOf = exportedTaskKind(opts.model);
  if (kindOf !== undefined && kindOf !== 'forecast') throw new Error(`--model ${opts.model}: its study is a ${kindOf} study, not a forecast study (task.kind "forecast"); score it with fedmark predict`);
  const loaded = await loadExport(opts.model);
  const prep = loaded.preprocessing;
  const parsed = ForecastTask.safeParse(prep.task);
  if (!parsed.success) {
    throw new Error(`--model ${opts.model}: its study is a ${String((prep.task as { kind?: unknown }).kind)} study, not a forecast study (task.kind "forecast"); score it with fedmark predict`);
  }
  const task = parsed.data;
  const steps = opts.horizon ?? task.horizon;
  if (steps > task.horizon) throw new InvalidArgumentError(`--horizon ${steps}: the model was trained to forecast at most ${task.horizon} periods ahead (its study's task.horizon; every lag is >= that horizon)`);
  const spec = prep.featureSpec;
  let future;
  try {
    future = futureRows(readCsvTable({ path: opts.data }), task, spec.target.column, steps, spec.missingValues);
  } catch (err) {
    if (err instanceof DataError && !err.message.startsWith(opts.data)) throw new Error(`${opts.data}: ${err.message}`);
    throw err;
  }
  const encoded = encodeTable(future.table, spec);
  const outputs = predictScores(loaded.model, encoded.x, encoded.n, encoded.width);
  loaded.model.dispose();
  const map = forecastMap(task, spec);
  const header = [task.date, task.series, 'forecast'];
  const rows = future.seriesIds.map((id, i) => [formatDay(future.days[i]), id, String(forecastValue(map.fromOutput(outputs[i], i, encoded)))]);
  if (future.skipped.length > 0) process.stderr.write(`no forecast for ${future.skipped.length} series whose lags fall in a gap of the history: ${future.skipped.slice(0, 10).join(', ')}${future.skipped.length > 10 ? ' ...' : ''}\n`);
  if (!opts.out) {
    process.stdout.write([header, ...rows].map((r) => r.join(',')).join('\n') + '\n');
    return;
  }
  writeCsvTable(opts.out, header, rows);
  const series = new Set(future.seriesIds).size;
  if (opts.json) process.stdout.write(JSON.stringify({ out: opts.out, rows: rows.length, series, horizon: steps, skipped: future.skipped }) + '\n');
  else process.stdout.write(`forecast ${steps} periods of ${series} series into ${opts.out}\n`);
}

/** task.kind of an export folder's preprocessing.json, or undefined when it cannot be read (loadExport then says why). */
function exportedTaskKind(dir: string): string | undefined {
  try {
    const kind = (JSON.parse(readFileSync(join(dir, 'preprocessing.json'), 'utf8')) as { task?: { kind?: unknown } }).task?.kind;
    return typeof kind === 'string' ? kind : undefined;
  } catch {
    return undefined;
  }
}
