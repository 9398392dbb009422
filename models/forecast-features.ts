import type { ForecastTask } from '../protocols/model-kinds/forecast.ts';
import { seasonOf } from '../protocols/model-kinds/forecast.ts';
import { isUsFederalHoliday, parseDay, weekday, yearFraction } from './calendar.ts';
import { cellPlace, makeMissingTest, parseNumericCell, quoteCell } from './cells.ts';
import type { CsvTable } from './csv-table.ts';
import type { EncodedData } from './encode.ts';
import { FeatureSpec, type NumericTarget } from '../protocols/feature-spec.ts';
import { DataError } from './errors.ts';

/**
 * Forecast features, node side and pure (no TensorFlow): a long-format table (date, series id,
 * target, covariates) becomes one row per (series, period) with the study's derived columns,
 * named in the study's FeatureSpec, so the regression machinery (encodeTable, training) is reused.
 *
 * DIRECT strategy: with horizon H, a row at period t only sees the target at periods <= t - H
 * (lags L >= H; a window of w periods covers t-H-w+1 .. t-H), so every step 1..H of a forecast
 * made at the origin t - H uses data known then. Calendar features and covariates (known in
 * advance: price, promotion, weather) are taken at t.
 *
 * Periods: a day, or a week (a week is named by one of its days, the same weekday throughout
 * the file; calendar features read that day, `holiday` counts the federal holidays in the 7 days
 * starting there). Gaps (periods without a row, or with an empty target) are kept as gaps: a row
 * whose target or one of whose lags falls in a gap is left out, a window averages the periods it
 * has (left out when it has none), and nothing is interpolated.
 */

const DOW_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/** The derived feature columns of a task, in the FeatureSpec's order. */
export function forecastFeatureNames(task: ForecastTask): string[] {
  const names = [...(task.level !== undefined ? ['level'] : []), ...task.lags.map((l) => `lag_${l}`), ...task.windows.map((w) => `roll_${w}_mean`)];
  if (task.calendar.includes('dow')) names.push(...DOW_NAMES.map((d) => `dow_${d}`));
  if (task.calendar.includes('year')) names.push('year_sin', 'year_cos');
  if (task.calendar.includes('holiday')) names.push('holiday');
  return [...names, ...task.covariates];
}

/** Lags and windows are on the log1p scale unless the loss is mse (then raw), as the target is trained. */
export function lagScale(task: ForecastTask): (y: number) => number {
  return task.loss === 'mse' ? (y) => y : (y) => Math.log1p(Math.max(y, 0));
}

/** One series on a regular grid of periods: values[i] is period start + i (NaN: a gap). */
export interface Series {
  id: string;
  start: number;
  values: Float64Array;
  /** covariates[c][i]: covariate c at period start + i (NaN: missing or no row). */
  covariates: Float64Array[];
  /** The last period with a target value. */
  last: number;
}

/** A period's first day (a day number) from its index: days are themselves, weeks 7 days apart from `anchor`. */
export interface Grid {
  step: 1 | 7;
  anchor: number;
}
export const dayOf = (grid: Grid, period: number) => grid.anchor + grid.step * period;

function columnIndex(table: CsvTable, name: string, what: string): number {
  const i = table.header.indexOf(name);
  if (i < 0) throw new DataError('missing-column', `line 1: the ${what} column ${JSON.stringify(name)} is missing (columns: ${table.header.map((h) => JSON.stringify(h)).join(', ')})`, 1, name);
  return i;
}

/**
 * Reads the table into series on the task's grid. Errors name line and column: a date that is not
 * YYYY-MM-DD, weekly dates on different weekdays, daily data whose dates are all a week apart
 * (frequency "day" declared for weekly data), a series with the same date twice, text in the
 * target or a covariate. An empty target cell is a gap (or, after the last value, a future period
 * whose covariates `fedmark forecast` uses).
 */
export function readSeries(table: CsvTable, task: ForecastTask, target: string, missingValues: readonly string[] = ['NA']): { series: Series[]; grid: Grid } {
  const dateCol = columnIndex(table, task.date, 'date');
  const seriesCol = columnIndex(table, task.series, 'series');
  const targetCol = columnIndex(table, target, 'target');
  const covCols = task.covariates.map((c) => columnIndex(table, c, 'covariate'));
  const isMissing = makeMissingTest(missingValues);
  const days = new Float64Array(table.rows.length);
  table.rows.forEach((row, r) => {
    const day = parseDay(row[dateCol] ?? '');
    if (day === undefined) throw new DataError('non-numeric', `${cellPlace(table.lineOf(r), task.date, dateCol)}: ${quoteCell(row[dateCol] ?? '')} is not a date YYYY-MM-DD`, table.lineOf(r), task.date);
    days[r] = day;
  });
  const grid = gridOf(table, task, days, dateCol);
  const number = (r: number, col: number, name: string): number => {
    const cell = table.rows[r][col] ?? '';
    if (isMissing(cell)) return Number.NaN;
    const v = parseNumericCell(cell);
    if (Number.isNaN(v)) throw new DataError('non-numeric', `${cellPlace(table.lineOf(r), name, col)}: ${quoteCell(cell)} is not a number`, table.lineOf(r), name);
    return v;
  };
  const byId = new Map<string, number[]>();
  table.rows.forEach((row, r) => {
    const id = (row[seriesCol] ?? '').trim();
    const list = byId.get(id) ?? [];
    list.push(r);
    byId.set(id, list);
  });
  const series: Series[] = [];
  for (const [id, rows] of byId) {
    const periods = rows.map((r) => (days[r] - grid.anchor) / grid.step);
    let start = Number.POSITIVE_INFINITY;
    let end = Number.NEGATIVE_INFINITY;
    for (const p of periods) {
      start = Math.min(start, p);
      end = Math.max(end, p);
    }
    const values = new Float64Array(end - start + 1).fill(Number.NaN);
    const covariates = covCols.map(() => new Float64Array(end - start + 1).fill(Number.NaN));
    const seen = new Map<number, number>();
    let last = Number.NEGATIVE_INFINITY;
    rows.forEach((r, k) => {
      const i = periods[k] - start;
      if (seen.has(i)) throw new DataError('csv-syntax', `line ${table.lineOf(r)}: series ${quoteCell(id)} has date ${table.rows[r][dateCol].trim()} twice (also on line ${table.lineOf(seen.get(i)!)})`, table.lineOf(r), task.date);
      seen.set(i, r);
      values[i] = number(r, targetCol, target);
      if (values[i] < 0 && task.loss !== 'mse') throw new DataError('non-numeric', `${cellPlace(table.lineOf(r), target, targetCol)}: ${values[i]} is negative; task.loss "${task.loss}" needs a non-negative target`, table.lineOf(r), target);
      if (!Number.isNaN(values[i])) last = Math.max(last, periods[k]);
      covCols.forEach((col, c) => (covariates[c][i] = number(r, col, task.covariates[c])));
    });
    if (last > Number.NEGATIVE_INFINITY) series.push({ id, start, values, covariates, last });
  }
  return { series, grid };
}

/** The grid of the file's dates, checked against the declared frequency. */
function gridOf(table: CsvTable, task: ForecastTask, days: Float64Array, dateCol: number): Grid {
  if (days.length === 0) return { step: task.frequency === 'day' ? 1 : 7, anchor: 0 };
  if (task.frequency === 'week') {
    const anchor = ((days[0] % 7) + 7) % 7;
    for (let r = 0; r < days.length; r++) {
      if ((((days[r] - anchor) % 7) + 7) % 7 !== 0) {
        throw new DataError('non-numeric', `${cellPlace(table.lineOf(r), task.date, dateCol)}: weekly data must name every week by the same weekday, but ${table.rows[r][dateCol].trim()} is not 7 days apart from ${table.rows[0][dateCol].trim()} (line ${table.lineOf(0)})`, table.lineOf(r), task.date);
      }
    }
    return { step: 7, anchor };
  }
  // Daily declared: if every date falls on one weekday, the file is weekly (a clear error beats a model with every lag in a gap).
  const wd = weekday(days[0]);
  if (days.length >= 3 && days.every((d) => weekday(d) === wd)) {
    throw new DataError('non-numeric', `column ${JSON.stringify(task.date)}: every date is a ${DOW_NAMES[wd]}: the data looks weekly but the study's task.frequency is "day"`, 1, task.date);
  }
  return { step: 1, anchor: 0 };
}

/** The value of series s at period t (NaN outside its grid or in a gap). */
function valueAt(s: Series, t: number): number {
  const i = t - s.start;
  return i >= 0 && i < s.values.length ? s.values[i] : Number.NaN;
}

/** Covariate c at period t: its value there, else the last known one before t, else 0 (future periods without a row). */
function covariateAt(s: Series, c: number, t: number, carryForward: boolean): number {
  const column = s.covariates[c];
  const i = t - s.start;
  if (i >= 0 && i < column.length && !Number.isNaN(column[i])) return column[i];
  if (!carryForward) return Number.NaN;
  for (let k = Math.min(i, column.length) - 1; k >= 0; k--) if (!Number.isNaN(column[k])) return column[k];
  return 0;
}

/**
 * The feature values of series s at period t (forecastFeatureNames' order), or undefined when a
 * lag falls in a gap or a window has no value. Reads the target only at periods <= t - H.
 * `carryForward`: future periods without a covariate take the last known value (fedmark forecast).
 */
export function featureRow(s: Series, t: number, task: ForecastTask, grid: Grid, carryForward = false): number[] | undefined {
  const f = lagScale(task);
  const out: number[] = [];
  // The level (when the task has one) is subtracted from every lag and window.
  const level = task.level !== undefined ? windowMean(s, t - task.horizon, task.level, f) : 0;
  if (Number.isNaN(level)) return undefined;
  if (task.level !== undefined) out.push(level);
  for (const lag of task.lags) {
    const v = valueAt(s, t - lag);
    if (Number.isNaN(v)) return undefined;
    out.push(f(v) - level);
  }
  for (const w of task.windows) {
    const mean = windowMean(s, t - task.horizon, w, f);
    if (Number.isNaN(mean)) return undefined;
    out.push(mean - level);
  }
  out.push(...calendarRow(dayOf(grid, t), task, grid));
  task.covariates.forEach((_, c) => out.push(covariateAt(s, c, t, carryForward)));
  return out;
}

/** Mean of f(y) over the w periods ending at `end` that have a value; NaN when none has. */
function windowMean(s: Series, end: number, w: number, f: (y: number) => number): number {
  let sum = 0;
  let n = 0;
  for (let p = end - w + 1; p <= end; p++) {
    const v = valueAt(s, p);
    if (!Number.isNaN(v)) {
      sum += f(v);
      n++;
    }
  }
  return n > 0 ? sum / n : Number.NaN;
}

/** Calendar features of the period starting on `day`. */
export function calendarRow(day: number, task: ForecastTask, grid: Grid): number[] {
  const out: number[] = [];
  if (task.calendar.includes('dow')) {
    const wd = weekday(day);
    for (let d = 0; d < 7; d++) out.push(d === wd ? 1 : 0);
  }
  if (task.calendar.includes('year')) {
    // Mid-period, so a week's position is its middle day's.
    const angle = 2 * Math.PI * yearFraction(day + (grid.step - 1) / 2);
    out.push(Math.sin(angle), Math.cos(angle));
  }
  if (task.calendar.includes('holiday')) {
    let holidays = 0;
    for (let d = 0; d < grid.step; d++) if (isUsFederalHoliday(day + d)) holidays++;
    out.push(holidays);
  }
  return out;
}

/**
 * The seasonal-naive forecast of period t from the origin o: the value at t - k m for the
 * smallest k with t - k m <= o that has a value (m the season: 7 days, 52 weeks); NaN if none.
 */
export function seasonalNaive(s: Series, t: number, origin: number, m: number): number {
  for (let k = Math.max(1, Math.ceil((t - origin) / m)); t - k * m >= s.start; k++) {
    const v = valueAt(s, t - k * m);
    if (!Number.isNaN(v)) return v;
  }
  return Number.NaN;
}

/**
 * MASE's scale for a series (Hyndman & Koehler 2006): the in-sample mean |y_t - y_{t-m}| over
 * its training periods (t <= origin, both values present); 0 when there is no such pair.
 */
export function maseScale(s: Series, origin: number, m: number): number {
  let sum = 0;
  let n = 0;
  for (let t = s.start + m; t <= origin; t++) {
    const a = valueAt(s, t);
    const b = valueAt(s, t - m);
    if (Number.isNaN(a) || Number.isNaN(b)) continue;
    sum += Math.abs(a - b);
    n++;
  }
  return n > 0 ? sum / n : 0;
}

/** Feature rows of a table with the time split and what the evaluation needs per row. */
export interface ForecastRows {
  /** Header [target, ...feature names]; one row per usable (series, period). */
  table: CsvTable;
  names: string[];
  seriesIds: string[];
  rowSeries: Int32Array;
  /** Each row's date (YYYY-MM-DD of the period's first day). */
  rowDay: Float64Array;
  /** 1: one of the last `horizon` periods of its series (validation), never trained on. */
  validation: Uint8Array;
  /** The seasonal-naive forecast (validation rows; NaN on training rows). */
  naive: Float64Array;
  /** MASE scale per series. */
  scales: Float64Array;
  grid: Grid;
}

/**
 * Builds every usable row. TIME SPLIT: with o = (the series' last period with a value) - H, the
 * periods o+1 .. o+H are validation rows, everything up to o is training; never a random split.
 * A validation row without a seasonal-naive value (no value in any earlier season) is left out,
 * so the model and the baseline are always compared on the same rows.
 */
export function buildForecastRows(table: CsvTable, task: ForecastTask, target: string, missingValues: readonly string[] = ['NA']): ForecastRows {
  const { series, grid } = readSeries(table, task, target, missingValues);
  const m = seasonOf(task.frequency);
  const names = forecastFeatureNames(task);
  const rows: string[][] = [];
  const lines: number[] = [];
  const meta = { series: [] as number[], day: [] as number[], validation: [] as number[], naive: [] as number[] };
  const scales = new Float64Array(series.length);
  series.forEach((s, si) => {
    const origin = s.last - task.horizon;
    scales[si] = maseScale(s, origin, m);
    for (let t = s.start; t <= s.last; t++) {
      const y = valueAt(s, t);
      if (Number.isNaN(y)) continue;
      const features = featureRow(s, t, task, grid);
      if (!features) continue;
      const held = t > origin;
      const naive = held ? seasonalNaive(s, t, origin, m) : Number.NaN;
      if (held && Number.isNaN(naive)) continue;
      rows.push([String(y), ...features.map((v) => (Number.isNaN(v) ? '' : String(v)))]);
      lines.push(rows.length + 1);
      meta.series.push(si);
      meta.day.push(dayOf(grid, t));
      meta.validation.push(held ? 1 : 0);
      meta.naive.push(naive);
    }
  });
  return {
    table: { header: [target, ...names], rows, lineOf: (i) => lines[i] },
    names,
    seriesIds: series.map((s) => s.id),
    rowSeries: Int32Array.from(meta.series),
    rowDay: Float64Array.from(meta.day),
    validation: Uint8Array.from(meta.validation),
    naive: Float64Array.from(meta.naive),
    scales,
    grid,
  };
}

/**
 * Rows to forecast: the `steps` periods after each series' last value (steps <= H), with the same
 * features; covariates of those periods from the table's rows beyond the last value (target
 * empty), else the last known value, else 0. A series whose lags fall in a gap gets no rows.
 */
export function futureRows(table: CsvTable, task: ForecastTask, target: string, steps: number, missingValues: readonly string[] = ['NA']): { table: CsvTable; seriesIds: string[]; days: number[]; skipped: string[] } {
  if (steps > task.horizon) throw new RangeError(`the study's model forecasts at most ${task.horizon} periods ahead (task.horizon); got ${steps}`);
  const { series, grid } = readSeries(table, task, target, missingValues);
  const names = forecastFeatureNames(task);
  const rows: string[][] = [];
  const seriesIds: string[] = [];
  const days: number[] = [];
  const skipped = new Set<string>();
  for (const s of series) {
    for (let t = s.last + 1; t <= s.last + steps; t++) {
      const features = featureRow(s, t, task, grid, true);
      if (!features) {
        skipped.add(s.id);
        continue;
      }
      rows.push(['0', ...features.map(String)]);
      seriesIds.push(s.id);
      days.push(dayOf(grid, t));
    }
  }
  return { table: { header: [target, ...names], rows, lineOf: (i) => i + 2 }, seriesIds, days, skipped: [...skipped] };
}

/** What a forecast evaluation needs besides x and y, per validation row and per series. */
export interface ForecastEval {
  series: Int32Array;
  naive: Float64Array;
  /** MASE scale per series (index: series). */
  scales: Float64Array;
}
/** Validation data of a forecast study: encoded rows and their ForecastEval. */
export type ForecastEncoded = EncodedData & { forecast?: ForecastEval };

/**
 * The study's FeatureSpec for a forecast task, from a sample the study owner holds (the demo's
 * data, `fedmark spec infer --task forecast`): every derived feature numeric with the mean and
 * population std of its TRAINING rows (std 1 when constant; fill = mean, so a missing covariate
 * encodes as 0), the target numeric with center = mean and scale = std of the training targets.
 * Validation rows (the last H periods) are never looked at.
 */
export function inferForecastSpec(table: CsvTable, task: ForecastTask, target: string, missingValues: readonly string[] = ['NA']): FeatureSpec & { target: NumericTarget } {
  const rows = buildForecastRows(table, task, target, missingValues);
  const width = rows.names.length;
  const sum = new Float64Array(width + 1);
  const sum2 = new Float64Array(width + 1);
  const count = new Float64Array(width + 1);
  rows.table.rows.forEach((row, r) => {
    if (rows.validation[r]) return;
    row.forEach((cell, c) => {
      if (cell === '') return;
      const v = Number(cell);
      sum[c] += v;
      sum2[c] += v * v;
      count[c]++;
    });
  });
  if (count[0] === 0) throw new DataError('no-usable-rows', `no training row: every series needs more than ${task.horizon} periods (horizon) after its first ${Math.max(...task.lags, ...task.windows.map((w) => w + task.horizon - 1))} (longest lag or window)`, 1);
  const stat = (c: number) => {
    const mean = count[c] > 0 ? sum[c] / count[c] : 0;
    const variance = count[c] > 0 ? sum2[c] / count[c] - mean * mean : 0;
    const std = Math.sqrt(Math.max(0, variance));
    return { mean, std: std > 1e-12 ? std : 1 };
  };
  const y = stat(0);
  return FeatureSpec.parse({
    version: 1,
    target: { column: target, kind: 'numeric', center: y.mean, scale: y.std },
    features: rows.names.map((name, i) => ({ name, kind: 'numeric', ...stat(i + 1), fill: stat(i + 1).mean })),
    missingValues: [...missingValues],
  }) as FeatureSpec & { target: NumericTarget };
}
