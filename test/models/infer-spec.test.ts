import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { thrown } from '../helpers/thrown.ts';
import { encodedWidth, type FeatureSpec } from '../../protocols/feature-spec.ts';
import { readCsvTable } from '../../models/csv-table.ts';
import { SpecError } from '../../models/errors.ts';
import { inferFeatureSpec, readFeatureSpecFile, writeFeatureSpecFile } from '../../models/infer-spec.ts';

const specError = (run: () => unknown) => thrown(SpecError, run);

const table = (text: string) => readCsvTable({ text });

describe('inferFeatureSpec on the shipped churn data', () => {
  const churn = readCsvTable({ path: 'data/mlc_churn.csv' });
  const spec = inferFeatureSpec(churn, { target: 'churn' });

  it('finds 15 numeric and 4 categorical features, width 81, target churn = yes', () => {
    const numeric = spec.features.filter((f) => f.kind === 'numeric');
    const categorical = spec.features.filter((f) => f.kind === 'categorical');
    expect(numeric).toHaveLength(15);
    expect(categorical.map((f) => f.name)).toEqual(['state', 'area_code', 'international_plan', 'voice_mail_plan']);
    // 15 numeric + (51 + 3 + 2 + 2) categories = 73, plus other and missing buckets for 4 features.
    expect(encodedWidth(spec)).toBe(73 + 2 * 4);
    expect(spec.target).toEqual({ column: 'churn', positive: 'yes' });
    expect(spec.missingValues).toEqual(['NA']);
  });

  it('standardizes with the mean and population std and fills with the mean', () => {
    const accountLength = spec.features.find((f) => f.name === 'account_length');
    expect(accountLength).toMatchObject({ kind: 'numeric' });
    if (accountLength?.kind !== 'numeric') throw new Error('unreachable');
    expect(accountLength.mean).toBeCloseTo(100.2586, 10);
    expect(accountLength.std).toBeCloseTo(39.6905898928197, 9);
    expect(accountLength.fill).toBe(accountLength.mean);
  });

  it('keeps sorted vocabularies', () => {
    const areaCode = spec.features.find((f) => f.name === 'area_code');
    expect(areaCode).toEqual({ name: 'area_code', kind: 'categorical', categories: ['area_code_408', 'area_code_415', 'area_code_510'] });
    const state = spec.features.find((f) => f.name === 'state');
    if (state?.kind !== 'categorical') throw new Error('state should be categorical');
    expect(state.categories).toHaveLength(51);
    expect([...state.categories].sort()).toEqual(state.categories);
  });

  it('honours exclude (e.g. the partition column)', () => {
    const withoutState = inferFeatureSpec(churn, { target: 'churn', exclude: ['state'] });
    expect(withoutState.features.map((f) => f.name)).not.toContain('state');
    expect(encodedWidth(withoutState)).toBe(81 - 53);
  });

  it('refuses a column with too many distinct values and suggests excluding it', () => {
    const err = specError(() => inferFeatureSpec(churn, { target: 'churn', maxCategories: 50 }));
    expect(err.column).toBe('state');
    expect(err.message).toMatch(/"state" has more than 50 distinct values/);
    expect(err.message).toMatch(/exclude/);
  });
});

describe('inferFeatureSpec rules', () => {
  it('refuses an ID-like text column by default', () => {
    const rows = Array.from({ length: 150 }, (_, i) => `cust-${i},${i % 7},${i % 2 ? 'yes' : 'no'}`);
    const err = specError(() => inferFeatureSpec(table(`id,x,label\n${rows.join('\n')}\n`), { target: 'label' }));
    expect(err.column).toBe('id');
    expect(err.message).toMatch(/exclude: \["id"\]/);
  });

  it('ignores missing cells in statistics and turns a zero std into 1', () => {
    const spec = inferFeatureSpec(table('a,b,c,y\n1,5,u,yes\nNA,5,,no\n3,5,v,no\n,5,u,no\n'), { target: 'y' });
    expect(spec.features).toEqual([
      { name: 'a', kind: 'numeric', mean: 2, std: 1, fill: 2 },
      { name: 'b', kind: 'numeric', mean: 5, std: 1, fill: 5 },
      { name: 'c', kind: 'categorical', categories: ['u', 'v'] },
    ]);
  });

  it('a column with any text is categorical', () => {
    const spec = inferFeatureSpec(table('a,y\n1,1\n2,0\nthree,0\n'), { target: 'y' });
    expect(spec.features[0]).toEqual({ name: 'a', kind: 'categorical', categories: ['1', '2', 'three'] });
    expect(spec.target.positive).toBe('1');
  });

  it('picks yes / 1 / true (any case) as the positive label, or the one given', () => {
    expect(inferFeatureSpec(table('a,y\n1,TRUE\n2,FALSE\n'), { target: 'y' }).target.positive).toBe('TRUE');
    expect(inferFeatureSpec(table('a,y\n1,won\n2,lost\n'), { target: 'y', positive: 'lost' }).target.positive).toBe('lost');
  });

  it('asks for the positive label when it cannot guess, naming the values seen', () => {
    const err = specError(() => inferFeatureSpec(table('a,y\n1,won\n2,lost\n3,won\n'), { target: 'y' }));
    expect(err.message).toMatch(/"lost" \(1\), "won" \(2\)/);
    expect(err.message).toMatch(/positive/);
    const missing = specError(() => inferFeatureSpec(table('a,y\n1,won\n2,lost\n'), { target: 'y', positive: 'yes' }));
    expect(missing.message).toMatch(/"yes" does not occur/);
  });

  it('requires exactly two target values', () => {
    expect(specError(() => inferFeatureSpec(table('a,y\n1,a\n2,b\n3,c\n'), { target: 'y' })).message).toMatch(/exactly 2 distinct values.*found 3/);
    expect(specError(() => inferFeatureSpec(table('a,y\n1,yes\n2,yes\n'), { target: 'y' })).message).toMatch(/found 1/);
  });

  it('names unknown target and excluded columns', () => {
    expect(specError(() => inferFeatureSpec(table('a,y\n1,yes\n2,no\n'), { target: 'label' })).message).toMatch(/target column "label" is not in the table/);
    expect(specError(() => inferFeatureSpec(table('a,y\n1,yes\n2,no\n'), { target: 'y', exclude: ['b'] })).message).toMatch(/excluded column "b"/);
  });
});

describe('feature spec files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-spec-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const spec: FeatureSpec = {
    version: 1,
    target: { column: 'churn', positive: 'yes' },
    features: [
      { name: 'minutes', kind: 'numeric', mean: 180.5, std: 53.25, fill: 180.5, category: 'behavior' },
      { name: 'plan', kind: 'categorical', categories: ['no', 'yes'] },
    ],
    missingValues: ['NA', '?'],
  };

  it('round-trips', () => {
    const path = join(dir, 'sub', 'spec.json');
    writeFeatureSpecFile(path, spec);
    expect(readFeatureSpecFile(path)).toEqual(spec);
  });

  it('names the invalid field', () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify({ ...spec, features: [spec.features[1], { ...spec.features[0], std: 0 }] }));
    const err = specError(() => readFeatureSpecFile(path));
    expect(err.field).toBe('features[1].std');
    expect(err.message).toContain(path);
    expect(err.message).toMatch(/features\[1\]\.std: /);
  });

  it('reports JSON syntax errors and unreadable files', () => {
    const path = join(dir, 'broken.json');
    writeFileSync(path, '{"version": 1,');
    expect(specError(() => readFeatureSpecFile(path)).message).toMatch(/not valid JSON/);
    expect(specError(() => readFeatureSpecFile(join(dir, 'absent.json'))).message).toMatch(/cannot read feature spec/);
  });
});
