/**
 * Calendar arithmetic for forecasting on UTC day numbers (days since 1970-01-01), so no time
 * zone or daylight-saving shift can move a date: parsing YYYY-MM-DD, weekdays, and the US
 * federal holidays computed from their rules (5 U.S.C. 6103), never read from the data.
 */

const DAY_MS = 86_400_000;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** The day number of a YYYY-MM-DD date, or undefined when the text is not a real date. */
export function parseDay(text: string): number | undefined {
  const m = DATE.exec(text.trim());
  if (!m) return undefined;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const ms = Date.UTC(y, mo - 1, d);
  const back = new Date(ms);
  // Date.UTC rolls 2023-02-30 over to March 2: a real date reads back the same.
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d) return undefined;
  return ms / DAY_MS;
}

export function dayNumber(year: number, month: number, day: number): number {
  return Date.UTC(year, month - 1, day) / DAY_MS;
}

/** YYYY-MM-DD of a day number. */
export function formatDay(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10);
}

/** 0 = Sunday ... 6 = Saturday (1970-01-01 was a Thursday). */
export function weekday(day: number): number {
  return (((day + 4) % 7) + 7) % 7;
}

/** Fraction of the year elapsed at the day, in [0, 1). */
export function yearFraction(day: number): number {
  const d = new Date(day * DAY_MS);
  const year = d.getUTCFullYear();
  const start = dayNumber(year, 1, 1);
  return (day - start) / (dayNumber(year + 1, 1, 1) - start);
}

/** The n-th (1-based) given weekday of a month; n = -1 for the last one. */
function nthWeekday(year: number, month: number, wd: number, n: number): number {
  if (n > 0) {
    const first = dayNumber(year, month, 1);
    return first + ((wd - weekday(first) + 7) % 7) + 7 * (n - 1);
  }
  const last = dayNumber(year, month + 1, 1) - 1;
  return last - ((weekday(last) - wd + 7) % 7);
}

/** Saturday holidays are observed the Friday before, Sunday ones the Monday after (5 U.S.C. 6103(b)). */
function observed(day: number): number {
  const wd = weekday(day);
  return wd === 6 ? day - 1 : wd === 0 ? day + 1 : day;
}

/**
 * The observed US federal holidays of a year (rules as of 1986, when Martin Luther King Jr. Day
 * began; Juneteenth from 2021): New Year's Day, MLK Day (3rd Monday of January), Washington's
 * Birthday (3rd Monday of February), Memorial Day (last Monday of May), Juneteenth (June 19),
 * Independence Day, Labor Day (1st Monday of September), Columbus Day (2nd Monday of October),
 * Veterans Day (November 11), Thanksgiving (4th Thursday of November), Christmas.
 */
export function usFederalHolidays(year: number): number[] {
  const days = [
    observed(dayNumber(year, 1, 1)),
    nthWeekday(year, 1, 1, 3),
    nthWeekday(year, 2, 1, 3),
    nthWeekday(year, 5, 1, -1),
    observed(dayNumber(year, 7, 4)),
    nthWeekday(year, 9, 1, 1),
    nthWeekday(year, 10, 1, 2),
    observed(dayNumber(year, 11, 11)),
    nthWeekday(year, 11, 4, 4),
    observed(dayNumber(year, 12, 25)),
  ];
  if (year >= 2021) days.push(observed(dayNumber(year, 6, 19)));
  return days.sort((a, b) => a - b);
}

const holidayCache = new Map<number, Set<number>>();

/** Is the day an observed US federal holiday? (New Year's Day of the next year may be observed on December 31.) */
export function isUsFederalHoliday(day: number): boolean {
  const year = new Date(day * DAY_MS).getUTCFullYear();
  let set = holidayCache.get(year);
  if (!set) {
    set = new Set([...usFederalHolidays(year), ...usFederalHolidays(year + 1)]);
    holidayCache.set(year, set);
  }
  return set.has(day);
}
