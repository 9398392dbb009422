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
  /** The field delimiter the file was read with (given, or detected); absent on derived tables. */
  delimiter?: CsvDelimiter;
}

/** The field delimiters a data file may use. */
export const CSV_DELIMITERS = [',', ';', '\t', '|'] as const;
export type CsvDelimiter = (typeof CSV_DELIMITERS)[number];

const DELIMITER_WORDS: Record<CsvDelimiter, string> = { ',': 'comma', ';': 'semicolon', '\t': 'tab', '|': 'pipe' };

/** `comma`, `semicolon`, `tab`, `pipe`: the delimiter's name in messages. */
export function delimiterName(delimiter: CsvDelimiter): string {
  return DELIMITER_WORDS[delimiter];
}

/**
 * A `--delimiter` value: the character itself (`,` `;` `|`, a tab or `\t`) or its name (`comma`,
 * `semicolon`, `tab`, `pipe`). Throws a RangeError naming the accepted values otherwise.
 */
export function parseDelimiter(raw: string): CsvDelimiter {
  const value = raw === '\\t' ? '\t' : raw;
  if ((CSV_DELIMITERS as readonly string[]).includes(value)) return value as CsvDelimiter;
  const named = (Object.keys(DELIMITER_WORDS) as CsvDelimiter[]).find((d) => DELIMITER_WORDS[d] === raw.trim().toLowerCase());
  if (named !== undefined) return named;
  throw new RangeError(`must be one of , ; | tab (or comma, semicolon, tab, pipe), got ${JSON.stringify(raw)}`);
}

/** Lines looked at to detect the delimiter: the header and the first data lines. */
const DETECTION_LINES = 20;
const DETECTION_BYTES = 65536;

/**
 * The delimiter of a CSV text, from its header and first lines: for each candidate, the number of
 * times it occurs outside quotes on each line. A candidate wins when it occurs in the header and
 * on every sampled line as often as in the header (a table has as many fields on each row); among
 * those, the one that makes the most fields, ties going to the comma, then semicolon, tab, pipe.
 * When no candidate is consistent, the one most frequent in the header (a ragged file then fails
 * with a field-count error that names the delimiter); a header without any is one column: comma.
 */
export function detectDelimiter(text: string, complete = true): CsvDelimiter {
  const lines = sampleLines(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, DETECTION_LINES, complete);
  if (lines.length === 0) return ',';
  const counts = CSV_DELIMITERS.map((d) => lines.map((line) => countOutsideQuotes(line, d)));
  let best: CsvDelimiter | undefined;
  let bestFields = 0;
  CSV_DELIMITERS.forEach((d, i) => {
    const [head, ...rest] = counts[i];
    if (head > 0 && rest.every((n) => n === head) && head > bestFields) {
      best = d;
      bestFields = head;
    }
  });
  if (best !== undefined) return best;
  let most = 0;
  CSV_DELIMITERS.forEach((d, i) => {
    if (counts[i][0] > most) {
      best = d;
      most = counts[i][0];
    }
  });
  return best ?? ',';
}

/** The first `max` non-blank lines, a quoted line break kept inside its line; `complete`: text is the whole file. */
function sampleLines(text: string, max: number, complete: boolean): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length && out.length < max; i++) {
    const ch = text[i];
    if (ch === '"') quoted = !quoted;
    else if (!quoted && (ch === '\n' || ch === '\r')) {
      if (i > start) out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  // The last sampled line counts only when the text ends there (a cut line would miscount).
  if (complete && out.length < max && start < text.length && !quoted) out.push(text.slice(start));
  return out.filter((line) => line.trim() !== '');
}

function countOutsideQuotes(line: string, delimiter: string): number {
  let n = 0;
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && ch === delimiter) n++;
  }
  return n;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Reads a CSV file (or text) with a header row: RFC 4180 quoting (quoted delimiters, quotes and
 * line breaks), LF or CRLF line endings, optional UTF-8 BOM, blank lines skipped. The delimiter is
 * `options.delimiter`, else detected from the header and first lines (detectDelimiter: comma,
 * semicolon, tab or pipe). Values are kept as written (not trimmed, not typed).
 *
 * Throws DataError (with the line number) for: an empty input, duplicate column names, a row with
 * more or fewer fields than the header, and CSV syntax errors (e.g. an unclosed quote).
 */
export function readCsvTable(source: { path: string } | { text: string }, options: { delimiter?: CsvDelimiter } = {}): CsvTable {
  const bytes = 'path' in source ? readFileSync(source.path) : Buffer.from(source.text, 'utf8');
  const where = 'path' in source ? `${source.path}: ` : '';
  // Detection reads the first 64 KiB only: 20 lines of any sane table fit.
  const delimiter = options.delimiter ?? detectDelimiter(bytes.subarray(0, DETECTION_BYTES).toString('utf8'), bytes.length <= DETECTION_BYTES);

  // Byte offset just past each record (its line break included), to locate records in the input.
  const recordEnds: number[] = [];
  let records: string[][];
  try {
    records = parse(bytes, {
      bom: true,
      delimiter,
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
        `${where}line ${line}: expected ${width} fields (as in the header, ${delimiterName(delimiter)}-separated) but found ${found}` +
          (found > width ? ` (an unquoted ${delimiterName(delimiter)} inside a value?)` : '') +
          (options.delimiter === undefined ? '; if the file uses another delimiter, give it with --delimiter' : ''),
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
    delimiter,
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

// Every delimiter readCsvTable may detect is quoted too, so a file written here reads back as
// comma-separated whatever its values hold.
const NEEDS_QUOTES = /[",;|\t\r\n]|^\uFEFF/;

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
