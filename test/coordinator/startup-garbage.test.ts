import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { afterAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { loadCoordinatorConfig } from '../../coordinator/config.ts';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.ts';

// Issue 13 (coordinator peak RSS): unlocking the coordinator's key (OpenPGP's iterated S2K over a
// 16 MB buffer) and the migrations leave dead ArrayBuffers that V8 kept until a major GC late in the
// study; the coordinator collects them once, before it listens.
describe('coordinator start-up', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-startup-gc-'));
  const running: RunningCoordinator[] = [];
  afterAll(async () => {
    for (const c of running) await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves no start-up garbage in ArrayBuffers once listening (a second start unlocks the existing key)', async () => {
    const config = loadCoordinatorConfig({}, { adminToken: 'startup-gc-admin-token-0123456789', keyPassphrase: 'startup-gc-passphrase', keyDir: join(dir, 'keys'), dataDir: join(dir, 'db'), port: 0 });
    const before = process.memoryUsage().arrayBuffers;
    const first = await startCoordinator(config, pino({ level: 'silent' }));
    await first.close();
    const gcs: PerformanceEntry[] = [];
    const observer = new PerformanceObserver((list) => gcs.push(...list.getEntries()));
    observer.observe({ entryTypes: ['gc'] });
    const second = await startCoordinator(config, pino({ level: 'silent' }));
    running.push(second);
    const grown = (process.memoryUsage().arrayBuffers - before) / (1024 * 1024);
    await new Promise((r) => setImmediate(r)); // gc entries are delivered asynchronously
    observer.disconnect();
    // The collection itself, not a major GC V8 happened to run (one did in about half the runs without it).
    const forced = gcs.filter((e) => ((e as PerformanceEntry & { detail?: { kind: number; flags: number } }).detail?.flags ?? 0) & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED);
    expect(forced.length).toBeGreaterThan(0);
    // Measured: ~9 MB with the collection (the live coordinator's own buffers), ~42 MB without (the
    // dead S2K buffers of both starts, the first coordinator's PGlite buffers). Under the full
    // suite's load it read 25 and once 41 MB with the collection, so this bound cannot tell the two
    // apart there: the forced-GC check above is the mechanism's test (it fails without the
    // collection); this one only catches gross retention (both coordinators' buffers kept alive).
    expect(grown).toBeLessThan(64);
  }, 120_000);

  it('the old generation grows a bounded step past live data before the next full GC (after a start)', () => {
    // Runs after the start above (the setting is process-wide). 64 MB stays live in a sliding
    // window while 640 MB pass through it into the old generation: the growth step is then a
    // multiple of the live data, which is what the setting bounds. Measured (plain node, same
    // loop): 103-122 MB over the base with the 25% step, 292-296 MB with V8's default factor. A
    // 16 MB window separated them too little (109-155 against 108-116: the suite flaked on it).
    const old = () => getHeapSpaceStatistics().find((x) => x.space_name === 'old_space')!.space_used_size;
    const base = old();
    let peak = 0;
    const window: number[][] = [];
    for (let i = 0; i < 80_000; i++) {
      window.push(new Array(1000).fill(i));
      if (window.length > 8000) window.shift();
      if (i % 100 === 0) peak = Math.max(peak, old());
    }
    expect((peak - base) / 1e6).toBeLessThan(200);
  }, 60_000);
});

