import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { thrown } from '../helpers/thrown.ts';
import { formatCsv, readCsvTable, writeCsvTable } from '../../models/csv-table.ts';
import { DataError } from '../../models/errors.ts';

const dataError = (run: () => unknown) => thrown(DataError, run);

describe('readCsvTable', () => {
  it('reads quoted values, CRLF line endings and a BOM', () => {
    const text = '\uFEFF"name","note",n\r\n"a, b","say ""hi""",1\r\nc,"two\r\nlines",2\r\n';
    const table = readCsvTable({ text });
    expect(table.header).toEqual(['name', 'note', 'n']);
    expect(table.rows).toEqual([
      ['a, b', 'say "hi"', '1'],
      ['c', 'two\r\nlines', '2'],
    ]);
    expect(table.lineOf(0)).toBe(2);
    expect(table.lineOf(1)).toBe(3);
  });

  it('reads the shipped data set', () => {
    const table = readCsvTable({ path: 'data/mlc_churn.csv' });
    expect(table.header).toHaveLength(20);
    expect(table.header[0]).toBe('state'); // BOM-free and unquoted
    expect(table.rows).toHaveLength(5000);
    expect(table.rows[0].slice(0, 3)).toEqual(['KS', '128', 'area_code_415']);
    expect(table.lineOf(4999)).toBe(5001);
  });

  it('reports a row with too few fields with its line number', () => {
    const err = dataError(() => readCsvTable({ text: 'a,b,c\n1,2,3\n4,5\n' }));
    expect(err.line).toBe(3);
    expect(err.kind).toBe('field-count');
    expect(err.column).toBe('c'); // the first column left without a value
    expect(err.message).toMatch(/line 3: expected 3 fields .* found 2/);
  });

  it('reports a row with too many fields, counting lines inside quoted values and blank lines', () => {
    // line 1 header, 2-3 a quoted two-line value (CRLF inside quotes), 4 blank, 5 ok, 6 bad
    const text = 'a,b\r\n1,"x\r\ny"\r\n\r\n2,3\r\n4,5,6\r\n';
    const err = dataError(() => readCsvTable({ text }));
    expect(err.line).toBe(6);
    expect(err.kind).toBe('field-count');
    expect(err.column).toBeUndefined();
    expect(err.message).toMatch(/line 6: expected 2 fields .* found 3/);
  });

  it('names the file in errors read from a path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-csv-'));
    try {
      const path = join(dir, 'bad.csv');
      writeFileSync(path, 'a,b\n1,2\n3\n');
      const err = dataError(() => readCsvTable({ path }));
      expect(err.message).toContain(path);
      expect(err.line).toBe(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports an unclosed quote at the line where its record starts', () => {
    const err = dataError(() => readCsvTable({ text: 'a,b\n1,2\n3,"oops\n5,6\n' }));
    expect(err.line).toBe(3);
    expect(err.kind).toBe('csv-syntax');
    expect(err.message).toMatch(/line 3: CSV syntax error/);
  });

  it('refuses an empty input and duplicate column names', () => {
    expect(dataError(() => readCsvTable({ text: '' }))).toMatchObject({ line: 1, kind: 'empty-file' });
    const dup = dataError(() => readCsvTable({ text: 'a,b,a\n1,2,3\n' }));
    expect(dup.line).toBe(1);
    expect(dup.kind).toBe('duplicate-column');
    expect(dup.column).toBe('a');
    expect(dup.message).toMatch(/duplicate column name "a"/);
  });

  it('lineOf refuses rows that do not exist', () => {
    const table = readCsvTable({ text: 'a\n1\n' });
    expect(() => table.lineOf(1)).toThrow(RangeError);
  });
});

describe('writeCsvTable', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-csv-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('quotes only what needs quoting', () => {
    expect(formatCsv(['a', 'b'], [['plain', 'with,comma'], ['with "quote"', 'two\nlines']])).toBe(
      'a,b\nplain,"with,comma"\n"with ""quote""","two\nlines"\n',
    );
  });

  it('writes files that read back identically (any header, any values)', () => {
    const path = join(dir, 'nested', 'round-trip.csv');
    const cell = fc.string({ unit: 'grapheme', maxLength: 8 });
    fc.assert(
      fc.property(
        fc.uniqueArray(cell, { minLength: 1, maxLength: 4 }).chain((header) =>
          fc.tuple(fc.constant(header), fc.array(fc.array(cell, { minLength: header.length, maxLength: header.length }), { maxLength: 6 })),
        ),
        ([header, rows]) => {
          // A header made of a single empty name would be a blank line: not a table anyone writes.
          fc.pre(!(header.length === 1 && header[0] === ''));
          writeCsvTable(path, header, rows);
          const table = readCsvTable({ path });
          expect(table.header).toEqual(header);
          expect(table.rows).toEqual(rows);
        },
      ),
      { numRuns: 200 },
    );
  });
});
