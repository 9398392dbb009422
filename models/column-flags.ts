import { DEFAULT_POLICIES, SENSITIVE_CATEGORIES, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { makeMissingTest, parseNumericCell, quoteCell } from './cells.ts';
import type { CsvTable } from './csv-table.ts';
import { DEFAULT_MAX_CATEGORIES } from './infer-spec.ts';

/**
 * Columns a study owner should decide about before a spec ships (data minimization, GDPR Art.
 * 5(1)(c)): identifiers and free text teach a model nothing and leak the most, and sensitive
 * categories are forbidden by some jurisdictions' profiles. These are heuristics on names and
 * values: they flag, the owner decides (spec infer leaves ids and free text out unless kept).
 */

export type SensitiveCategory = (typeof SENSITIVE_CATEGORIES)[number];

export interface ColumnFlag {
  column: string;
  kind: 'id' | 'free-text' | 'sensitive';
  /** Why, in words, with an example value where it helps (the owner's own data, shown to them only). */
  reason: string;
  /** For `sensitive`: the category (SENSITIVE_CATEGORIES), set on the feature in the spec. */
  category?: SensitiveCategory;
  /** For `sensitive`: the profiles (of those planned, else every built-in one) that forbid it, as `EU-GDPR v1`. */
  forbiddenUnder?: string[];
}

/** Fewest non-missing cells for "unique per row" to mean anything (3 distinct ages in 3 rows do not). */
export const MIN_ROWS_FOR_ID = 20;
/** Mean length above which a text column is free text rather than a category. */
export const FREE_TEXT_MEAN_LENGTH = 40;

const UUID = /^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$/i;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * Name patterns per sensitive category. Short words match whole name tokens only (`lat` in
 * `home_lat`, not in `relation`); words of 5+ letters also match inside a token (`zipcode`,
 * `religious`). `minors` by age is decided on values (ages under 18), not here.
 */
const SENSITIVE_NAMES: Record<SensitiveCategory, string[]> = {
  religion: ['religion', 'religious', 'faith', 'church', 'denomination', 'mosque', 'synagogue'],
  health: ['health', 'medical', 'diagnosis', 'diagnosed', 'disease', 'illness', 'disability', 'disabled', 'bmi', 'blood', 'medication', 'pregnant', 'pregnancy', 'clinic', 'hiv', 'cancer', 'diabetes', 'therapy', 'prescription', 'mentalhealth'],
  ethnicity: ['ethnicity', 'ethnic', 'race', 'racial'],
  'precise-location': ['zip', 'zipcode', 'postcode', 'postal', 'lat', 'latitude', 'lon', 'lng', 'longitude', 'gps', 'geohash', 'address', 'street', 'coordinates', 'geolocation'],
  minors: ['birth', 'birthdate', 'birthday', 'dob', 'minor', 'minors', 'child', 'children', 'kid', 'kids', 'guardian'],
  biometric: ['biometric', 'fingerprint', 'faceprint', 'retina', 'iris', 'voiceprint', 'face'],
  political: ['political', 'politics', 'vote', 'voter', 'voting', 'tradeunion'],
  'sexual-orientation': ['sexual', 'orientation', 'lgbt', 'lgbtq'],
  'financial-account': ['iban', 'bic', 'swift', 'bank', 'creditcard', 'cardnumber', 'routing', 'ssn', 'accountnumber'],
};

/** Lower-case tokens of a column name: `homeZip_code` -> home, zip, code (and the joined name). */
function nameTokens(name: string): { tokens: string[]; joined: string } {
  const tokens = name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
  return { tokens, joined: tokens.join('') };
}

/** The sensitive category a column name suggests, with the word that matched. */
export function sensitiveCategoryOf(name: string): { category: SensitiveCategory; word: string } | undefined {
  const { tokens, joined } = nameTokens(name);
  for (const category of SENSITIVE_CATEGORIES) {
    for (const word of SENSITIVE_NAMES[category]) {
      if (tokens.includes(word) || (word.length >= 5 && (tokens.some((t) => t.includes(word)) || joined.includes(word)))) return { category, word };
    }
  }
  return undefined;
}

const ID_WORDS = ['id', 'uuid', 'guid', 'key', 'identifier'];

function idByName(name: string): boolean {
  const { tokens } = nameTokens(name);
  return tokens.length > 0 && ID_WORDS.includes(tokens[tokens.length - 1]);
}

/** Why a column looks like an identifier, or undefined. `cells` are its non-missing cells in row order. */
function idReason(name: string, cells: string[]): string | undefined {
  const n = cells.length;
  if (n === 0) return undefined;
  const uuids = cells.filter((c) => UUID.test(c.trim())).length;
  if (uuids >= 0.9 * n) return `uuid-like values (e.g. ${quoteCell(cells[0])})`;
  const emails = cells.filter((c) => EMAIL.test(c.trim())).length;
  if (emails >= 0.5 * n) return `e-mail addresses (e.g. ${quoteCell(cells[emails === n ? 0 : cells.findIndex((c) => EMAIL.test(c.trim()))])}): a direct identifier`;
  const numbers = cells.map(parseNumericCell);
  const integers = numbers.every((v) => Number.isInteger(v));
  if (integers && n >= MIN_ROWS_FOR_ID) {
    let up = true;
    let down = true;
    for (let i = 1; i < n; i++) {
      if (!(numbers[i] > numbers[i - 1])) up = false;
      if (!(numbers[i] < numbers[i - 1])) down = false;
    }
    if (up || down) return `integers ${up ? 'increasing' : 'decreasing'} with the row (${numbers.slice(0, 3).join(', ')}, ...): a row number or sequential id`;
  }
  const distinct = new Set(cells).size;
  if (n >= MIN_ROWS_FOR_ID && distinct === n) {
    const numeric = numbers.every((v) => !Number.isNaN(v));
    // Measurements (floats, sparse integers) are often unique too: only text, dense integers
    // (a shuffled sequence) or an id-like name make uniqueness an identifier.
    if (!numeric) return `unique per row (${n} distinct values in ${n} rows, e.g. ${quoteCell(cells[0])})`;
    if (integers) {
      const span = Math.max(...numbers) - Math.min(...numbers) + 1;
      if (span <= 2 * n || idByName(name)) return `unique integers per row (${n} distinct in ${n} rows${span <= 2 * n ? `, from ${Math.min(...numbers)} to ${Math.max(...numbers)}` : ''})`;
    }
  }
  if (idByName(name) && n >= MIN_ROWS_FOR_ID && distinct >= 0.9 * n) return `named like an id and ${Math.round((100 * distinct) / n)}% of its values are distinct`;
  return undefined;
}

function isText(cells: string[]): boolean {
  return cells.length > 0 && cells.some((c) => Number.isNaN(parseNumericCell(c)));
}

function longTextReason(cells: string[]): string | undefined {
  if (!isText(cells)) return undefined;
  const meanLength = cells.reduce((s, c) => s + c.length, 0) / cells.length;
  return meanLength > FREE_TEXT_MEAN_LENGTH ? `long text (mean ${Math.round(meanLength)} characters, e.g. ${quoteCell(cells[0])})` : undefined;
}

function freeTextReason(cells: string[], maxCategories: number): string | undefined {
  if (!isText(cells)) return undefined;
  const distinct = new Set(cells).size;
  if (distinct > maxCategories) return `${distinct} distinct text values (more than ${maxCategories}): free text or an identifier, useless as a category`;
  return undefined;
}

/** Youngest age in a numeric column, if the column is named like an age. */
function minorsByAge(name: string, cells: string[]): string | undefined {
  const { tokens } = nameTokens(name);
  if (!tokens.includes('age')) return undefined;
  const ages = cells.map(parseNumericCell).filter((v) => !Number.isNaN(v));
  if (ages.length === 0) return undefined;
  const youngest = Math.min(...ages);
  return youngest < 18 ? `ages under 18 (youngest ${youngest}): data of minors` : undefined;
}

/**
 * Flags the columns of `table` (but the target and `skip`) that look like identifiers, free text
 * or a sensitive category. A sensitive column says which of `jurisdictions` (default: every
 * built-in profile) forbid its category.
 */
export function flagColumns(
  table: CsvTable,
  options: { target: string; skip?: string[]; missingValues?: string[]; jurisdictions?: PolicyProfile[]; maxCategories?: number },
): ColumnFlag[] {
  const isMissing = makeMissingTest(options.missingValues ?? ['NA']);
  const profiles = options.jurisdictions && options.jurisdictions.length > 0 ? options.jurisdictions : DEFAULT_POLICIES;
  const skip = new Set([options.target, ...(options.skip ?? [])]);
  const out: ColumnFlag[] = [];
  table.header.forEach((column, c) => {
    if (skip.has(column)) return;
    const cells = table.rows.map((row) => row[c]).filter((cell) => !isMissing(cell));
    // Long text first: sentences are unique per row too, but they are free text, not ids.
    const long = longTextReason(cells);
    const id = long ? undefined : idReason(column, cells);
    const text = long ?? (id ? undefined : freeTextReason(cells, options.maxCategories ?? DEFAULT_MAX_CATEGORIES));
    if (id) out.push({ column, kind: 'id', reason: id });
    if (text) out.push({ column, kind: 'free-text', reason: text });
    const byName = sensitiveCategoryOf(column);
    const byAge = byName ? undefined : minorsByAge(column, cells);
    if (byName || byAge) {
      const category: SensitiveCategory = byName ? byName.category : 'minors';
      const forbiddenUnder = profiles.filter((p) => p.forbiddenFeatureCategories.includes(category)).map((p) => `${p.jurisdiction} v${p.version}`);
      const why = byName ? `named like ${category} data ("${byName.word}")` : byAge!;
      const verdict = forbiddenUnder.length > 0 ? `forbidden under ${forbiddenUnder.join(', ')}` : `allowed under ${profiles.map((p) => `${p.jurisdiction} v${p.version}`).join(', ')}`;
      out.push({ column, kind: 'sensitive', category, forbiddenUnder, reason: `sensitive category "${category}": ${why}; ${verdict}` });
    }
  });
  return out;
}
