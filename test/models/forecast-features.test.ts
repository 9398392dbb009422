import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ForecastTask } from '../../protocols/model-kinds/forecast.ts';
import { dayNumber, formatDay, isUsFederalHoliday, parseDay, usFederalHolidays } from '../../models/calendar.ts';
import { buildForecastRows, featureRow, forecastFeatureNames, futureRows, maseScale, seasonalNaive, type Series } from '../../models/forecast-features.ts';
import type { CsvTable } from '../../models/csv-table.ts';
import { DataError } from '../../models/errors.ts';

const table = (header: string[], rows: string[][]): CsvTable => ({ header, rows, lineOf: (i) => i + 2 });
const task = (over: Partial<ForecastTask> & { horizon: number; lags: number[] }) =>
  ForecastTask.parse({ kind: 'forecast', date: 'date', series: 'store', frequency: 'day', ...over });

/** A daily long table: one row per (series, day) from `start`, values from f(series, i). */
function daily(series: string[], days: number, f: (s: number, i: number) => number, start = '2023-01-02'): CsvTable {
  const d0 = parseDay(start)!;
  const rows: string[][] = [];
  series.forEach((id, s) => {
    for (let i = 0; i < days; i++) rows.push([formatDay(d0 + i), id, String(f(s, i))]);
  });
  return table(['date', 'store', 'units'], rows);
}

describe('forecast features: direct strategy, no look-ahead', () => {
  it('every feature of row t depends only on values at periods <= t - H (perturbing later values changes nothing)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 7 }),
        fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.integer({ min: 2, max: 10 }), { maxLength: 2 }),
        fc.array(fc.double({ min: 0, max: 1000, noNaN: true }), { minLength: 60, maxLength: 90 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.array(fc.double({ min: 0, max: 1000, noNaN: true }), { minLength: 90, maxLength: 90 }),
        (horizon, extra, windows, values, tSeed, noise) => {
          const lags = [...new Set(extra.map((e) => e + horizon))];
          const t0 = task({ horizon, lags, windows: [...new Set(windows)], calendar: ['dow', 'year', 'holiday'], ...(tSeed % 2 ? { level: 1 + (tSeed % 13) } : {}) });
          const series: Series = { id: 'a', start: 0, values: Float64Array.from(values), covariates: [], last: values.length - 1 };
          const t = 35 + (tSeed % (values.length - 35));
          const perturbed = Float64Array.from(values, (v, i) => (i > t - horizon ? noise[i] : v));
          const grid = { step: 1 as const, anchor: dayNumber(2023, 1, 2) };
          const before = featureRow(series, t, t0, grid);
          const after = featureRow({ ...series, values: perturbed }, t, t0, grid);
          expect(before).toBeDefined();
          expect(after).toEqual(before);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a lag and a window read exactly the periods t - L and t-H-w+1 .. t-H (log1p scale)', () => {
    const values = Float64Array.from({ length: 40 }, (_, i) => i * 10);
    const s: Series = { id: 'a', start: 0, values, covariates: [], last: 39 };
    const t0 = task({ horizon: 3, lags: [3, 7], windows: [4], calendar: [] });
    const row = featureRow(s, 30, t0, { step: 1, anchor: 0 })!;
    expect(row[0]).toBeCloseTo(Math.log1p(270), 12);
    expect(row[1]).toBeCloseTo(Math.log1p(230), 12);
    // window 4 ending at t - H = 27: periods 24..27.
    expect(row[2]).toBeCloseTo((Math.log1p(240) + Math.log1p(250) + Math.log1p(260) + Math.log1p(270)) / 4, 12);
  });

  it('a lag shorter than the horizon is refused by the task schema', () => {
    const r = ForecastTask.safeParse({ kind: 'forecast', date: 'd', series: 's', frequency: 'day', horizon: 14, lags: [7, 14] });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error!.issues)).toContain('lag 7 is shorter than horizon 14');
  });
});

describe('forecast features: time split', () => {
  it('holds out exactly the last H periods of each series, whatever their lengths', () => {
    const t0 = task({ horizon: 3, lags: [7], calendar: [] });
    const rows: string[][] = [];
    const d0 = parseDay('2024-03-01')!;
    for (let i = 0; i < 30; i++) rows.push([formatDay(d0 + i), 'A', String(i + 1)]);
    for (let i = 5; i < 25; i++) rows.push([formatDay(d0 + i), 'B', String(2 * i)]);
    const built = buildForecastRows(table(['date', 'store', 'units'], rows), t0, 'units');
    const held = (id: string) => [...built.validation.keys()].filter((r) => built.validation[r] && built.seriesIds[built.rowSeries[r]] === id).map((r) => formatDay(built.rowDay[r]));
    expect(held('A')).toEqual(['2024-03-28', '2024-03-29', '2024-03-30']);
    expect(held('B')).toEqual(['2024-03-23', '2024-03-24', '2024-03-25']);
    // Every training row is before its series' held-out periods.
    for (let r = 0; r < built.rowDay.length; r++) {
      if (built.validation[r]) continue;
      const last = built.seriesIds[built.rowSeries[r]] === 'A' ? parseDay('2024-03-27')! : parseDay('2024-03-22')!;
      expect(built.rowDay[r]).toBeLessThanOrEqual(last);
    }
    // Rows without lag 7 (the first 7 days of each series) are left out: A 30 - 7, B 20 - 7.
    expect(built.rowDay.length).toBe(23 + 13);
  });

  it('a gap leaves out the rows whose target or lag falls in it, and the validation periods stay the last H', () => {
    const t0 = task({ horizon: 2, lags: [2], calendar: [] });
    const src = daily(['A'], 16, (_, i) => i + 1, '2024-01-01');
    src.rows.splice(4, 1); // 2024-01-05 missing
    const built = buildForecastRows(src, t0, 'units');
    const days = Array.from(built.rowDay, formatDay);
    expect(days).not.toContain('2024-01-05');
    expect(days).not.toContain('2024-01-07'); // its lag 2 is the gap
    expect(days.filter((_, r) => built.validation[r])).toEqual(['2024-01-15', '2024-01-16']);
  });

  it('the seasonal-naive forecast and the MASE scale match hand-computed values', () => {
    // 21 days, weekly season m = 7, origin o = 20 - 7 = 13: naive for t = 14..20 is y[t - 7].
    const values = Float64Array.from({ length: 21 }, (_, i) => (i % 7) * 10 + Math.floor(i / 7));
    const s: Series = { id: 'a', start: 0, values, covariates: [], last: 20 };
    expect(seasonalNaive(s, 14, 13, 7)).toBe(values[7]);
    expect(seasonalNaive(s, 20, 13, 7)).toBe(values[13]);
    // A 10-step horizon from origin 5: step 9 (t = 14) looks back 2 seasons to t = 0.
    expect(seasonalNaive(s, 14, 5, 7)).toBe(values[0]);
    // |y_t - y_{t-7}| = 1 for t = 7..13: scale 1.
    expect(maseScale(s, 13, 7)).toBe(1);
  });
});

describe('forecast features: calendar', () => {
  it('US federal holidays, observed dates, from the rules', () => {
    const days = (y: number) => usFederalHolidays(y).map(formatDay);
    expect(days(2024)).toEqual(['2024-01-01', '2024-01-15', '2024-02-19', '2024-05-27', '2024-06-19', '2024-07-04', '2024-09-02', '2024-10-14', '2024-11-11', '2024-11-28', '2024-12-25']);
    // 2021: July 4 on a Sunday (observed Monday 5), Christmas on a Saturday (observed Friday 24), New Year 2022 on a Saturday (observed Dec 31 2021).
    for (const d of ['2021-07-05', '2021-12-24', '2021-12-31', '2022-06-20', '2023-11-23']) expect(isUsFederalHoliday(parseDay(d)!), d).toBe(true);
    for (const d of ['2021-07-04', '2020-06-19', '2024-07-05', '2023-11-24']) expect(isUsFederalHoliday(parseDay(d)!), d).toBe(false);
  });

  it('day-of-week one-hot, year position and holiday flag of a row', () => {
    const t0 = task({ horizon: 1, lags: [1], calendar: ['dow', 'year', 'holiday'] });
    const built = buildForecastRows(daily(['A'], 10, () => 5, '2024-06-30'), t0, 'units');
    const names = forecastFeatureNames(t0);
    const r = Array.from(built.rowDay, formatDay).indexOf('2024-07-04');
    const cell = (name: string) => Number(built.table.rows[r][1 + names.indexOf(name)]);
    expect(cell('dow_thu')).toBe(1);
    expect(names.filter((n) => n.startsWith('dow_')).reduce((s, n) => s + cell(n), 0)).toBe(1);
    expect(cell('holiday')).toBe(1);
    const angle = (2 * Math.PI * (dayNumber(2024, 7, 4) - dayNumber(2024, 1, 1))) / 366;
    expect(cell('year_sin')).toBeCloseTo(Math.sin(angle), 12);
    expect(cell('year_cos')).toBeCloseTo(Math.cos(angle), 12);
  });
});

describe('forecast features: weekly data and errors', () => {
  it('weekly series: 52-week season, lags in weeks, holidays counted per week', () => {
    const t0 = task({ frequency: 'week', horizon: 2, lags: [2, 4], calendar: ['year', 'holiday'] });
    const d0 = parseDay('2021-01-04')!; // a Monday
    const rows = Array.from({ length: 70 }, (_, i) => [formatDay(d0 + 7 * i), 'S', String(100 + i)]);
    const built = buildForecastRows(table(['date', 'store', 'units'], rows), t0, 'units');
    const days = Array.from(built.rowDay, formatDay);
    const r = days.indexOf('2021-12-20'); // week of Fri Dec 24 2021 (Christmas observed)
    expect(Number(built.table.rows[r][1])).toBeCloseTo(Math.log1p(100 + 50 - 2), 12);
    expect(Number(built.table.rows[r][1 + forecastFeatureNames(t0).indexOf('holiday')])).toBe(1);
    expect(days.filter((_, i) => built.validation[i])).toEqual([formatDay(d0 + 7 * 68), formatDay(d0 + 7 * 69)]);
    // Seasonal naive 52 weeks back: week 68 -> week 16.
    expect(built.naive[days.indexOf(formatDay(d0 + 7 * 68))]).toBe(100 + 16);
  });

  it('names the line and column of a bad date, of weekly dates off the grid, of daily-declared weekly data', () => {
    const t0 = task({ horizon: 1, lags: [1], calendar: [] });
    const bad = daily(['A'], 5, () => 1);
    bad.rows[3][0] = '2023-02-30';
    expect(() => buildForecastRows(bad, t0, 'units')).toThrow(/line 5, column "date" \(column 1\): "2023-02-30" is not a date YYYY-MM-DD/);
    const weekly = task({ frequency: 'week', horizon: 1, lags: [1], calendar: [] });
    const off = table(['date', 'store', 'units'], [['2024-01-01', 'A', '1'], ['2024-01-08', 'A', '1'], ['2024-01-16', 'A', '1']]);
    expect(() => buildForecastRows(off, weekly, 'units')).toThrow(/line 4, column "date".*not 7 days apart/);
    const looksWeekly = table(['date', 'store', 'units'], [['2024-01-01', 'A', '1'], ['2024-01-08', 'A', '1'], ['2024-01-15', 'A', '1']]);
    expect(() => buildForecastRows(looksWeekly, t0, 'units')).toThrow(/looks weekly but the study's task.frequency is "day"/);
    const dup = daily(['A'], 3, () => 1);
    dup.rows.push([...dup.rows[0]]);
    const err = (() => { try { buildForecastRows(dup, t0, 'units'); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).message).toMatch(/line 5: series "A" has date 2023-01-02 twice \(also on line 2\)/);
  });

  it('future rows: the H periods after the last value, covariates from later rows else carried forward', () => {
    const t0 = task({ horizon: 3, lags: [3], calendar: [], covariates: ['price'] });
    const d0 = parseDay('2024-01-01')!;
    const rows = Array.from({ length: 10 }, (_, i) => [formatDay(d0 + i), 'A', String(i), String(i)]);
    rows.push([formatDay(d0 + 10), 'A', '', '42']);
    const future = futureRows(table(['date', 'store', 'units', 'price'], rows), t0, 'units', 3);
    expect(future.days.map(formatDay)).toEqual(['2024-01-11', '2024-01-12', '2024-01-13']);
    expect(future.table.rows.map((r) => Number(r[2]))).toEqual([42, 42, 42]);
    expect(future.table.rows.map((r) => Number(r[1]))).toEqual([7, 8, 9].map((v) => Math.log1p(v)));
    expect(() => futureRows(table(['date', 'store', 'units', 'price'], rows), t0, 'units', 4)).toThrow(/at most 3 periods ahead/);
  });
});
