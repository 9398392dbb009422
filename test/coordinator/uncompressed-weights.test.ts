import { sql } from 'kysely';
import { expect } from 'vitest';
import { describeOnEachBackend } from './harness.ts';

/**
 * Migration 0021: the bytea columns of float tensors are stored without compression (STORAGE
 * EXTERNAL), so a 4 MB update frame is not first run through pglz, which gives up on float data
 * only after ~3 MB (there: 170-194 -> 74 ms CPU per insert on PGlite; PostgreSQL server CPU per
 * 1M-parameter update 0.076 -> 0.022 s). What is stored and read back stays the same bytes.
 */
describeOnEachBackend('float-tensor columns stored uncompressed', (run) => {
  run('round_kept_updates.weights, models.weights, regional_models.weights and rounds.accumulator are STORAGE EXTERNAL', async (h) => {
    const { rows } = await sql<{ table: string; column: string; storage: string }>`
      select c.relname as table, a.attname as column, a.attstorage as storage
      from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = current_schema() and (c.relname, a.attname) in (('round_kept_updates', 'weights'), ('models', 'weights'), ('regional_models', 'weights'), ('rounds', 'accumulator'))
      order by 1, 2`.execute(h.built.db);
    expect(rows).toEqual([
      { table: 'models', column: 'weights', storage: 'e' },
      { table: 'regional_models', column: 'weights', storage: 'e' },
      { table: 'round_kept_updates', column: 'weights', storage: 'e' },
      { table: 'rounds', column: 'accumulator', storage: 'e' },
    ]);
    // A frame-like value (a JSON header, then floats) goes in and comes back byte for byte, stored at its own size.
    const header = new TextEncoder().encode(JSON.stringify({ tensors: Array.from({ length: 40 }, (_, i) => ({ name: `dense_${i}/kernel`, shape: [7, 1] })) }));
    const floats = new Uint8Array(Float32Array.from({ length: 50_000 }, (_, i) => Math.sin(i * 12.9898) * 0.05).buffer);
    const value = new Uint8Array(header.length + floats.length);
    value.set(header);
    value.set(floats, header.length);
    // One transaction: the temporary table lives on one connection (PostgreSQL's pool has several).
    const back = await h.built.db.transaction().execute(async (tx) => {
      await sql`create temporary table t_frame (v bytea) on commit drop`.execute(tx);
      await sql`alter table t_frame alter column v set storage external`.execute(tx);
      await sql`insert into t_frame values (${value})`.execute(tx);
      return (await sql<{ v: Uint8Array; size: number }>`select v, pg_column_size(v) as size from t_frame`.execute(tx)).rows[0];
    });
    expect(Buffer.from(back.v).equals(Buffer.from(value))).toBe(true);
    expect(Number(back.size)).toBe(value.length);
  });
});
