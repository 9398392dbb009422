/**
 * Errors of the data layer. Both carry enough context for a node operator to fix the input
 * without reading a stack trace: the line of the CSV file, the column, the field of a spec file.
 */

/**
 * What is wrong, set where the error is thrown. A node reports this kind (with line and column)
 * to the coordinator instead of its message, which may quote a cell of the file.
 */
export type DataErrorKind =
  | 'csv-syntax'
  | 'empty-file'
  | 'duplicate-column'
  | 'field-count'
  | 'missing-column'
  | 'non-numeric'
  | 'missing-label'
  | 'consent-column-missing'
  | 'no-usable-rows'
  /** A Parquet file or PostgreSQL source that cannot be opened or read (models/table-sources.ts). */
  | 'source-unreadable'
  /** --table / --query given with the wrong kind of --data, or a bad --table name. */
  | 'source-options';

/** A problem with a row of a data file (CSV). `line` is 1-based and counts the header as line 1. */
export class DataError extends Error {
  readonly kind: DataErrorKind;
  readonly line: number;
  readonly column?: string;

  constructor(kind: DataErrorKind, message: string, line: number, column?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DataError';
    this.kind = kind;
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
