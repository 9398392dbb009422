/**
 * Errors of the data layer. Both carry enough context for a node operator to fix the input
 * without reading a stack trace: the line of the CSV file, the column, the field of a spec file.
 */

/** A problem with a row of a data file (CSV). `line` is 1-based and counts the header as line 1. */
export class DataError extends Error {
  readonly line: number;
  readonly column?: string;

  constructor(message: string, line: number, column?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DataError';
    this.line = line;
    if (column !== undefined) this.column = column;
  }
}

/**
 * A feature spec that cannot be inferred from a table (target with 3 values, a column with
 * 4,000 distinct values...) or a spec file that does not validate. `field` is the path of the
 * offending field in a spec file (e.g. `features[3].std`), `column` the data column concerned.
 */
export class SpecError extends Error {
  readonly column?: string;
  readonly field?: string;

  constructor(message: string, details: { column?: string; field?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'SpecError';
    if (details.column !== undefined) this.column = details.column;
    if (details.field !== undefined) this.field = details.field;
  }
}
