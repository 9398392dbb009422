import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeDataError } from '../client-node/node-runner.ts';
import { DataError, readCsvTable, encodeTable, inferFeatureSpec } from '../models/index.ts';
import { thrown } from './helpers/thrown.ts';

/** What a node tells the coordinator about a broken file: where and what kind, never a value. */
describe('data errors as the coordinator sees them', () => {
  const spec = inferFeatureSpec(readCsvTable({ text: 'a,b,y\n1,x,yes\n2,z,no\n3,x,no\n' }), { target: 'y' });
  const errorOf = (text: string) => thrown(DataError, () => encodeTable(readCsvTable({ text }), spec));

  it('names line, column and kind, and no cell value', () => {
    const secret = 'SECRET-CELL-VALUE';
    const message = describeDataError(errorOf(`a,b,y\n1,x,yes\n${secret},x,no\n`));
    expect(message).toBe("line 3, column a: text in a numeric column (details in the node's own log)");
    expect(message).not.toContain(secret);
  });

  it('takes the kind from where the error was thrown, not from words in the message', () => {
    // A path and column names full of other kinds' words: the old text search called this
    // too-few-fields row "text in a numeric column" (review-2 #3).
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-kind-'));
    try {
      mkdirSync(join(dir, 'numeric', 'empty syntax'), { recursive: true });
      const path = join(dir, 'numeric', 'empty syntax', 'export.csv');
      writeFileSync(path, 'numeric_fields,consent_label,y\n1,x,yes\n2,x\n');
      const fewFields = thrown(DataError, () => readCsvTable({ path }));
      expect(describeDataError(fewFields)).toBe("line 3, column y: wrong number of fields (details in the node's own log)");

      const numericSpec = inferFeatureSpec(readCsvTable({ text: 'numeric_fields,consent_label,y\n1,x,yes\n2,z,no\n' }), { target: 'y' });
      writeFileSync(path, 'numeric_fields,consent_label,y\n1,x,yes\n"wrong number of fields, no label",x,no\n');
      const text = thrown(DataError, () => encodeTable(readCsvTable({ path }), numericSpec));
      const said = describeDataError(text);
      expect(said).toBe("line 3, column numeric_fields: text in a numeric column (details in the node's own log)");
      expect(said).not.toContain('no label');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('classifies the other problems', () => {
    expect(describeDataError(errorOf('a,b,y\n1,x\n'))).toMatch(/^line 2, column y: wrong number of fields/);
    expect(describeDataError(errorOf('a,b,y\n1,x,3,4\n'))).toMatch(/^line 2: wrong number of fields/);
    expect(describeDataError(errorOf('a,y\n1,yes\n'))).toMatch(/column b: a column of the study is missing/);
    expect(describeDataError(errorOf('a,b,y\n1,x,\n'))).toMatch(/line 2, column y: a row without a label/);
    expect(describeDataError(errorOf('a,b,y\n1,"x\n'))).toMatch(/^line 2: CSV syntax error/);
    expect(describeDataError(errorOf('a,a,y\n1,2,yes\n'))).toMatch(/^line 1, column a: duplicate column name/);
    expect(describeDataError(thrown(DataError, () => readCsvTable({ text: '' })))).toMatch(/^line 1: empty file/);
    expect(describeDataError(new Error('anything'))).toBe('the data file cannot be read (details in the node log)');
  });
});
