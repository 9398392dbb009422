import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse } from 'csv-parse/sync';
import { DataError } from './errors.ts';

/**
 * A CSV file held as strings: the header and the data rows (every row has exactly
 * `header.length` fields). `lineOf(i)` is the 1-based line of the file where data row `i`
 * starts (the header is line 1; blank lines and line breaks inside quoted values count), for
 * error messages.
 */
export interface CsvTable {
  header: string[];
  rows: string[][];
  lineOf: (rowIndex: number) => number;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Reads a CSV file (or text) with a header row: RFC 4180 quoting (quoted commas, quotes and line
 * breaks), LF or CRLF line endings, optional UTF-8 BOM, blank lines skipped. Values are kept as
 * written (not trimmed, not typed).
 *
 * Throws DataError (with the line number) for: an empty input, duplicate column names, a row with
 * more or fewer fields than the header, and CSV syntax errors (e.g. an unclosed quote).
 */
export function readCsvTable(source: { path: string } | { text: string }): CsvTable {
  const bytes = 'path' in source ? readFileSync(source.path) : Buffer.from(source.text, 'utf8');
  const where = 'path' in source ? `${source.path}: ` : '';

  // Byte offset just past each record (its line break included), to locate records in the input.
  const recordEnds: number[] = [];
  let records: string[][];
  try {
    records = parse(bytes, {
      bom: true,
      skip_empty_lines: true,
      relax_column_count: true, // we check field counts ourselves, to report them our way
      on_record: (record: string[], context) => {
        recordEnds.push(context.bytes);
        return record;
      },
    });
  } catch (err) {
    // csv-parse counts lines its own way (a CRLF inside quotes counts twice); we know where the
    // failing record starts: right after the last one it accepted.
    const lines = startLines(bytes, recordEnds, 1);
    const line = lines[lines.length - 1];
    const reason = err instanceof Error ? err.message : String(err);
    throw new DataError('csv-syntax', `${where}line ${line}: CSV syntax error in the record starting on this line: ${reason}`, line, undefined, {
      cause: err,
    });
  }

  if (records.length === 0) throw new DataError('empty-file', `${where}line 1: empty CSV, no header row`, 1);
  const lines = startLines(bytes, recordEnds, 0);
  const header = records[0];
  const seen = new Map<string, number>();
  for (let c = 0; c < header.length; c++) {
    const previous = seen.get(header[c]);
    if (previous !== undefined) {
      throw new DataError(
        'duplicate-column',
        `${where}line 1: duplicate column name ${JSON.stringify(header[c])} (columns ${previous + 1} and ${c + 1})`,
        1,
        header[c],
      );
    }
    seen.set(header[c], c);
  }

  const width = header.length;
  for (let r = 1; r < records.length; r++) {
    const found = records[r].length;
    if (found !== width) {
      const line = lines[r];
      throw new DataError(
        'field-count',
        `${where}line ${line}: expected ${width} fields (as in the header) but found ${found}` +
          (found > width ? ' (an unquoted comma inside a value?)' : ''),
        line,
        // Too few fields: the first column left without a value (a header name, never a cell).
        found < width ? header[found] : undefined,
      );
    }
  }

  const rows = records.slice(1);
  const rowLines = lines.subarray(1);
  return {
    header,
    rows,
    lineOf: (rowIndex: number) => {
      if (!Number.isInteger(rowIndex) || rowIndex < 0 || rowIndex >= rows.length) {
        throw new RangeError(`row ${rowIndex} out of range (the table has ${rows.length} rows)`);
      }
      return rowLines[rowIndex];
    },
  };
}

/**
 * Start line of each record whose predecessor ended at `recordEnds[i - 1]` (and of the first one),
 * plus `extra` more records after the last end (for a record that failed to parse). One pass.
 */
function startLines(bytes: Uint8Array, recordEnds: readonly number[], extra: number): Int32Array {
  const count = recordEnds.length + extra;
  const out = new Int32Array(count);
  let pos = 0;
  let line = 1;
  for (let r = 0; r < count; r++) {
    const from = r === 0 ? 0 : recordEnds[r - 1];
    // Count the line breaks up to the end of the previous record (breaks inside its quoted values too)...
    for (; pos < from; pos++) {
      const b = bytes[pos];
      if (b === LF || (b === CR && bytes[pos + 1] !== LF)) line++;
    }
    // ...and the blank lines skipped before this record.
    for (; pos < bytes.length && (bytes[pos] === LF || bytes[pos] === CR); pos++) {
      if (bytes[pos] === LF || bytes[pos + 1] !== LF) line++;
    }
    out[r] = line;
  }
  return out;
}

const NEEDS_QUOTES = /[",\r\n]|^\uFEFF/;

function formatField(value: string): string {
  return NEEDS_QUOTES.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

function formatRecord(fields: readonly string[]): string {
  // A lone empty field would be a blank line, which readers skip: quote it.
  if (fields.length === 1 && fields[0] === '') return '""';
  return fields.map(formatField).join(',');
}

/** CSV text of a table: LF line endings, a final line break, fields quoted only when needed. */
export function formatCsv(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const parts: string[] = [formatRecord(header)];
  for (let r = 0; r < rows.length; r++) {
    if (rows[r].length !== header.length) {
      throw new Error(`formatCsv: row ${r} has ${rows[r].length} fields, the header ${header.length}`);
    }
    parts.push(formatRecord(rows[r]));
  }
  return `${parts.join('\n')}\n`;
}

/** Writes a table that `readCsvTable` reads back identically (creates the parent directory). */
export function writeCsvTable(path: string, header: readonly string[], rows: readonly (readonly string[])[]): void {
  const text = formatCsv(header, rows);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text, 'utf8');
}
