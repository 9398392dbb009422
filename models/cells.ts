/**
 * Cell-level rules shared by spec inference and encoding, so that both agree on what a number
 * and a missing value are. Allocation-free on the common path (they run once per cell).
 */

const WHITESPACE_ONLY = /^\s*$/;
const HAS_DIGIT = /\d/;

/** The default cells read as missing besides blank ones (R's `write.csv` writes `NA`). */
export const DEFAULT_MISSING_VALUES: readonly string[] = ['NA'];

/**
 * A cell is missing when it is empty, whitespace only, or, once its surrounding blanks are
 * trimmed, exactly one of `missingValues` (case-sensitive: `NA` and ` NA ` are missing, `na` is
 * not unless declared). Trimming costs nothing on the common path (only cells that start or end
 * with a blank are trimmed).
 */
export function makeMissingTest(missingValues: readonly string[]): (cell: string) => boolean {
  const set = new Set(missingValues.map((v) => v.trim()));
  return (cell: string) => {
    if (cell.length === 0) return true;
    if (set.has(cell)) return true;
    // Blank-edged cells: only worth a trim (and a regex) when the cell starts or ends with a blank.
    if (cell.charCodeAt(0) > 32 && cell.charCodeAt(cell.length - 1) > 32) return false;
    return WHITESPACE_ONLY.test(cell) || set.has(cell.trim());
  };
}

/**
 * Spellings of "no value" that tools write (R `NA`, Excel `#N/A`, SQL `NULL`, pandas `NaN`, SAS
 * `.`, a dash): compared trimmed and case-insensitively. Spec inference reads one of these as
 * missing only in a column that is otherwise numeric, where it cannot be a value; it then
 * declares it in the spec's missingValues so every node reads it the same way. In a text column
 * such a cell stays a category unless the study declares it (`--missing-values`).
 */
export const COMMON_MISSING_MARKERS: readonly string[] = ['na', 'n/a', '#n/a', 'null', 'none', 'nan', '-', '--', '?', '.'];
const COMMON_MARKER_SET = new Set(COMMON_MISSING_MARKERS);

/** Is the cell (trimmed, any case) one of COMMON_MISSING_MARKERS? */
export function isCommonMissingMarker(cell: string): boolean {
  return cell.length <= 12 && COMMON_MARKER_SET.has(cell.trim().toLowerCase());
}

/**
 * Where a cell is, for an error message: `line 7, column "age" (column 3)`. The column number
 * counts from 1, as spreadsheets do, so a header typo or a shifted row is easy to find.
 */
export function cellPlace(line: number, columnName: string, columnIndex: number): string {
  return `line ${line}, column ${JSON.stringify(columnName)} (column ${columnIndex + 1})`;
}

/**
 * The number in a cell, or NaN when the cell is not a finite number. Syntax is JavaScript's
 * `Number()` (surrounding blanks allowed, `1e3` and `.5` are numbers) minus blank cells (which
 * `Number` reads as 0) and minus `Infinity`/`NaN`. `1,234` is not a number.
 */
export function parseNumericCell(cell: string): number {
  const v = Number(cell);
  if (!Number.isFinite(v)) return Number.NaN;
  if (v === 0 && !HAS_DIGIT.test(cell)) return Number.NaN; // '' and '  ' are 0 for Number()
  return v;
}

/** A cell quoted for an error message, shortened when long. */
export function quoteCell(cell: string, max = 40): string {
  return JSON.stringify(cell.length > max ? `${cell.slice(0, max)}...` : cell);
}
