/**
 * Cell-level rules shared by spec inference and encoding, so that both agree on what a number
 * and a missing value are. Allocation-free on the common path (they run once per cell).
 */

const WHITESPACE_ONLY = /^\s*$/;
const HAS_DIGIT = /\d/;

/** The default cells read as missing besides blank ones (R's `write.csv` writes `NA`). */
export const DEFAULT_MISSING_VALUES: readonly string[] = ['NA'];

/**
 * A cell is missing when it is empty, whitespace only, or exactly one of `missingValues`
 * (case-sensitive: `NA` is missing, `na` is not).
 */
export function makeMissingTest(missingValues: readonly string[]): (cell: string) => boolean {
  const set = new Set(missingValues);
  return (cell: string) => {
    if (cell.length === 0) return true;
    if (set.has(cell)) return true;
    // Whitespace-only cells: only worth a regex when the cell starts with a blank.
    return cell.charCodeAt(0) <= 32 && WHITESPACE_ONLY.test(cell);
  };
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
