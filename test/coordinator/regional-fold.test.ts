import { expect } from 'vitest';
import { sql } from 'kysely';
import { decodeWeights, encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { bytesOrJson, defaultMeta, describeOnEachBackend, tinyStudy, type Harness, type TestNode } from './harness.ts';

/**
 * Issue 13: regional models are folded at close from the round's stored updates, never from a
 * running sum rewritten on every update. An update's transaction writes about the update's own
 * size; a restart mid-round publishes the same regional model, bit for bit.
 */


/** `like`'s tensors with deterministic full-mantissa float32 values. */
function weightsLike(like: WeightSet, seed: number): WeightSet {
  return like.map((t, k) => ({ name: t.name, shape: [...t.shape], values: Float32Array.from({ length: t.values.length }, (_, i) => Math.fround(Math.sin(seed * 12.9898 + (i + 31 * k) * 78.233) * 0.7)) }));
}

/** Every row any table holds that the transaction which inserted `nodeId`'s update wrote, by table: rows and bytes. */
async function writtenWithUpdate(h: Harness, studyId: string, nodeId: string): Promise<Record<string, { rows: number; bytes: number }>> {
  const db = h.built.db;
  const { xmin } = (await sql<{ xmin: string }>`select xmin::text as xmin from updates where study_id = ${studyId} and node_id = ${nodeId}`.execute(db)).rows[0];
  const tables = (await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'`.execute(db)).rows;
  const written: Record<string, { rows: number; bytes: number }> = {};
  for (const { name } of tables) {
    const r = (await sql<{ rows: string; bytes: string | null }>`select count(*)::text as rows, sum(pg_column_size(t.*))::text as bytes from ${sql.table(name)} t where t.xmin::text = ${xmin}`.execute(db)).rows[0];
    if (Number(r.rows) > 0) written[name] = { rows: Number(r.rows), bytes: Number(r.bytes) };
  }
  return written;
}

const regionalModel = async (h: Harness, studyId: string, region: string) => {
  const res = await h.admin('get', `/v1/studies/${studyId}/regions/${region}/model`).buffer(true).parse(bytesOrJson);
  expect(res.status).toBe(200);
  return new Uint8Array(res.body);
};

describeOnEachBackend('regional models folded at close from the stored updates (issue 13)', (run) => {
  /**
   * One round of three EU nodes and one US node; `between(k)` runs after the k-th accepted
   * update. Returns the EU regional model and the nodes.
   */
  async function regionalRound(hh: Harness, overrides: Parameters<typeof tinyStudy>[0], between: (k: number, studyId: string, nodes: TestNode[]) => Promise<void> = async () => {}) {
    const studyId = await hh.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: 4, roundDeadlineSeconds: 600, ...overrides }));
    const nodes: TestNode[] = [];
    for (const [name, region] of [['e1', 'eu'], ['u1', 'us'], ['e2', 'eu'], ['e3', 'eu']]) nodes.push(await hh.enroll(studyId, name, true, region));
    await hh.until(async () => ((await hh.nodeGet(nodes[0], '/v1/tasks/next')).status === 200 ? true : undefined));
    const global = decodeWeights(new Uint8Array((await hh.admin('get', `/v1/studies/${studyId}/models/0`).buffer(true).parse(bytesOrJson)).body));
    const sent = nodes.map((_, k) => weightsLike(global, k + 1));
    const examples = [13, 5, 29, 7];
    for (let k = 0; k < nodes.length; k++) {
      expect((await hh.submit(nodes[k], studyId, 1, encodeWeights(sent[k]), defaultMeta(examples[k]))).status).toBe(201);
      await between(k + 1, studyId, nodes);
    }
    await hh.until(async () => ((await hh.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
    return { studyId, nodes, sent, examples, eu: await regionalModel(hh, studyId, 'eu') };
  }

  run("the region's model is the weighted mean of exactly its nodes' stored updates, the same bits after a restart mid-round", async (hh) => {
    const plain = await regionalRound(hh, {});
    // The mean of e1, e2, e3 (not u1), each with its own weight.
    const eu = [0, 2, 3];
    const total = eu.reduce((s, k) => s + plain.examples[k], 0);
    const model = decodeWeights(plain.eu);
    model.forEach((t, j) => {
      for (const i of new Set([0, t.values.length >> 1, t.values.length - 1])) expect(t.values[i]).toBeCloseTo(eu.reduce((s, k) => s + plain.examples[k] * plain.sent[k][j].values[i], 0) / total, 6);
    });
    const restarted = await regionalRound(hh, {}, async (k) => {
      if (k === 2) await hh.restart();
    });
    expect(sha256Hex(restarted.eu)).toBe(sha256Hex(plain.eu));
    // Stored updates and any running sum are gone once the round is aggregated.
    expect(await hh.built.db.selectFrom('round_kept_updates').select('seq').where('study_id', '=', restarted.studyId).execute()).toEqual([]);
    expect(await hh.built.db.selectFrom('regional_accumulators').select('region').where('study_id', '=', restarted.studyId).execute()).toEqual([]);
  });

  run('with a clipped update the regional model takes its bounded form, the same bits after a restart', async (hh) => {
    const bounded = { bounds: { maxUpdateNorm: 1.5, onOversizedUpdate: 'clip' as const, maxAbsWeight: 100 } };
    const plain = await regionalRound(hh, bounded);
    const restarted = await regionalRound(hh, bounded, async (k) => {
      if (k === 3) await hh.restart();
    });
    expect(sha256Hex(restarted.eu)).toBe(sha256Hex(plain.eu));
    const unclipped = [0, 2, 3].reduce((s, k) => s + plain.examples[k] * plain.sent[k][0].values[0], 0) / 49;
    expect(decodeWeights(plain.eu)[0].values[0]).not.toBeCloseTo(unclipped, 3);
  });

  run("an update's transaction writes about the update's size: no regional (or global) running sum per update", async (hh) => {
    // 5 inputs x 4096 hidden: ~29k parameters, a 115 kB float32 update; a float64 sum is 230 kB.
    const big = { model: { kind: 'mlp' as const, hidden: [4096] } };
    let checked = 0;
    await regionalRound(hh, big, async (k, studyId, nodes) => {
      if (k === 4) return; // the last update closes the round, which drops the stored updates
      const written = await writtenWithUpdate(hh, studyId, nodes[k - 1].nodeId);
      const kept = written.round_kept_updates;
      expect(kept?.rows).toBe(1);
      expect(kept.bytes).toBeGreaterThan(100_000);
      const total = Object.values(written).reduce((s, w) => s + w.bytes, 0);
      expect(written.regional_accumulators, JSON.stringify(written)).toBeUndefined();
      expect(written.rounds, JSON.stringify(written)).toBeUndefined();
      // The stored update plus a few small rows (update record, audit entry, node last seen).
      expect(total - kept.bytes, JSON.stringify(written)).toBeLessThan(20_000);
      checked++;
    });
    expect(checked).toBe(3);
  });
}, 90_000);
