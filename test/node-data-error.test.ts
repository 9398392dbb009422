import { describe, expect, it } from 'vitest';
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

  it('classifies the other problems', () => {
    expect(describeDataError(errorOf('a,b,y\n1,x\n'))).toMatch(/^line 2: wrong number of fields/);
    expect(describeDataError(errorOf('a,y\n1,yes\n'))).toMatch(/column b: a column of the study is missing/);
    expect(describeDataError(errorOf('a,b,y\n1,x,\n'))).toMatch(/line 2, column y: a row without a label/);
    expect(describeDataError(new Error('anything'))).toBe('the data file cannot be read (details in the node log)');
  });
});
