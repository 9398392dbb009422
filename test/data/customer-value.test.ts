import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { COLUMNS } from '../../scripts/generate-customer-value.ts';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const SHIPPED = join(ROOT, 'data', 'customer_value.csv');
const run = promisify(execFile);

const text = readFileSync(SHIPPED, 'utf8');
const [headerLine, ...lines] = text.trimEnd().split('\n');
const header = headerLine.split(',');
const rows = lines.map((line) => line.split(','));
const col = (name: string) => rows.map((r) => r[header.indexOf(name)]);
const spend = col('spend_12m').map(Number);

describe('data/customer_value.csv', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-customer-value-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is exactly what the generator writes with its defaults (seed 7, 20,000 rows)', async () => {
    const out = join(dir, 'customer_value.csv');
    await run(process.execPath, ['bin/run-ts.js', 'scripts/generate-customer-value.ts', '--out', out], { cwd: ROOT });
    expect(readFileSync(out).equals(readFileSync(SHIPPED))).toBe(true);
  });

  it('a different seed gives different data, the same seed the same', async () => {
    const a = join(dir, 'a.csv');
    const b = join(dir, 'b.csv');
    const c = join(dir, 'c.csv');
    const gen = (seed: string, out: string) =>
      run(process.execPath, ['bin/run-ts.js', 'scripts/generate-customer-value.ts', '--rows', '300', '--seed', seed, '--out', out], { cwd: ROOT });
    await Promise.all([gen('11', a), gen('11', b), gen('12', c)]);
    expect(readFileSync(a, 'utf8')).toBe(readFileSync(b, 'utf8'));
    expect(readFileSync(a, 'utf8')).not.toBe(readFileSync(c, 'utf8'));
    expect(readFileSync(a, 'utf8').trimEnd().split('\n')).toHaveLength(301);
  });

  it('has the documented columns, 20,000 customers, and blanks only in the two columns meant to have them', () => {
    expect(header).toEqual([...COLUMNS]);
    expect(rows).toHaveLength(20_000);
    expect(rows.every((r) => r.length === header.length)).toBe(true);
    expect(new Set(col('customer_id')).size).toBe(20_000);
    for (const name of header) {
      const blanks = col(name).filter((v) => v === '').length / rows.length;
      if (name === 'avg_order_value_prior' || name === 'email_engagement') {
        expect(blanks).toBeGreaterThan(0.01);
        expect(blanks).toBeLessThan(0.03);
      } else {
        expect(blanks, name).toBe(0);
      }
    }
    expect(new Set(col('channel'))).toEqual(new Set(['web', 'app', 'store', 'marketplace']));
    expect(new Set(col('loyalty_tier'))).toEqual(new Set(['none', 'silver', 'gold']));
    expect(new Set(col('consent'))).toEqual(new Set(['basic', 'personalization']));
    for (const name of ['email_engagement', 'discount_share', 'returns_rate']) {
      const values = col(name).filter((v) => v !== '').map(Number);
      expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...values)).toBeLessThanOrEqual(1);
    }
  });

  it('has a point mass at zero, larger for lapsed customers', () => {
    const zeroShare = spend.filter((s) => s === 0).length / spend.length;
    expect(zeroShare).toBeGreaterThan(0.3);
    expect(zeroShare).toBeLessThan(0.5);
    const days = col('days_since_last_order').map(Number);
    const share = (keep: (d: number) => boolean) => {
      const picked = spend.filter((_, i) => keep(days[i]));
      return picked.filter((s) => s === 0).length / picked.length;
    };
    expect(share((d) => d > 365)).toBeGreaterThan(share((d) => d <= 90) + 0.4);
  });

  it('has a heavy right tail: the top 1% of customers carry over 15% of all spend', () => {
    const sorted = [...spend].sort((a, b) => b - a);
    const total = sorted.reduce((a, b) => a + b, 0);
    const top = sorted.slice(0, spend.length / 100).reduce((a, b) => a + b, 0);
    expect(top / total).toBeGreaterThan(0.15);
    expect(spend.every((s) => s >= 0)).toBe(true);
  });

  it('has 10 regions of unequal size whose mean spend and zero rate differ', () => {
    const regions = col('region');
    const byRegion = new Map<string, number[]>();
    regions.forEach((r, i) => byRegion.set(r, [...(byRegion.get(r) ?? []), spend[i]]));
    expect(byRegion.size).toBe(10);
    const sizes = [...byRegion.values()].map((v) => v.length);
    expect(Math.max(...sizes)).toBeGreaterThan(2 * Math.min(...sizes));
    const means = [...byRegion.values()].map((v) => v.reduce((a, b) => a + b, 0) / v.length);
    expect(Math.max(...means)).toBeGreaterThan(2 * Math.min(...means));
    const zeroRates = [...byRegion.values()].map((v) => v.filter((s) => s === 0).length / v.length);
    expect(Math.max(...zeroRates) - Math.min(...zeroRates)).toBeGreaterThan(0.1);
  });
});
