/**
 * The coordinator's real per-update path, not just the in-memory fold: for each arriving update it
 * decodes the FMW1 body, resumes the round from the state persisted in the database, folds the
 * update in (FedAvg, plus a delta norm for the audit), re-serializes the state and writes it back
 * in a transaction (coordinator/rounds/round-service.ts, submitUpdate). Persisting the running sum
 * on every arrival is what lets a coordinator restart mid-round lose nothing; this bench prices
 * that choice against the pure accumulate figure of aggregation-bench.ts.
 *
 *   npx tsx bench/coordinator-path-bench.ts --standalone [--pglite-builtin]   # 10 updates x 1,000,000 parameters on PGlite, JSON
 *
 * and, below, the REAL service path (issue 13): the round service's submitUpdate on a 1M-parameter
 * study, on PGlite or PostgreSQL (TEST_DATABASE_URL), one JSON line:
 *
 *   node bin/run-ts.js bench/coordinator-path-bench.ts [--postgres] [--label=after] [--updates=10] [--warmup=30] [--round=1]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PGlite } from '@electric-sql/pglite';
import { pgliteByteaOptions } from '../coordinator/db/pglite-bytea.ts';
import { FedAvg } from '../protocols/strategies/fedavg.ts';
import { emptyServerState } from '../protocols/strategies/server-state.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, decodeWeightsView, encodeWeights } from '../protocols/weights-codec.ts';
import { WeightedMeanAccumulator } from '../protocols/aggregation/fedavg.ts';

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

// ---- the real service path (issue 13) ------------------------------------------------------------

export interface ServicePathResult {
  database: 'pglite' | 'postgres';
  updates: number;
  parameters: number;
  /** Size of one update's FMW1 body (float32). */
  updateBytes: number;
  /** Wall time of the round service's submitUpdate (what the HTTP route calls after the OpenPGP checks): decode, lock, fold, store, audit, commit. */
  secondsPerUpdate: number;
  medianSecondsPerUpdate: number;
  maxSecondsPerUpdate: number;
  /** Write-ahead log written per update (PostgreSQL: cluster-wide, so other sessions' writes count too). */
  walBytesPerUpdate: number;
  /** Growth of the database's files per update (new row versions, TOAST, indexes; dead versions included). */
  databaseGrowthBytesPerUpdate: number;
  /** The fit phase's close after the updates: finish from the fold, sign, publish. */
  closeSeconds: number;
  /** Peak resident set size of this process (coordinator in process), from process.resourceUsage(). */
  peakRssMb: number;
  /**
   * CPU seconds per update (user + system): this process (the coordinator, and PGlite, which runs
   * in it) and, on PostgreSQL, the server's backends serving this database (/proc/<pid>/stat).
   * On a loaded machine the wall figures include waiting for a CPU; these do not.
   */
  cpuSecondsPerUpdate: number;
  serverCpuSecondsPerUpdate: number | null;
  /**
   * The "decode, fold, persist" of one update, each timed alone on the same database
   * (median of the updates): zero-copy decode with its finiteness check, the FedAvg fold into a
   * float64 accumulator, and one transaction inserting the update's bytes as a bytea row, committed.
   */
  components: { decodeSeconds: number; foldSeconds: number; persistSeconds: number; totalSeconds: number; persistCpuSeconds: number };
  /** os.loadavg() at start and end. */
  loadAverage: { start: number[]; end: number[] };
  /**
   * 4 MB inserts (and decodes and folds) run before the timed updates (--warmup=N; 0 by default,
   * the figure of a coordinator process's first updates). PGlite's WebAssembly runs in V8's
   * baseline code (Liftoff) until its hot functions are tiered up: the first ~20 such inserts of a
   * fresh process cost ~3x the CPU of later ones (measured: one process, 30 inserts of 4 MB
   * through the coordinator's own handle, 146 -> 90 -> 38 ms CPU medians of each 10), and a
   * running coordinator is past that after its first round of 1M-parameter updates.
   */
  warmup: number;
  /**
   * Which round's updates were timed: 2 (the default), a running coordinator's, after a round of
   * the same updates aggregated and closed; 1 (--round=1), a new database's first round, whose
   * every stored update grows the table files (zeros first, then the data: migration 0022).
   */
  timedRound: 1 | 2;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux: /proc/<pid>/stat's utime and stime unit

/** CPU seconds (user + system) of the given processes so far; 0 for one that is gone or unreadable. */
function processCpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
    } catch {
      // exited, or not this machine's process
    }
  }
  return ticks / CLOCK_TICKS;
}

const selfCpuSeconds = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** hidden [1000, 990] on the harness's 7 inputs: 7*1000+1000 + 1000*990+990 + 990+1 = 999,981 parameters. */
const MILLION_HIDDEN = [1000, 990];

/**
 * Runs the coordinator's own update path (round service -> intake -> fold -> database) on a fresh
 * database: a study of a 1M-parameter MLP, updates+1 ready nodes (so the round stays open through
 * the timed updates), each update timed around `rounds.submitUpdate`. Then the deadline passes and
 * the close is timed. The test harness builds the coordinator exactly as `fedmark coordinator` does.
 */
export async function benchServicePath(opts: { database: 'pglite' | 'postgres'; updates: number; warmup?: number; round?: 1 | 2 }): Promise<ServicePathResult> {
  const timedRound = opts.round ?? 2;
  const { inProcessCoordinator, tinyStudy, defaultMeta } = await import('../test/coordinator/harness.ts');
  const { backendOrSkip } = await import('../test/helpers/databases.ts');
  const { sql } = await import('kysely');
  const backend = await backendOrSkip(opts.database);
  if (!backend) throw new Error(`${opts.database} is not reachable (TEST_DATABASE_URL)`);
  const h = await inProcessCoordinator(backend);
  const start = loadavg();
  try {
    const n = opts.updates;
    const studyId = await h.createStudy(tinyStudy({ model: { kind: 'mlp', hidden: MILLION_HIDDEN }, rounds: timedRound, minNodesPerRound: n, minNodesToStart: n + 1, roundDeadlineSeconds: 3600 }));
    const nodes = [];
    for (let i = 0; i <= n; i++) nodes.push(await h.enroll(studyId, `node-${i}`));
    const phaseOf = async (round: number) => (await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst())?.phase;
    await h.until(async () => ((await phaseOf(1)) === 'fit' ? true : undefined), 120_000);
    const modelOf = async (version: number) => decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/${version}`).buffer(true).parse((await import('../test/coordinator/harness.ts')).bytesOrJson)).body));
    if (timedRound === 2) {
      // A running coordinator's round: round 1 takes the same updates untimed, aggregates (its
      // stored updates dropped, their space freed: round-repository.ts reclaimKeptUpdateSpace) and
      // closes; round 2's are timed. Round 1 of a new database grows every table it writes to.
      const first = await modelOf(0);
      for (let u = 0; u < n; u++) {
        const node = await h.built.nodes.authenticate(nodes[u].apiKey);
        await h.built.rounds.submitUpdate(node, studyId, 1, defaultMeta(100 + u), encodeWeights(first.map((t) => ({ ...t, values: t.values.map((v, i) => v + (u + 1) * 1e-3 * Math.cos(i)) })), 'float32'));
      }
      h.advanceClock(3601_000);
      await h.built.rounds.advanceRound(studyId, 1);
      await h.built.rounds.idle();
      h.advanceClock(3601_000);
      await h.built.rounds.advanceRound(studyId, 1);
      await h.until(async () => ((await phaseOf(2)) === 'fit' ? true : undefined), 120_000);
    }
    const global = await modelOf(timedRound - 1);
    const parameters = global.reduce((s, t) => s + t.values.length, 0);
    const frames = [0, 1, 2].map((k) => encodeWeights(global.map((t) => ({ ...t, values: t.values.map((v, i) => v + (k + 1) * 1e-3 * Math.sin(i)) })), 'float32'));
    const probe = async () => {
      const r = await sql<{ lsn: string; size: string }>`select pg_current_wal_lsn()::text as lsn, pg_database_size(current_database())::text as size`.execute(h.built.db);
      return r.rows[0];
    };
    const walDiff = async (a: string, b: string) => Number((await sql<{ d: string }>`select pg_wal_lsn_diff(${b}::pg_lsn, ${a}::pg_lsn)::text as d`.execute(h.built.db)).rows[0].d);
    const serverPids = async () =>
      opts.database === 'postgres' ? (await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database()`.execute(h.built.db)).rows.map((r) => Number(r.pid)) : [];
    const warmup = opts.warmup ?? 0;
    if (warmup > 0) await warmUp(h.built.db, global, frames, warmup);
    const times: number[] = [];
    let cpu = 0;
    let serverCpu = 0;
    let wal = 0;
    let growth = 0;
    for (let u = 0; u < n; u++) {
      const node = await h.built.nodes.authenticate(nodes[u].apiKey);
      const before = await probe();
      const pids = await serverPids();
      const s0 = processCpuSeconds(pids);
      const c0 = selfCpuSeconds();
      const t0 = performance.now();
      await h.built.rounds.submitUpdate(node, studyId, timedRound, defaultMeta(100 + u), frames[u % frames.length]);
      times.push((performance.now() - t0) / 1000);
      cpu += selfCpuSeconds() - c0;
      serverCpu += processCpuSeconds(pids) - s0;
      const after = await probe();
      wal += await walDiff(before.lsn, after.lsn);
      growth += Number(after.size) - Number(before.size);
      process.stderr.write(`update ${u + 1}: ${times[u].toFixed(3)} s, WAL ${await walDiff(before.lsn, after.lsn)} bytes\n`);
    }
    const components = await componentTimes(h.built.db, global, frames, serverPids);
    h.advanceClock(3601_000);
    const t0 = performance.now();
    await h.built.rounds.advanceRound(studyId, timedRound);
    const closeSeconds = (performance.now() - t0) / 1000;
    const phase = await phaseOf(timedRound);
    if (phase !== 'evaluate') throw new Error(`the round did not aggregate (phase ${phase})`);
    const sorted = [...times].sort((a, b) => a - b);
    return {
      database: opts.database,
      updates: n,
      parameters,
      updateBytes: frames[0].byteLength,
      secondsPerUpdate: times.reduce((s, x) => s + x, 0) / n,
      medianSecondsPerUpdate: sorted[Math.floor(n / 2)],
      maxSecondsPerUpdate: sorted[n - 1],
      walBytesPerUpdate: wal / n,
      databaseGrowthBytesPerUpdate: growth / n,
      closeSeconds,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      cpuSecondsPerUpdate: cpu / n,
      serverCpuSecondsPerUpdate: opts.database === 'postgres' ? serverCpu / n : null,
      components,
      loadAverage: { start, end: loadavg() },
      warmup,
      timedRound,
    };
  } finally {
    await h.close();
  }
}

/** `n` untimed decodes, folds and 4 MB inserts in a scratch table (see ServicePathResult.warmup). */
async function warmUp(db: import('kysely').Kysely<import('../coordinator/db/schema.ts').Database>, global: WeightSet, frames: Uint8Array[], n: number): Promise<void> {
  const { sql } = await import('kysely');
  const specs = global.map(({ name, shape }) => ({ name, shape }));
  const accumulator = new WeightedMeanAccumulator(specs);
  await sql`create table bench_warmup (seq int primary key, weights bytea not null)`.execute(db);
  for (let u = 0; u < n; u++) {
    const frame = frames[u % frames.length];
    accumulator.add(decodeWeightsView(frame, { expected: specs, dtype: 'float32' }), 1);
    await db.transaction().execute((tx) => sql`insert into bench_warmup (seq, weights) values (${u}, ${frame})`.execute(tx));
  }
  await sql`drop table bench_warmup`.execute(db);
}

/**
 * Decode, fold and persist of the same 1M-parameter frames, each timed alone (median of 10), on
 * the bench's database: what the coordinator path costs without the round's bookkeeping (auth,
 * claims, audit chain), which bench figures `secondsPerUpdate` include.
 */
async function componentTimes(db: import('kysely').Kysely<import('../coordinator/db/schema.ts').Database>, global: WeightSet, frames: Uint8Array[], serverPids: () => Promise<number[]>): Promise<ServicePathResult['components']> {
  const { sql } = await import('kysely');
  const specs = global.map(({ name, shape }) => ({ name, shape }));
  const accumulator = new WeightedMeanAccumulator(specs);
  await sql`create table bench_kept (seq int primary key, weights bytea not null)`.execute(db);
  const decode: number[] = [];
  const fold: number[] = [];
  const persist: number[] = [];
  const persistCpu: number[] = [];
  for (let u = 0; u < 10; u++) {
    const frame = frames[u % frames.length];
    const t0 = performance.now();
    const update = decodeWeightsView(frame, { expected: specs, dtype: 'float32' });
    const t1 = performance.now();
    accumulator.add(update, 100 + u);
    const t2 = performance.now();
    const pids = await serverPids();
    const s0 = processCpuSeconds(pids);
    const c0 = selfCpuSeconds();
    const t3 = performance.now();
    await db.transaction().execute((tx) => sql`insert into bench_kept (seq, weights) values (${u}, ${frame})`.execute(tx));
    persist.push((performance.now() - t3) / 1000);
    persistCpu.push(selfCpuSeconds() - c0 + processCpuSeconds(pids) - s0);
    decode.push((t1 - t0) / 1000);
    fold.push((t2 - t1) / 1000);
  }
  await sql`drop table bench_kept`.execute(db);
  const components = { decodeSeconds: median(decode), foldSeconds: median(fold), persistSeconds: median(persist), persistCpuSeconds: median(persistCpu) };
  return { ...components, totalSeconds: components.decodeSeconds + components.foldSeconds + components.persistSeconds };
}

if (process.argv[1]?.endsWith('coordinator-path-bench.ts')) {
  if (process.argv.includes('--standalone')) {
    const byteaConversion = process.argv.includes('--pglite-builtin') ? 'pglite-builtin' : 'fedmark';
    console.log(JSON.stringify(await benchCoordinatorPath({ updates: 10, parameters: 1_000_000, byteaConversion }), null, 2));
  } else {
    // One database per process, so each peak RSS is that database's own.
    const database = process.argv.includes('--postgres') ? 'postgres' : 'pglite';
    const label = process.argv.find((a) => a.startsWith('--label='))?.slice('--label='.length);
    const updates = Number(process.argv.find((a) => a.startsWith('--updates='))?.slice('--updates='.length) ?? 10);
    const warmup = Number(process.argv.find((a) => a.startsWith('--warmup='))?.slice('--warmup='.length) ?? 0);
    const round = process.argv.includes('--round=1') ? 1 : 2;
    console.log(JSON.stringify({ ...(label ? { label } : {}), ...(await benchServicePath({ database, updates, warmup, round })) }));
  }
  process.exit(0);
}

