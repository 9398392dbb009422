import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/processes.ts';
import { FeatureSpec } from '../../protocols/feature-spec.ts';
import { readCsvTable } from '../../models/csv-table.ts';
import { flagColumns, sensitiveCategoryOf } from '../../models/column-flags.ts';
import { DEFAULT_POLICIES } from '../../protocols/policy/jurisdiction-policy.ts';

const run = promisify(execFile);

/** `fedmark <args>` as a real process: exit code, stdout, stderr (never throws). */
async function fedmark(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: String(e.stdout), stderr: String(e.stderr) };
  }
}

const dir = mkdtempSync(join(tmpdir(), 'fedmark-spec-infer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * 120 rows, semicolon-separated: a sequential id, a uuid, a zip code, a religion, ages (some
 * under 18, one `n/a `), a free-text note, a plan, a spend and the label. Deterministic.
 */
function writeData(name: string, age: (i: number) => string = (i) => String(14 + ((i * 7) % 60))): string {
  const lines = ['customer_id;account_uuid;zip_code;religion;age;notes;plan;spend;churn'];
  for (let i = 0; i < 120; i++) {
    const hex = (i * 2654435761).toString(16).padStart(12, '0').slice(-12);
    lines.push([i + 1, `0c2d${hex.slice(0, 4)}-1a2b-4c3d-8e9f-${hex}`, 10000 + ((i * 7919) % 89999), ['a', 'b', 'c'][i % 3], age(i), `the customer wrote a long message number ${i} about the service`, i % 4 ? 'pro' : 'basic', ((i * 37) % 100) + 0.5, i % 3 ? 'no' : 'yes'].join(';'));
  }
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

describe('fedmark spec infer (real process)', () => {
  it('writes the spec, leaves ids and free text out (saying how to keep them), flags sensitive columns under the jurisdiction', async () => {
    const data = writeData('people.csv', (i) => (i === 7 ? 'n/a ' : String(14 + ((i * 7) % 60))));
    const out = join(dir, 'spec.json');
    const { code, stdout, stderr } = await fedmark(['spec', 'infer', data, '--target', 'churn', '--jurisdiction', 'EU-GDPR', '--out', out, '--json']);
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout);
    expect(result.delimiter).toBe(';');
    expect(result.rows).toBe(120);
    expect(result.excluded).toEqual(['customer_id', 'account_uuid', 'religion', 'notes']);
    const byColumn = Object.fromEntries(result.flagged.map((f: { column: string }) => [f.column, f]));
    expect(byColumn.customer_id).toMatchObject({ kind: 'id', excluded: true });
    expect(byColumn.customer_id.reason).toMatch(/increasing with the row/);
    expect(byColumn.account_uuid.reason).toMatch(/uuid-like/);
    expect(byColumn.notes).toMatchObject({ kind: 'free-text', excluded: true });
    // Forbidden under the planned jurisdiction: left out too; zip codes are not (GDPR allows them): kept, tagged.
    expect(byColumn.religion).toMatchObject({ kind: 'sensitive', category: 'religion', forbiddenUnder: ['EU-GDPR v1'], excluded: true });
    expect(byColumn.zip_code).toMatchObject({ kind: 'sensitive', category: 'precise-location', forbiddenUnder: [], excluded: false });
    expect(byColumn.age).toMatchObject({ kind: 'sensitive', category: 'minors' });
    expect(byColumn.age.reason).toMatch(/youngest 14/);
    // The file is the FeatureSpec the study takes, sensitive features tagged with their category.
    const spec = FeatureSpec.parse(JSON.parse(readFileSync(out, 'utf8')));
    expect(spec).toEqual(result.spec);
    expect(spec.features.map((f) => f.name)).toEqual(['zip_code', 'age', 'plan', 'spend']);
    expect(spec.features.find((f) => f.name === 'zip_code')?.category).toBe('precise-location');
    expect(spec.missingValues).toEqual(['NA', 'n/a']);
    expect(result.missingMarkers).toEqual([{ column: 'age', value: 'n/a', count: 1, firstLine: 9 }]);
    expect(stderr).toMatch(/left out "customer_id": looks like an id: .*keep it with --keep customer_id/);
    expect(stderr).toMatch(/left out "religion": .*forbidden under EU-GDPR v1; keep it with --keep religion/);
    expect(stderr).toMatch(/flagged "zip_code": .*kept and tagged category "precise-location"/);
    expect(stderr).toMatch(/"n\/a" \(1 cell, first on line 9\) read as missing/);
  });

  it('--keep keeps a flagged id; without --out or --json the spec goes to stdout', async () => {
    const data = writeData('keep.csv');
    const { code, stdout, stderr } = await fedmark(['spec', 'infer', data, '--target', 'churn', '--keep', 'customer_id', '--exclude', 'religion,zip_code']);
    expect(code, stderr).toBe(0);
    const spec = FeatureSpec.parse(JSON.parse(stdout));
    expect(spec.features.map((f) => f.name)).toEqual(['customer_id', 'age', 'plan', 'spend']);
    expect(stderr).toMatch(/kept "customer_id" \(--keep\)/);
  });

  it('a stray word names the cell; bad flags name the flag; never a stack trace', async () => {
    const data = writeData('stray.csv', (i) => (i === 30 ? 'twelve' : String(20 + (i % 5))));
    const stray = await fedmark(['spec', 'infer', data, '--target', 'churn']);
    expect(stray.code).toBe(1);
    expect(stray.stderr).toMatch(/line 32, column "age" \(column 5\): "twelve" is not a number/);
    const unknown = await fedmark(['spec', 'infer', data, '--target', 'churn', '--jurisdiction', 'XX-LAW']);
    expect(unknown.stderr).toMatch(/--jurisdiction: unknown profile "XX-LAW"; built-in profiles: EU-GDPR/);
    const badDelimiter = await fedmark(['spec', 'infer', data, '--target', 'churn', '--delimiter', ':']);
    expect(badDelimiter.stderr).toMatch(/--delimiter.*one of , ; \| tab/);
    for (const r of [stray, unknown, badDelimiter]) {
      expect(r.code).not.toBe(0);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});

describe('flagColumns', () => {
  const table = (header: string[], column: (i: number) => string[]) => readCsvTable({ text: `${header.join(',')}\n${Array.from({ length: 60 }, (_, i) => column(i).join(',')).join('\n')}\n` });

  it('flags nothing in the shipped churn data', () => {
    expect(flagColumns(readCsvTable({ path: 'data/mlc_churn.csv' }), { target: 'churn' })).toEqual([]);
  });

  it('unique measurements are not ids; dense shuffled integers, e-mails and id-named columns are', () => {
    const t = table(['weight', 'shuffled', 'mail', 'user_id', 'y'], (i) => [String(50 + i * 1.37), String((i * 7) % 60), `u${i}@example.com`, String(1000 + i * 97), 'yes']);
    const flags = flagColumns(t, { target: 'y' });
    expect(flags.map((f) => [f.column, f.kind])).toEqual([
      ['shuffled', 'id'],
      ['mail', 'id'],
      ['user_id', 'id'],
    ]);
  });

  it('matches sensitive names by token, not inside unrelated words', () => {
    expect(sensitiveCategoryOf('home_lat')?.category).toBe('precise-location');
    expect(sensitiveCategoryOf('PostCode')?.category).toBe('precise-location');
    expect(sensitiveCategoryOf('religiousAffiliation')?.category).toBe('religion');
    expect(sensitiveCategoryOf('date_of_birth')?.category).toBe('minors');
    for (const name of ['relation', 'incremental_spend', 'account_length', 'area_code', 'plate', 'international_plan']) expect(sensitiveCategoryOf(name)).toBeUndefined();
  });

  it('says which planned profiles forbid a category', () => {
    const t = table(['ethnicity', 'y'], (i) => [['p', 'q'][i % 2], 'yes']);
    const ccpa = DEFAULT_POLICIES.filter((p) => p.jurisdiction === 'US-CA-CCPA');
    expect(flagColumns(t, { target: 'y', jurisdictions: ccpa })[0]).toMatchObject({ category: 'ethnicity', forbiddenUnder: ['US-CA-CCPA v1'] });
    expect(flagColumns(t, { target: 'y' })[0].forbiddenUnder).toEqual(['EU-GDPR v1', 'US-CA-CCPA v1']);
  });
});
