import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';

/**
 * A bytea value written through the coordinator's own database handle reads back the same bytes,
 * and PostgreSQL itself sees exactly those bytes (length and sha256 computed in SQL), on both
 * backends. On PGlite parameters are bound in binary format (coordinator/db/pglite-bytea.ts
 * bindBytea, issue 13), results parsed from hex; on PostgreSQL `pg` binds a Buffer in binary.
 */
const SIZES = [0, 1, 3, 4097, 4_000_212];

function bytesOf(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 2654435761 + seed * 40503) >>> 24;
  return out;
}

for (const backendName of BACKEND_NAMES) {
  describe(`bytea round trip on ${backendName}`, () => {
    let db: Db | undefined;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      const created = await backend.create();
      drop = created.drop;
      db = (await openDatabase({ databaseUrl: created.databaseUrl, dataDir: created.dataDir })).db;
      await sql`create table bytea_probe (id int primary key, b bytea not null)`.execute(db);
    }, 120_000);
    afterAll(async () => {
      await db?.destroy();
      await drop?.();
    });

    for (const size of SIZES) {
      it(`${size} bytes, also from a view into a larger buffer`, async (ctx) => {
        if (!db) return ctx.skip();
        const bytes = bytesOf(size, size);
        // A view that starts and ends inside a larger buffer: only the view's bytes may be stored.
        const padded = new Uint8Array(size + 11).fill(0xee);
        padded.set(bytes, 5);
        const view = padded.subarray(5, 5 + size);
        for (const [id, value] of [[2 * size, bytes], [2 * size + 1, view]] as const) {
          await db.transaction().execute((tx) => sql`insert into bytea_probe (id, b) values (${id}, ${value})`.execute(tx));
          const row = (await sql<{ b: Uint8Array; n: number; h: string }>`select b, length(b) as n, encode(sha256(b), 'hex') as h from bytea_probe where id = ${id}`.execute(db)).rows[0];
          expect(row.n).toBe(size);
          expect(row.h).toBe(createHash('sha256').update(bytes).digest('hex'));
          expect(row.b).toBeInstanceOf(Uint8Array);
          expect(Buffer.from(row.b).equals(Buffer.from(bytes))).toBe(true);
        }
      }, 60_000);
    }
  });
}
