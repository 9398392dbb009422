import { describe, expect, it } from 'vitest';
import { thrown } from '../helpers/thrown.ts';
import { detectDelimiter, formatCsv, parseDelimiter, readCsvTable } from '../../models/csv-table.ts';
import { DataError } from '../../models/errors.ts';
import { encodeTable } from '../../models/encode.ts';
import { inferFeatureSpec, inferFeatureSpecReport } from '../../models/infer-spec.ts';
import { makeMissingTest } from '../../models/cells.ts';

/**
 * Issue 12, part 8: data errors name the cell. Semicolon, tab and pipe files are read as tables
 * (not as one column), a stray word in a numeric column is an error naming the line, the column
 * (name and number) and the value, and a common missing marker in a numeric column is read as
 * missing and declared in the spec, so the node reads it the same way.
 */

const dataError = (run: () => unknown) => thrown(DataError, run);

/** 200 rows: id, a numeric `age` with few distinct values, a category, a binary label. */
function rows(age: (i: number) => string, sep = ','): string {
  const lines = [['age', 'plan', 'label'].join(sep)];
  for (let i = 0; i < 200; i++) lines.push([age(i), i % 3 ? 'pro' : 'basic', i % 2 ? 'yes' : 'no'].join(sep));
  return `${lines.join('\n')}\n`;
}

describe('delimiter detection', () => {
  it('reads comma, semicolon, tab and pipe files as the same table', () => {
    const expected = readCsvTable({ text: rows((i) => String(20 + (i % 5))) });
    expect(expected.delimiter).toBe(',');
    for (const sep of [';', '\t', '|'] as const) {
      const table = readCsvTable({ text: rows((i) => String(20 + (i % 5)), sep) });
      expect(table.delimiter).toBe(sep);
      expect(table.header).toEqual(['age', 'plan', 'label']);
      expect(table.rows).toEqual(expected.rows);
    }
  });

  it('a semicolon file infers the same spec as its comma twin (not one column with "found 3" errors)', () => {
    const comma = inferFeatureSpec(readCsvTable({ text: rows((i) => String(20 + (i % 5))) }), { target: 'label' });
    const semi = inferFeatureSpec(readCsvTable({ text: rows((i) => String(20 + (i % 5)), ';') }), { target: 'label' });
    expect(semi).toEqual(comma);
  });

  it('ignores delimiters inside quoted values and needs the candidate on every sampled line', () => {
    expect(detectDelimiter('name,note\n"a;b;c",x\n"d;e;f",y\n')).toBe(',');
    expect(detectDelimiter('a;b\n"1,5";2\n"3,5";4\n')).toBe(';');
    // Commas inside values, consistent semicolons: semicolon wins.
    expect(detectDelimiter('a;b;c\nx,y;1;2\nz;3;4\n')).toBe(';');
    expect(detectDelimiter('only_one_column\n1\n2\n')).toBe(',');
  });

  it('an explicit delimiter wins over detection, and a ragged row names the delimiter', () => {
    const table = readCsvTable({ text: 'a;b\n1;2\n' }, { delimiter: ',' });
    expect(table.header).toEqual(['a;b']);
    const err = dataError(() => readCsvTable({ text: 'a;b;c\n1;2;3\n4;5;6;7\n' }));
    expect(err.kind).toBe('field-count');
    expect(err.line).toBe(3);
    expect(err.message).toMatch(/semicolon-separated/);
    expect(err.message).toMatch(/--delimiter/);
  });

  it('parses --delimiter values by character or name, and refuses others naming the choices', () => {
    expect(parseDelimiter(';')).toBe(';');
    expect(parseDelimiter('tab')).toBe('\t');
    expect(parseDelimiter('\\t')).toBe('\t');
    expect(parseDelimiter('pipe')).toBe('|');
    expect(() => parseDelimiter(':')).toThrow(/one of , ; \| tab/);
  });

  it('writes values holding ; | or a tab quoted, so they read back as comma-separated', () => {
    const text = formatCsv(['a;b', 'c'], [['x|y', 'p\tq']]);
    const table = readCsvTable({ text });
    expect(table.header).toEqual(['a;b', 'c']);
    expect(table.rows).toEqual([['x|y', 'p\tq']]);
  });
});

describe('stray text in a numeric column', () => {
  it('"twelve" among numbers with few distinct values is an error naming line, column name and number, and value', () => {
    const text = rows((i) => (i === 41 ? 'twelve' : String(20 + (i % 5))));
    const err = dataError(() => inferFeatureSpec(readCsvTable({ text }), { target: 'label' }));
    expect(err.kind).toBe('non-numeric');
    expect(err.line).toBe(43); // header is line 1, row 41 is line 43
    expect(err.column).toBe('age');
    expect(err.message).toMatch(/^line 43, column "age" \(column 1\): "twelve" is not a number, in a column where 99\.5% of the cells are/);
  });

  it('a mixed column with many distinct values names its first text cell, never "more than 100 distinct values"', () => {
    const text = rows((i) => (i % 10 === 3 ? `x${i}` : String(i)));
    const err = dataError(() => inferFeatureSpec(readCsvTable({ text }), { target: 'label' }));
    expect(err.message).toMatch(/^line 5, column "age" \(column 1\): "x3" is not a number/);
    expect(err.message).not.toMatch(/distinct values/);
  });

  it('decimal commas are refused with their cell, not learned as categories', () => {
    const text = rows((i) => `${i % 4},5`, ';');
    const err = dataError(() => inferFeatureSpec(readCsvTable({ text }), { target: 'label' }));
    expect(err.message).toMatch(/^line 2, column "age" \(column 1\): "0,5" is written with a decimal comma/);
  });

  it('coded categories mixing numbers and words (each word well above 5%) stay categorical', () => {
    const text = rows((i) => ['0', '1', '2', '3+'][i % 4]);
    const spec = inferFeatureSpec(readCsvTable({ text }), { target: 'label' });
    expect(spec.features[0]).toEqual({ name: 'age', kind: 'categorical', categories: ['0', '1', '2', '3+'] });
  });

  it('the node reading its data with a numeric spec gets the same place in its error', () => {
    const spec = inferFeatureSpec(readCsvTable({ text: rows((i) => String(20 + (i % 5))) }), { target: 'label' });
    const err = dataError(() => encodeTable(readCsvTable({ text: rows((i) => (i === 41 ? 'twelve' : '20'), ';') }), spec));
    expect([err.kind, err.line, err.column]).toEqual(['non-numeric', 43, 'age']);
    expect(err.message).toMatch(/^line 43, column "age" \(column 1\): "twelve" is not a number/);
  });
});

describe('missing markers', () => {
  it('one "n/a " cell in a numeric column is read as missing and declared in missingValues, with where it was', () => {
    const text = rows((i) => (i === 7 ? 'n/a ' : String(20 + (i % 5))));
    const { spec, missingMarkers } = inferFeatureSpecReport(readCsvTable({ text }), { target: 'label' });
    expect(spec.features[0]).toMatchObject({ name: 'age', kind: 'numeric' });
    expect(spec.missingValues).toEqual(['NA', 'n/a']);
    expect(missingMarkers).toEqual([{ column: 'age', value: 'n/a', count: 1, firstLine: 9 }]);
    // The node encodes that file without an error: the trimmed cell matches the declared marker.
    const data = encodeTable(readCsvTable({ text }), spec);
    expect(data.report.missingFilled).toEqual({ age: 1 });
  });

  it('a marker declared by a numeric column is missing in text columns too (inferred again), as nodes will read it', () => {
    const text = ['n,c,label', ...Array.from({ length: 40 }, (_, i) => `${i === 0 ? 'null' : i},${i === 1 ? 'null' : i % 2 ? 'u' : 'v'},${i % 2 ? 'yes' : 'no'}`)].join('\n');
    const spec = inferFeatureSpec(readCsvTable({ text }), { target: 'label' });
    expect(spec.missingValues).toEqual(['NA', 'null']);
    expect(spec.features[1]).toEqual({ name: 'c', kind: 'categorical', categories: ['u', 'v'] });
  });

  it('in a text column a marker is a category unless declared; detection can be turned off', () => {
    const text = 'c,label\n-,yes\nu,no\nv,no\n';
    expect(inferFeatureSpec(readCsvTable({ text }), { target: 'label' }).features[0]).toEqual({ name: 'c', kind: 'categorical', categories: ['-', 'u', 'v'] });
    expect(inferFeatureSpec(readCsvTable({ text }), { target: 'label', missingValues: ['NA', '-'] }).features[0]).toEqual({ name: 'c', kind: 'categorical', categories: ['u', 'v'] });
    const numeric = 'n,label\n-,yes\n1,no\n2,no\n';
    expect(() => inferFeatureSpec(readCsvTable({ text: numeric }), { target: 'label', detectMissingMarkers: false })).not.toThrow();
    expect(inferFeatureSpec(readCsvTable({ text: numeric }), { target: 'label', detectMissingMarkers: false }).features[0].kind).toBe('categorical');
  });

  it('missing values are compared trimmed, case-sensitively', () => {
    const isMissing = makeMissingTest(['NA']);
    expect([' NA', 'NA ', '', '  ', 'NA'].every(isMissing)).toBe(true);
    expect(['na', 'N A', '0'].some(isMissing)).toBe(false);
  });
});
