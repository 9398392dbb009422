/**
 * The coordinator's real per-update path, not just the in-memory fold: for each arriving update it
 * decodes the FMW1 body, resumes the round from the state persisted in the database, folds the
 * update in (FedAvg, plus a delta norm for the audit), re-serializes the state and writes it back
 * in a transaction (coordinator/rounds/round-service.ts, submitUpdate). Persisting the running sum
 * on every arrival is what lets a coordinator restart mid-round lose nothing; this bench prices
 * that choice against the pure accumulate figure of aggregation-bench.ts.
 *
 *   npx tsx bench/coordinator-path-bench.ts [--pglite-builtin]   # 10 updates x 1,000,000 parameters on PGlite, JSON
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PGlite } from '@electric-sql/pglite';
import { pgliteByteaOptions } from '../coordinator/db/pglite-bytea.ts';
import { FedAvg } from '../protocols/strategies/fedavg.ts';
import { emptyServerState } from '../protocols/strategies/server-state.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, encodeWeights } from '../protocols/weights-codec.ts';

export interface CoordinatorPathBenchResult {
  updates: number;
  parameters: number;
  database: 'pglite';
  /** How bytea crosses into PGlite: the coordinator's native hex conversion, or PGlite's built-in one (the "before"). */
  byteaConversion: ByteaConversion;
  /** Wall time over all updates: decode, resume, accept, state(), database write and commit. */
  seconds: number;
  /** updates * parameters * 4 bytes (the float32 payload) / seconds, in GB per second. */
  gbPerSecond: number;
  /** Of `seconds`: resume + accept + state() (CPU), and the database write (I/O). */
  foldSeconds: number;
  databaseSeconds: number;
  /** Size of the persisted round state (float64 sums), per write. */
  stateBytes: number;
  peakRssMb: number;
}

export type ByteaConversion = 'fedmark' | 'pglite-builtin';

export async function benchCoordinatorPath(opts: { updates: number; parameters: number; byteaConversion?: ByteaConversion }): Promise<CoordinatorPathBenchResult> {
  const { updates, parameters } = opts;
  const byteaConversion = opts.byteaConversion ?? 'fedmark';
  const half = Math.floor(parameters / 2);
  const global: WeightSet = [
    { name: 'dense_0/kernel', shape: [half], values: new Float32Array(half).map((_, i) => Math.sin(i) * 0.05) },
    { name: 'dense_1/kernel', shape: [parameters - half], values: new Float32Array(parameters - half).map((_, i) => Math.cos(i) * 0.05) },
  ];
  const specs = global.map(({ name, shape }) => ({ name, shape }));
  const frames = [0, 1, 2].map((k) => encodeWeights(global.map((t) => ({ ...t, values: t.values.map((v) => v + (k + 1) * 1e-3) })), 'float32'));

  const dir = mkdtempSync(join(tmpdir(), 'fedmark-bench-coordinator-'));
  const db = new PGlite(dir, byteaConversion === 'fedmark' ? pgliteByteaOptions : {});
  try {
    await db.exec('CREATE TABLE rounds (id int PRIMARY KEY, accumulator bytea)');
    await db.query('INSERT INTO rounds (id, accumulator) VALUES (1, NULL)');
    const strategy = new FedAvg();
    const serverState = emptyServerState();
    const context = { round: 1, participants: updates };
    let seconds = 0;
    let foldSeconds = 0;
    let databaseSeconds = 0;
    let stateBytes = 0;
    let peakRss = process.memoryUsage.rss();
    for (let u = 0; u < updates; u++) {
      const t0 = performance.now();
      let t1 = t0;
      await db.transaction(async (tx) => {
        const row = await tx.query<{ accumulator: Uint8Array | null }>('SELECT accumulator FROM rounds WHERE id = 1 FOR UPDATE');
        const stored = row.rows[0].accumulator;
        const update = decodeWeights(frames[u % frames.length], { expected: specs, dtype: 'float32' });
        const round = stored ? strategy.aggregateFit(global, serverState, context, { state: stored, kept: [] }) : strategy.aggregateFit(global, serverState, context);
        round.accept(update, 100 + u);
        const state = round.state();
        stateBytes = state.byteLength;
        t1 = performance.now();
        await tx.query('UPDATE rounds SET accumulator = $1 WHERE id = 1', [state]);
      });
      const t2 = performance.now();
      seconds += (t2 - t0) / 1000;
      foldSeconds += (t1 - t0) / 1000;
      databaseSeconds += (t2 - t1) / 1000;
      peakRss = Math.max(peakRss, process.memoryUsage.rss());
    }
    // A fast but broken path must not produce a figure: the persisted state must resume to a finite mean.
    const final = await db.query<{ accumulator: Uint8Array }>('SELECT accumulator FROM rounds WHERE id = 1');
    const outcome = strategy.aggregateFit(global, serverState, context, { state: final.rows[0].accumulator, kept: [] }).finish([]);
    if (!outcome.weights || outcome.weights.some((t) => t.values.some((x) => !Number.isFinite(x)))) throw new Error('coordinator path bench produced an invalid mean');
    return { updates, parameters, database: 'pglite', byteaConversion, seconds, gbPerSecond: (updates * parameters * 4) / seconds / 1e9, foldSeconds, databaseSeconds, stateBytes, peakRssMb: peakRss / (1024 * 1024) };
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('coordinator-path-bench.ts')) {
  const byteaConversion = process.argv.includes('--pglite-builtin') ? 'pglite-builtin' : 'fedmark';
  console.log(JSON.stringify(await benchCoordinatorPath({ updates: 10, parameters: 1_000_000, byteaConversion }), null, 2));
}
