import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { encodeWeights, decodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { foldCacheOf } from '../../coordinator/rounds/fold-cache.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { bytesOrJson, defaultMeta, inProcessCoordinator, tinyStudy, type TestNode } from './harness.ts';

/**
 * Issue 13: each update is stored once and folded in memory; the fold is checked against the
 * stored updates and rebuilt from them after a restart or when it is stale. The results must be
 * the same bits as a coordinator that never restarted, and the round row is never rewritten.
 */

/** Deterministic weights with full float32 mantissas, so the order and form of every addition matter. */
function weightsOf(seed: number, scale = 1): WeightSet {
  const v = (i: number) => Math.fround(scale * Math.sin(seed * 12.9898 + i * 78.233) * 0.7);
  return [
    { name: 'dense_0/kernel', shape: [7, 1], values: Float32Array.from({ length: 7 }, (_, i) => v(i)) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v(7)]) },
  ];
}

// Node 1's update is past the norm bound: the fold takes its clipped (float64) form.
const BOUNDED = { bounds: { maxUpdateNorm: 1.5, onOversizedUpdate: 'clip' as const, maxAbsWeight: 100 } };
const updates = [weightsOf(1), weightsOf(2, 4), weightsOf(3)];
const examples = [13, 29, 7];

for (const backendName of BACKEND_NAMES) {
  describe(`the per-update fold (issue 13) on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend);
    });
    afterAll(async () => {
      await h?.close();
    });
    const run = (name: string, fn: (hh: NonNullable<typeof h>) => Promise<void>) =>
      it(name, async (ctx) => {
        if (!h) return ctx.skip();
        await fn(h);
      }, 60_000);

    /** A 3-node study with round 1 open; `between(k)` runs after the k-th accepted update. */
    async function oneRound(hh: NonNullable<typeof h>, overrides: Parameters<typeof tinyStudy>[0], between: (k: number, studyId: string) => Promise<void> = async () => {}) {
      const studyId = await hh.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 3, ...overrides }));
      const nodes: TestNode[] = [];
      for (const name of ['a', 'b', 'c']) nodes.push(await hh.enroll(studyId, name));
      await hh.until(async () => ((await hh.nodeGet(nodes[0], '/v1/tasks/next')).status === 200 ? true : undefined));
      for (let k = 0; k < nodes.length; k++) {
        const res = await hh.submit(nodes[k], studyId, 1, encodeWeights(updates[k]), defaultMeta(examples[k]));
        expect(res.status).toBe(201);
        await between(k + 1, studyId);
      }
      await hh.until(async () => ((await hh.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      const v1 = await hh.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson);
      return { studyId, model: new Uint8Array(v1.body) };
    }

    run('a restart mid-round publishes the same model, bit for bit, as no restart (FedAvg with a clipped update)', async (hh) => {
      const plain = await oneRound(hh, BOUNDED);
      const restarted = await oneRound(hh, BOUNDED, async (k, studyId) => {
        if (k !== 2) return;
        // The second update was clipped: what is stored is the bounded form (float64), not the received frame.
        const stored = await hh.built.db.selectFrom('round_kept_updates').select('weights').where('study_id', '=', studyId).orderBy('seq').execute();
        expect(stored[1].weights.byteLength).toBeGreaterThan(encodeWeights(updates[1]).byteLength);
        await hh.restart();
      });
      expect(sha256Hex(restarted.model)).toBe(sha256Hex(plain.model));
      // The clipped update did enter (the mean is not the unclipped one).
      const unclipped = (13 * updates[0][1].values[0] + 29 * updates[1][1].values[0] + 7 * updates[2][1].values[0]) / 49;
      expect(decodeWeights(plain.model)[1].values[0]).not.toBeCloseTo(unclipped, 3);
    });

    run('a restart mid-round publishes the same model bit for bit for median (every-update) too', async (hh) => {
      const study = { strategy: { name: 'median' as const } };
      const plain = await oneRound(hh, study);
      const restarted = await oneRound(hh, study, async (k) => {
        if (k === 1) await hh.restart();
      });
      expect(sha256Hex(restarted.model)).toBe(sha256Hex(plain.model));
    });

    run('a stale in-memory fold (its count no longer the stored count) is detected and rebuilt from the stored updates', async (hh) => {
      const plain = await oneRound(hh, BOUNDED);
      const stale = await oneRound(hh, BOUNDED, async (k, studyId) => {
        if (k !== 2) return;
        const entry = foldCacheOf(hh.built.db).get(`${studyId}\u00001`)!;
        expect(entry.count).toBe(2);
        // Poison the fold with an update the database never stored, and claim it was counted:
        // trusted, it would be in the published model.
        entry.aggregation.accept(weightsOf(9), 1000);
        entry.count += 1;
      });
      expect(sha256Hex(stale.model)).toBe(sha256Hex(plain.model));
    });

    run('an update writes O(update): the round row is not rewritten, the update is stored once at its own size', async (hh) => {
      let before: { xmin: string; accumulator: Uint8Array } | undefined;
      await oneRound(hh, {}, async (k, studyId) => {
        const row = (await sql<{ xmin: string; accumulator: Uint8Array }>`select xmin::text as xmin, accumulator from rounds where study_id = ${studyId} and round = 1`.execute(hh.built.db)).rows[0];
        const stored = await hh.built.db.selectFrom('round_kept_updates').select(['node_id', 'weights', 'weight']).where('study_id', '=', studyId).orderBy('seq').execute();
        if (k === 1) before = row;
        if (k !== 2) return;
        // The round row was not written by the second update; it holds no 8-bytes-a-parameter
        // state at all (only central DP stores its noised opening state), so locking it reads none.
        expect(row.xmin).toBe(before!.xmin);
        expect(row.accumulator).toBeNull();
        // Each update stored once, as received (within the bound): its own size, with its weight.
        expect(stored.map((r) => r.weights.byteLength)).toEqual([encodeWeights(updates[0]).byteLength, encodeWeights(updates[1]).byteLength]);
        expect(stored.map((r) => r.weight)).toEqual([examples[0], examples[1]]);
      });
    });
  });
}
