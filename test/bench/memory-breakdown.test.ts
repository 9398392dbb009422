import { PGlite } from '@electric-sql/pglite';
import { afterAll, describe, expect, it } from 'vitest';
import { smapsBreakdown } from '../../bench/sim/memory-breakdown.ts';

/**
 * The scale bench splits the coordinator's RSS to tell PGlite's WebAssembly memory (which never
 * shrinks) from the malloc and V8 heaps. This process opens a PGlite, so its smaps must show a
 * wasm part, and the parts must add up to the whole.
 */
describe('smapsBreakdown', () => {
  const db = new PGlite();
  afterAll(() => db.close());

  it('finds PGlite’s wasm memory and splits all of the RSS', { timeout: 120_000 }, async () => {
    await db.query('select 1');
    const m = smapsBreakdown(process.pid)!;
    // PGlite's linear memory alone is > 16 MB resident once Postgres has started.
    expect(m.wasmRssMb).toBeGreaterThan(16);
    expect(m.otherAnonRssMb).toBeGreaterThan(0);
    expect(m.fileRssMb).toBeGreaterThan(0);
    expect(Math.abs(m.wasmRssMb + m.brkHeapRssMb + m.otherAnonRssMb + m.fileRssMb - m.rssMb)).toBeLessThan(0.01);
  });
});
