/**
 * Where a partner keeps its data: a CSV file, a Parquet file, or a PostgreSQL table or query
 * (issue 12). Each source is read into the same CsvTable (header, string cells as written, a line
 * number per row), so everything after it (consent filter, the study's encoding, its validation
 * and its errors naming line and column) is one code path for all three.
 *
 * "Line N" means the same for every source: the header is line 1 and data row k is line k + 1,
 * as if the rows had been exported to a CSV with a header (Parquet and PostgreSQL have no lines
 * of their own; a row number is what a partner can look up).
 *
 * @example
 *   const source = openTableSource({ data: 'postgresql://reader@db/crm', table: 'marketing.customers' });
 *   const table = await source.read();
 */
import { readFileSync, statSync } from 'node:fs';
import { DataError } from './errors.ts';
import { readCsvTable, type CsvDelimiter, type CsvTable } from './csv-table.ts';

export interface TableSource {
  /** What to call the source in messages and logs: a path, or the URL without its password plus the table or "query". */
  readonly describe: string;
  /**
   * A value that changes when the data may have changed (a file's mtime; for PostgreSQL, the time
   * bucket of `refreshSeconds`): the node rereads the source when it differs from the last one.
   */
  version(): number;
  read(): Promise<CsvTable>;
}

export interface TableSourceOptions {
  /** A CSV or Parquet path, or a postgres:// / postgresql:// URL. */
  data: string;
  /** PostgreSQL: a table (optionally schema-qualified) to read whole. */
  table?: string;
  /** PostgreSQL: a SELECT to read (run in a READ ONLY transaction). */
  query?: string;
  /** PostgreSQL: rows fetched per batch through a cursor (default 5,000). */
  batchRows?: number;
  /** PostgreSQL: reread at most this often, in seconds (default 600; a table has no mtime). */
  refreshSeconds?: number;
  /** CSV: the field delimiter (default: detected). */
  delimiter?: CsvDelimiter;
}

export const isPostgresUrl = (data: string) => /^postgres(ql)?:\/\//i.test(data);
export const isParquetPath = (data: string) => /\.parquet$/i.test(data);

/** The source `options.data` names, checked for the flags it needs (a URL needs --table or --query; a file takes neither). */
export function openTableSource(options: TableSourceOptions): TableSource {
  const { data } = options;
  if (isPostgresUrl(data)) {
    if (!options.table === !options.query) throw new DataError('source-options', `${redactUrl(data)}: give --table NAME or --query SQL (one of them) with a PostgreSQL --data URL`, 1);
    return postgresSource(data, options);
  }
  if (options.table || options.query) throw new DataError('source-options', `--table and --query go with a PostgreSQL --data URL (postgresql://...), not with the file ${data}`, 1);
  return isParquetPath(data) ? parquetSource(data) : csvSource(data, options.delimiter);
}

const mtime = (path: string) => {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -2;
  }
};

export function csvSource(path: string, delimiter?: CsvDelimiter): TableSource {
  return { describe: path, version: () => mtime(path), read: async () => readCsvTable({ path }, { delimiter }) };
}

/** A cell as the CSV reader would have kept it: text, '' for a missing value. */
function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? '' : v.toISOString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x));
}

function tableOf(header: string[], rows: string[][], where: string): CsvTable {
  if (header.length === 0) throw new DataError('empty-file', `${where}: no columns`, 1);
  const seen = new Set<string>();
  for (const name of header) {
    if (seen.has(name)) throw new DataError('duplicate-column', `${where}: line 1: duplicate column name "${name}"`, 1, name);
    seen.add(name);
  }
  return { header, rows, lineOf: (i: number) => i + 2 };
}

/**
 * A Parquet file (hyparquet: pure JavaScript, snappy built in; gzip, zstd, brotli and lz4 through
 * hyparquet-compressors). Nested columns are kept as JSON text, which the study's encoding then
 * refuses by name if the study uses them.
 */
export function parquetSource(path: string): TableSource {
  return {
    describe: path,
    version: () => mtime(path),
    async read() {
      const { parquetMetadata, parquetReadObjects, parquetSchema } = await import('hyparquet');
      const { compressors } = await import('hyparquet-compressors');
      let bytes: Buffer;
      try {
        bytes = readFileSync(path);
      } catch (err) {
        throw new DataError('source-unreadable', `${path}: cannot read the file: ${(err as Error).message}`, 1);
      }
      const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      let metadata;
      try {
        metadata = parquetMetadata(file);
      } catch (err) {
        throw new DataError('source-unreadable', `${path}: not a readable Parquet file: ${(err as Error).message}`, 1);
      }
      const header = parquetSchema(metadata).children.map((c) => c.element.name);
      const objects = (await parquetReadObjects({ file, metadata, compressors })) as Record<string, unknown>[];
      return tableOf(header, objects.map((o) => header.map((h) => cellText(o[h]))), path);
    },
  };
}

/** Query parameters of a PostgreSQL URL that carry a secret (`?password=` is honoured by the driver, as are the SSL key's). */
const SECRET_PARAM = /pass|secret|key|token/i;

/** The URL as it may be logged: no password, in the user part or in any secret-looking query parameter. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const name of [...u.searchParams.keys()]) if (SECRET_PARAM.test(name)) u.searchParams.set(name, '***');
    return u.toString().replace(/%2A%2A%2A/g, '***');
  } catch {
    return 'postgresql://(unparsable URL)';
  }
}

/** `schema.table` quoted as identifiers; anything else is refused (no SQL through --table). */
export function quoteTableName(name: string): string {
  const parts = name.split('.');
  if (parts.length > 2 || parts.some((p) => !/^[A-Za-z_][A-Za-z0-9_$]*$/.test(p))) {
    throw new DataError('source-options', `--table "${name}": expected NAME or SCHEMA.NAME of letters, digits and underscores (use --query for anything else)`, 1);
  }
  return parts.map((p) => `"${p}"`).join('.');
}

/**
 * A PostgreSQL table or query, read in a READ ONLY transaction (the node never writes to a
 * partner's database, even given a role that could) through a server-side cursor, `batchRows`
 * rows at a time, so the database streams the rows instead of building one huge result.
 */
export function postgresSource(url: string, options: Pick<TableSourceOptions, 'table' | 'query' | 'batchRows' | 'refreshSeconds'>): TableSource {
  const sql = options.table ? `select * from ${quoteTableName(options.table)}` : options.query!;
  const describe = `${redactUrl(url)} ${options.table ? `table ${options.table}` : 'query'}`;
  const batchRows = options.batchRows ?? 5000;
  const refreshMs = (options.refreshSeconds ?? 600) * 1000;
  return {
    describe,
    version: () => Math.floor(Date.now() / refreshMs),
    async read() {
      const { default: pg } = await import('pg');
      const { default: Cursor } = await import('pg-cursor');
      const client = new pg.Client({ connectionString: url, application_name: 'fedmark-node' });
      try {
        await client.connect();
      } catch (err) {
        throw new DataError('source-unreadable', `${describe}: cannot connect: ${(err as Error).message}`, 1);
      }
      try {
        await client.query('begin transaction read only');
        const cursor = client.query(new Cursor(sql, [], { rowMode: 'array' }));
        const rows: string[][] = [];
        let header: string[] | undefined;
        for (;;) {
          const { batch, fields } = await new Promise<{ batch: unknown[][]; fields: string[] }>((resolve, reject) =>
            cursor.read(batchRows, (err, got, result) => (err ? reject(err) : resolve({ batch: got as unknown[][], fields: (result?.fields ?? []).map((f) => f.name) }))),
          );
          header ??= fields;
          for (const r of batch) rows.push(r.map(cellText));
          if (batch.length < batchRows) break;
        }
        await new Promise<void>((resolve) => cursor.close(() => resolve()));
        await client.query('commit');
        return tableOf(header ?? [], rows, describe);
      } catch (err) {
        if (err instanceof DataError) throw err;
        throw new DataError('source-unreadable', `${describe}: the database refused the read: ${(err as Error).message}`, 1);
      } finally {
        await client.end().catch(() => undefined);
      }
    },
  };
}
