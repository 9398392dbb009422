import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTable } from '../../client-node/data.ts';
import { DataError, encodeTable, inferFeatureSpec, readCsvTable, type CsvTable } from '../../models/index.ts';
import { openTableSource, parquetSource, postgresSource, redactUrl } from '../../models/table-sources.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { CHURN } from '../helpers/federation.ts';
import { writeParquetTable, writePostgresTable } from '../helpers/table-files.ts';

/**
 * Node data where partners keep it (issue 12): a Parquet file and a PostgreSQL table or query are
 * read into the same table as the CSV, so the study's encoding of the same rows is identical and
 * the same validation names the row (as "line", header = line 1) and the column.
 */
let dir: string;
let csv: CsvTable;
let study: StudyConfig;
let databaseUrl: string | undefined;
let dropDatabase: (() => Promise<void>) | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fedmark-sources-'));
  const full = readCsvTable({ path: CHURN });
  // 300 rows: enough for every category and the encoding, small enough to insert quickly.
  csv = { header: full.header, rows: full.rows.slice(0, 300), lineOf: (i) => i + 2 };
  const features = inferFeatureSpec(csv, { target: 'churn', exclude: ['area_code', 'state'] });
  study = StudyConfig.parse({ name: 'sources', features, model: { kind: 'logreg' }, rounds: 1 });
  const postgres = await backendOrSkip('postgres');
  if (postgres) {
    const db = await postgres.create();
    databaseUrl = db.databaseUrl;
    dropDatabase = db.drop;
  }
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropDatabase?.();
});

const encoded = (table: CsvTable) => encodeTable(table, study.features);

describe('Parquet files', () => {
  it('read into the same encoding as the CSV of the same rows (snappy and uncompressed)', async () => {
    for (const codec of ['SNAPPY', 'UNCOMPRESSED'] as const) {
      const path = join(dir, `churn-${codec}.parquet`);
      writeParquetTable(path, csv, { codec });
      const table = await parquetSource(path).read();
      expect(table.header).toEqual(csv.header);
      expect(table.rows.length).toBe(300);
      const [a, b] = [encoded(table), encoded(csv)];
      expect(Array.from(a.x)).toEqual(Array.from(b.x));
      expect(Array.from(a.y)).toEqual(Array.from(b.y));
    }
  });

  it('is chosen by the .parquet extension, and a file that is not Parquet is named as such', async () => {
    writeFileSync(join(dir, 'fake.parquet'), 'state,churn\nKS,no\n');
    const err = await openTableSource({ data: join(dir, 'fake.parquet') }).read().catch((e) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(/fake\.parquet: not a readable Parquet file/);
  });

  it('a text cell in a numeric column is an error naming its row and column', async () => {
    const rows = csv.rows.map((r) => [...r]);
    const col = csv.header.indexOf('total_day_minutes');
    rows[41][col] = 'twelve';
    const path = join(dir, 'stray.parquet');
    writeParquetTable(path, { ...csv, rows });
    const table = await parquetSource(path).read();
    const err = (() => {
      try {
        loadTable(table, path, study, 1);
      } catch (e) {
        return e as DataError;
      }
    })();
    expect(err).toBeInstanceOf(DataError);
    // Data row 42 is "line 43" (the header is line 1), as in the CSV it came from.
    expect(err!.line).toBe(43);
    expect(err!.column).toBe('total_day_minutes');
  });
});

describe('PostgreSQL tables and queries', () => {
  it('a table read through the cursor in small batches gives the CSV\'s encoding', async (ctx) => {
    if (!databaseUrl) return ctx.skip();
    await writePostgresTable(databaseUrl, 'customers', csv);
    // 300 rows in batches of 7: 43 batches, the last one short.
    const table = await postgresSource(databaseUrl, { table: 'customers', batchRows: 7 }).read();
    expect(table.header).toEqual(csv.header);
    expect(table.rows.length).toBe(300);
    const [a, b] = [encoded(table), encoded(csv)];
    expect(Array.from(a.x)).toEqual(Array.from(b.x));
    expect(Array.from(a.y)).toEqual(Array.from(b.y));
  });

  it('a query reads only what it selects, in a read-only transaction: a write is refused and nothing changes', async (ctx) => {
    if (!databaseUrl) return ctx.skip();
    await writePostgresTable(databaseUrl, 'customers', csv);
    const some = await postgresSource(databaseUrl, { query: "select * from customers where state = 'KS'" }).read();
    expect(some.rows.length).toBe(csv.rows.filter((r) => r[csv.header.indexOf('state')] === 'KS').length);
    const err = await postgresSource(databaseUrl, { query: 'delete from customers returning *' }).read().catch((e) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(/read-only transaction/);
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    const { rows } = await client.query('select count(*)::int as n from customers');
    await client.end();
    expect(rows[0].n).toBe(300);
  });

  it('a text cell in a numeric column is named by row and column, as for a CSV', async (ctx) => {
    if (!databaseUrl) return ctx.skip();
    const rows = csv.rows.map((r) => [...r]);
    rows[9][csv.header.indexOf('number_customer_service_calls')] = 'n/a x';
    await writePostgresTable(databaseUrl, 'dirty', { ...csv, rows }, { textColumns: ['number_customer_service_calls'] });
    const table = await postgresSource(databaseUrl, { table: 'dirty' }).read();
    const err = (() => {
      try {
        loadTable(table, 'dirty', study, 1);
      } catch (e) {
        return e as DataError;
      }
    })();
    expect(err).toBeInstanceOf(DataError);
    expect([err!.line, err!.column]).toEqual([11, 'number_customer_service_calls']);
  });

  it('refuses SQL through --table, a URL without --table or --query, and those flags with a file', () => {
    expect(() => openTableSource({ data: 'postgresql://u:secret@db/crm', table: 'customers; drop table x' })).toThrow(/--table "customers; drop table x": expected NAME or SCHEMA.NAME/);
    expect(() => openTableSource({ data: 'postgresql://u:secret@db/crm' })).toThrow(/give --table NAME or --query SQL/);
    expect(() => openTableSource({ data: 'customers.csv', query: 'select 1' })).toThrow(/--table and --query go with a PostgreSQL --data URL/);
    // The password never appears in a message.
    expect(redactUrl('postgresql://u:secret@db/crm')).toBe('postgresql://u:***@db/crm');
    // The driver honours a password in the query string too, and an SSL key's passphrase.
    expect(redactUrl('postgresql://u@db/crm?password=secret&sslpassword=secret2&sslmode=require')).toBe('postgresql://u@db/crm?password=***&sslpassword=***&sslmode=require');
    try {
      openTableSource({ data: 'postgresql://u:secret@db/crm' });
    } catch (e) {
      expect(String(e)).not.toContain('secret');
    }
  });

  it('an unreachable server is a data error naming the source without its password', async () => {
    const err = await postgresSource('postgresql://u:secret@127.0.0.1:1/crm', { table: 'customers' }).read().catch((e) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toMatch(/^postgresql:\/\/u:\*\*\*@127\.0\.0\.1:1\/crm table customers: cannot connect/);
  });
});
