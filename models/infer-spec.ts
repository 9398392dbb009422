import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { z } from 'zod';
import { FeatureSpec, type BinaryTarget, type Feature, type NumericTarget } from '../protocols/feature-spec.ts';
import { cellPlace, DEFAULT_MISSING_VALUES, isCommonMissingMarker, makeMissingTest, parseNumericCell, quoteCell } from './cells.ts';
import type { CsvTable } from './csv-table.ts';
import { DataError, SpecError } from './errors.ts';

export interface InferOptions {
  /** The label column. */
  target: string;
  /**
   * What the target is (default `binary`): `regression` makes it a numeric target with
   * center = mean and scale = population standard deviation of its non-missing cells.
   */
  task?: 'binary' | 'regression';
  /** The label value of the positive class; default `yes`, `1` or `true` (any case) when present. */
  positive?: string;
  /** Columns that are not features (IDs, free text, the partition column if it must not be learned). */
  exclude?: string[];
  /** A categorical column with more distinct values than this is refused (default 100). */
  maxCategories?: number;
  /** Cells read as missing besides blank ones (default `['NA']`); stored in the spec. */
  missingValues?: string[];
  /**
   * Read common missing markers (COMMON_MISSING_MARKERS: `n/a`, `null`, `-`...) as missing in a
   * column that is otherwise numeric, and add them to the spec's missingValues (default true).
   */
  detectMissingMarkers?: boolean;
}

/** A common missing marker found in an otherwise numeric column, now declared in missingValues. */
export interface MissingMarker {
  column: string;
  /** The marker as written, trimmed (e.g. `n/a`). */
  value: string;
  count: number;
  firstLine: number;
}

export const DEFAULT_MAX_CATEGORIES = 100;

const POSITIVE_DEFAULTS = ['yes', '1', 'true'];

/** Code-unit order: the same on every machine, unlike localeCompare. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Infers a feature spec from a table (run it once, on data the study owner may look at, and ship
 * the result to every node: nodes never infer their own).
 *
 * - Every column but the target and `exclude` becomes a feature, in header order.
 * - Numeric: a column whose every non-missing cell is a finite number. Standardized with the
 *   mean and population standard deviation of those cells (std 0, a constant column, becomes 1).
 *   Common missing markers (`n/a`, `null`, `-`... COMMON_MISSING_MARKERS) in such a column are
 *   its missing marker: read as missing and added to missingValues (detectMissingMarkers).
 * - A text cell in a column whose cells are otherwise at least 95% numbers
 *   (NUMERIC_SHARE_FOR_STRAY_TEXT), or in a mixed column with too many values to be categorical,
 *   is a DataError naming the line, the column (name and number) and the cell: never a silent
 *   change of type. Decimal commas (`1,5`) are refused the same way.
 *   `fill` (the value of missing cells) is the mean, so a missing cell encodes as 0 after
 *   standardization: "average", no pull in either direction.
 * - Categorical: any other column; its vocabulary is the distinct non-missing values, sorted by
 *   code unit. More than `maxCategories` distinct values is refused (an ID-like column teaches
 *   the model nothing and blows up the input width): exclude the column.
 * - Target: exactly 2 distinct non-missing values. The positive one is `options.positive`, or
 *   else whichever of `yes`, `1`, `true` (case-insensitive) is present.
 * - Target with `task: 'regression'`: every non-missing cell a finite number; center = mean,
 *   scale = population standard deviation (1 when the column is constant).
 *
 * Throws SpecError naming the column, or DataError naming the cell.
 */
export function inferFeatureSpec(table: CsvTable, options: InferOptions & { task: 'regression' }): FeatureSpec & { target: NumericTarget };
export function inferFeatureSpec(table: CsvTable, options: InferOptions & { task?: 'binary' }): FeatureSpec & { target: BinaryTarget };
export function inferFeatureSpec(table: CsvTable, options: InferOptions): FeatureSpec;
export function inferFeatureSpec(table: CsvTable, options: InferOptions): FeatureSpec {
  return inferFeatureSpecReport(table, options).spec;
}

/**
 * inferFeatureSpec, with the missing markers it found in numeric columns (to tell the study
 * owner). When it finds any, it infers again with them declared, so that every column (text
 * ones included) reads them as nodes will: missing.
 */
export function inferFeatureSpecReport(table: CsvTable, options: InferOptions): { spec: FeatureSpec; missingMarkers: MissingMarker[] } {
  const missingMarkers: MissingMarker[] = [];
  const first = inferOnce(table, options, missingMarkers);
  const declared = new Set(first.missingValues.map((v) => v.trim()));
  const added = [...new Set(missingMarkers.map((m) => m.value))].filter((v) => !declared.has(v));
  if (added.length === 0) return { spec: first, missingMarkers };
  const spec = inferOnce(table, { ...options, missingValues: [...first.missingValues, ...added], detectMissingMarkers: false }, []);
  return { spec, missingMarkers };
}

function inferOnce(table: CsvTable, options: InferOptions, markers: MissingMarker[]): FeatureSpec {
  const { header } = table;
  const maxCategories = options.maxCategories ?? DEFAULT_MAX_CATEGORIES;
  const missingValues = options.missingValues ?? [...DEFAULT_MISSING_VALUES];
  const isMissing = makeMissingTest(missingValues);
  const exclude = new Set(options.exclude ?? []);
  const columnList = `columns: ${header.map((h) => JSON.stringify(h)).join(', ')}`;

  const targetIndex = header.indexOf(options.target);
  if (targetIndex < 0) {
    throw new SpecError(`target column ${JSON.stringify(options.target)} is not in the table (${columnList})`, { column: options.target });
  }
  for (const name of exclude) {
    if (!header.includes(name)) throw new SpecError(`excluded column ${JSON.stringify(name)} is not in the table (${columnList})`, { column: name });
  }
  if (exclude.has(options.target)) throw new SpecError(`the target column ${JSON.stringify(options.target)} cannot be excluded`, { column: options.target });

  const target = options.task === 'regression' ? inferNumericTarget(table, targetIndex, options.target, isMissing) : inferTarget(table, targetIndex, options, isMissing);

  const features: Feature[] = [];
  for (let c = 0; c < header.length; c++) {
    const name = header[c];
    if (c === targetIndex || exclude.has(name)) continue;
    if (name === '') {
      throw new SpecError(
        `column ${c + 1} has no name (an R row-names column? write with row.names = FALSE); exclude it with exclude: [""]`,
        { column: name },
      );
    }
    features.push(inferFeature(table, c, name, maxCategories, isMissing, options.detectMissingMarkers ?? true, markers));
  }
  if (features.length === 0) throw new SpecError('no feature column left once the target and excluded columns are set aside');

  const spec = FeatureSpec.safeParse({ version: 1, target, features, missingValues });
  if (!spec.success) throw new SpecError(`inferred spec is invalid: ${describeZodError(spec.error)}`);
  return spec.data;
}

function inferNumericTarget(table: CsvTable, column: number, name: string, isMissing: (cell: string) => boolean): NumericTarget {
  let count = 0;
  let sum = 0;
  const values: number[] = [];
  for (let r = 0; r < table.rows.length; r++) {
    const cell = table.rows[r][column];
    if (isMissing(cell)) continue;
    const v = parseNumericCell(cell);
    if (Number.isNaN(v)) {
      const line = table.lineOf(r);
      throw new DataError('non-numeric', `${cellPlace(line, name, column)}: target column must be numeric for a regression study but holds ${quoteCell(cell)}`, line, name);
    }
    values.push(v);
    count++;
    sum += v;
  }
  if (count === 0) throw new SpecError(`target column ${JSON.stringify(name)} has no values (every cell is missing)`, { column: name });
  const center = sum / count;
  let squares = 0;
  for (const v of values) squares += (v - center) ** 2;
  const std = Math.sqrt(squares / count);
  return { column: name, kind: 'numeric', center, scale: std > 0 && Number.isFinite(std) ? std : 1 };
}

function inferTarget(table: CsvTable, column: number, options: InferOptions, isMissing: (cell: string) => boolean): BinaryTarget {
  const name = options.target;
  const counts = new Map<string, number>();
  for (const row of table.rows) {
    const cell = row[column];
    if (!isMissing(cell)) counts.set(cell, (counts.get(cell) ?? 0) + 1);
  }
  const values = [...counts.keys()].sort(compareStrings);
  const seen = values.length <= 10
    ? values.map((v) => `${quoteCell(v)} (${counts.get(v)})`).join(', ')
    : `${values.slice(0, 10).map((v) => quoteCell(v)).join(', ')} and ${values.length - 10} more`;
  if (values.length !== 2) {
    throw new SpecError(
      `target column ${JSON.stringify(name)} must have exactly 2 distinct values (a binary label), found ${values.length}` +
        (values.length > 0 ? `: ${seen}` : ''),
      { column: name },
    );
  }
  if (options.positive !== undefined) {
    if (!counts.has(options.positive)) {
      throw new SpecError(`positive label ${quoteCell(options.positive)} does not occur in target column ${JSON.stringify(name)}; values seen: ${seen}`, {
        column: name,
      });
    }
    return { column: name, positive: options.positive };
  }
  for (const candidate of POSITIVE_DEFAULTS) {
    const found = values.find((v) => v.toLowerCase() === candidate);
    if (found !== undefined) return { column: name, positive: found };
  }
  throw new SpecError(
    `cannot tell which value of target column ${JSON.stringify(name)} is the positive class (no yes/1/true); values seen: ${seen}. Pass positive explicitly`,
    { column: name },
  );
}

/** What one pass over a feature column found. */
interface ColumnScan {
  numbers: Float64Array;
  numeric: number;
  sum: number;
  /** Non-missing cells that are neither numbers nor common missing markers. */
  text: number;
  firstTextRow: number;
  /** Text cells written with a decimal comma (`1,5`): a semicolon file from a comma-decimal locale. */
  decimalCommas: number;
  /** Common missing markers (COMMON_MISSING_MARKERS), by trimmed spelling: count and first row. */
  markers: Map<string, { count: number; firstRow: number }>;
  /** Distinct non-missing cells, collected up to maxCategories + 1. */
  vocabulary: Set<string>;
}

const DECIMAL_COMMA = /^\s*[+-]?\d+,\d+\s*$/;

function scanColumn(rows: string[][], column: number, maxCategories: number, isMissing: (cell: string) => boolean, detectMarkers: boolean): ColumnScan {
  const scan: ColumnScan = { numbers: new Float64Array(rows.length), numeric: 0, sum: 0, text: 0, firstTextRow: -1, decimalCommas: 0, markers: new Map(), vocabulary: new Set() };
  for (let r = 0; r < rows.length; r++) {
    const cell = rows[r][column];
    if (isMissing(cell)) continue;
    if (scan.vocabulary.size <= maxCategories) scan.vocabulary.add(cell);
    const v = parseNumericCell(cell);
    if (!Number.isNaN(v)) {
      scan.numbers[scan.numeric++] = v;
      scan.sum += v;
    } else if (detectMarkers && isCommonMissingMarker(cell)) {
      const key = cell.trim();
      const seen = scan.markers.get(key);
      if (seen) seen.count++;
      else scan.markers.set(key, { count: 1, firstRow: r });
    } else {
      if (scan.text++ === 0) scan.firstTextRow = r;
      if (DECIMAL_COMMA.test(cell)) scan.decimalCommas++;
    }
  }
  return scan;
}

/**
 * Share of a column's number-or-text cells that must be numbers for a text cell in it to be an
 * error rather than a sign that the column is categorical. At 95%, one stray word in 20 cells or
 * fewer is refused (a typo, a unit, `twelve`), while coded categories mixing numbers and words
 * (`0`, `1`, `2`, `3+`: each word at least 5% of the rows in practice) stay categorical.
 */
export const NUMERIC_SHARE_FOR_STRAY_TEXT = 0.95;

function inferFeature(table: CsvTable, column: number, name: string, maxCategories: number, isMissing: (cell: string) => boolean, detectMarkers: boolean, found: MissingMarker[]): Feature {
  const scan = scanColumn(table.rows, column, maxCategories, isMissing, detectMarkers);
  const textCell = () => table.rows[scan.firstTextRow][column];
  const place = () => cellPlace(table.lineOf(scan.firstTextRow), name, column);
  const more = scan.text > 1 ? ` (and ${scan.text - 1} more non-numeric cell${scan.text > 2 ? 's' : ''})` : '';

  if (scan.text > 0 && scan.decimalCommas === scan.text) {
    throw new DataError('non-numeric', `${place()}: ${quoteCell(textCell())} is written with a decimal comma${more}; numbers must use a decimal point (convert the file, e.g. export it with a "." decimal separator)`, table.lineOf(scan.firstTextRow), name);
  }
  if (scan.numeric > 0 && scan.text > 0) {
    const share = scan.numeric / (scan.numeric + scan.text);
    const pct = `${Math.floor(share * 1000) / 10}%`;
    if (share >= NUMERIC_SHARE_FOR_STRAY_TEXT || scan.vocabulary.size > maxCategories) {
      throw new DataError(
        'non-numeric',
        `${place()}: ${quoteCell(textCell())} is not a number, in a column where ${pct} of the cells are (${scan.numeric} of ${scan.numeric + scan.text})${more}. ` +
          `Fix the cell, declare it missing (missingValues / --missing-values ${JSON.stringify(textCell().trim())}), or exclude the column`,
        table.lineOf(scan.firstTextRow),
        name,
      );
    }
  }
  if (scan.numeric > 0 && scan.text === 0) {
    // Common markers in an otherwise numeric column cannot be values: they are its missing marker.
    for (const [value, { count, firstRow }] of scan.markers) found.push({ column: name, value, count, firstLine: table.lineOf(firstRow) });
    const mean = scan.sum / scan.numeric;
    let squares = 0;
    for (let i = 0; i < scan.numeric; i++) squares += (scan.numbers[i] - mean) ** 2;
    const std = Math.sqrt(squares / scan.numeric);
    return { name, kind: 'numeric', mean, std: std > 0 && Number.isFinite(std) ? std : 1, fill: mean };
  }
  if (scan.vocabulary.size === 0) {
    throw new SpecError(`column ${JSON.stringify(name)} has no values (every cell is missing); exclude it`, { column: name });
  }
  if (scan.vocabulary.size > maxCategories) {
    throw new SpecError(
      `column ${JSON.stringify(name)} has more than ${maxCategories} distinct values: an ID or free-text column is useless to ` +
        `the model; exclude it (exclude: [${JSON.stringify(name)}]) or raise maxCategories`,
      { column: name },
    );
  }
  return { name, kind: 'categorical', categories: [...scan.vocabulary].sort(compareStrings) };
}

/** `features[3].std: Too small: expected number to be >0; target: ...`, one entry per zod issue. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${formatPath(issue.path)}: ${issue.message}`)
    .join('; ');
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/** Reads and validates a feature spec JSON file. Errors name the file and the offending field. */
export function readFeatureSpecFile(path: string): FeatureSpec {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new SpecError(`cannot read feature spec ${path}: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SpecError(`feature spec ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = FeatureSpec.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new SpecError(`feature spec ${path} is invalid: ${describeZodError(parsed.error)}`, {
      field: first === undefined ? undefined : formatPath(first.path),
      cause: parsed.error,
    });
  }
  return parsed.data;
}

/** Writes a feature spec as indented JSON (validated first; creates the parent directory). */
export function writeFeatureSpecFile(path: string, spec: FeatureSpec): void {
  const parsed = FeatureSpec.safeParse(spec);
  if (!parsed.success) throw new SpecError(`refusing to write an invalid feature spec: ${describeZodError(parsed.error)}`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(parsed.data, null, 2)}\n`, 'utf8');
}
