import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { parquetWriteBuffer } from 'hyparquet-writer';
import type { CsvTable } from '../../models/index.ts';

/**
 * A CSV table written as a partner would keep it elsewhere: a Parquet file or a PostgreSQL table,
 * each column typed (DOUBLE / double precision when every non-empty cell is a number, text
 * otherwise), empty cells as nulls.
 */
function columnTypes(table: CsvTable): Array<'number' | 'text'> {
  return table.header.map((_, c) => (table.rows.every((r) => r[c].trim() === '' || Number.isFinite(Number(r[c]))) ? 'number' : 'text'));
}

export function writeParquetTable(path: string, table: CsvTable, options: { codec?: 'SNAPPY' | 'UNCOMPRESSED' } = {}): void {
  const types = columnTypes(table);
  const columnData = table.header.map((name, c) => ({
    name,
    type: types[c] === 'number' ? ('DOUBLE' as const) : ('STRING' as const),
    data: table.rows.map((r) => (r[c].trim() === '' ? null : types[c] === 'number' ? Number(r[c]) : r[c])),
    nullable: true,
  }));
  writeFileSync(path, new Uint8Array(parquetWriteBuffer({ columnData, codec: options.codec ?? 'SNAPPY' })));
}

/** Creates `name` (dropped first) in the database at `url` and fills it with the table's rows. */
export async function writePostgresTable(url: string, name: string, table: CsvTable, extra: { textColumns?: string[] } = {}): Promise<void> {
  const types = columnTypes(table);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`drop table if exists ${name}`);
    const columns = table.header.map((h, c) => `"${h}" ${types[c] === 'number' && !extra.textColumns?.includes(h) ? 'double precision' : 'text'}`);
    await client.query(`create table ${name} (${columns.join(', ')})`);
    for (let start = 0; start < table.rows.length; start += 200) {
      const chunk = table.rows.slice(start, start + 200);
      const params: unknown[] = [];
      const values = chunk.map((r) => `(${r.map((cell) => (params.push(cell.trim() === '' ? null : cell), `$${params.length}`)).join(', ')})`);
      await client.query(`insert into ${name} values ${values.join(', ')}`, params);
    }
  } finally {
    await client.end();
  }
}
