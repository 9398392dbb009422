import { expect } from 'vitest';
import { sql } from 'kysely';
import { KEPT_SPACE_RECLAIM_BYTES } from '../../coordinator/rounds/round-repository.ts';
import { decodeWeights, encodeWeights } from '../../protocols/weights-codec.ts';
import { bytesOrJson, defaultMeta, describeOnEachBackend, tinyStudy, type Harness, type TestNode } from './harness.ts';

/**
 * Issue 13 (migration 0022, round-repository.ts reclaimKeptUpdateSpace): the space of a closed
 * round's stored updates is reused by the next round's. PGlite runs no autovacuum, so without the
 * coordinator's own VACUUM every update ever received stayed in the file; and a file that grows
 * is written twice (zeros, then data). PostgreSQL leaves it to autovacuum; both keep the pages
 * (vacuum_truncate off), so a vacuum never hands them back only for the next round to extend again.
 */

/** Bytes of round_kept_updates' TOAST table, where every update of this size lives. */
async function keptUpdateBytes(h: Harness): Promise<number> {
  const { rows } = await sql<{ bytes: string }>`
    select pg_relation_size(c.reltoastrelid)::text as bytes from pg_class c where c.relname = 'round_kept_updates'`.execute(h.built.db);
  return Number(rows[0].bytes);
}

async function reloptions(h: Harness, toast: boolean): Promise<string[]> {
  const { rows } = toast
    ? await sql<{ o: string[] | null }>`select t.reloptions as o from pg_class c join pg_class t on t.oid = c.reltoastrelid where c.relname = 'round_kept_updates'`.execute(h.built.db)
    : await sql<{ o: string[] | null }>`select reloptions as o from pg_class where relname = 'round_kept_updates'`.execute(h.built.db);
  return rows[0].o ?? [];
}

/** Round `round`'s updates from every node (the previous model, shifted per node), sent as nodes send them. */
async function trainRound(h: Harness, studyId: string, round: number, nodes: TestNode[]): Promise<void> {
  const res = await h.admin('get', `/v1/studies/${studyId}/models/${round - 1}`).buffer(true).parse(bytesOrJson);
  const global = decodeWeights(new Uint8Array(res.body));
  for (let k = 0; k < nodes.length; k++) {
    const update = global.map((t) => ({ ...t, values: t.values.map((v, i) => v + 1e-3 * (k + 1) * Math.sin(i + round)) }));
    const sent = await h.submit(nodes[k], studyId, round, encodeWeights(update), defaultMeta(20 + k));
    expect(sent.status).toBe(201);
  }
}

describeOnEachBackend('the space of a closed round\'s updates (issue 13)', (run) => {
  run('round_kept_updates and its TOAST table keep their pages when vacuumed', async (h) => {
    expect(await reloptions(h, false)).toContain('vacuum_truncate=false');
    expect(await reloptions(h, true)).toContain('vacuum_truncate=false');
  });

  run('PGlite creates a WAL segment without writing 16 MB of zeros first', async (h) => {
    const { rows } = await sql<{ p: boolean; zero: string; plans: string }>`select version() like '%PGlite%' as p, current_setting('wal_init_zero') as zero, current_setting('plan_cache_mode') as plans`.execute(h.built.db);
    if (rows[0].p) expect(rows[0].zero).toBe('off');
    // Prepared statements keep their generic plan (database.ts): no re-planning per execution.
    if (rows[0].p) expect(rows[0].plans).toBe('force_generic_plan');
  });

  run('each round writes its updates into the space the previous round freed (PGlite vacuums it)', async (h) => {
    if (h.built.db && !(await sql<{ p: boolean }>`select version() like '%PGlite%' as p`.execute(h.built.db)).rows[0].p) return; // PostgreSQL: autovacuum's job, on its own schedule
    // ~1.77 MB an update (442,569 float32 parameters), stored out of line in the TOAST table: a
    // round drops 5.4 MB, past KEPT_SPACE_RECLAIM_BYTES, so every close reclaims.
    const studyId = await h.createStudy(tinyStudy({ model: { kind: 'mlp', hidden: [4096, 100] }, rounds: 5, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
    const nodes: TestNode[] = [];
    for (const name of ['a', 'b', 'c']) nodes.push(await h.enroll(studyId, name));
    const sizes: number[] = [];
    for (let round = 1; round <= 4; round++) {
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === round)?.phase === 'fit' ? true : undefined));
      await trainRound(h, studyId, round, nodes);
      // Aggregated, and the close's follow-up work done.
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === round)?.phase === 'evaluate' ? true : undefined));
      await h.built.rounds.idle();
      sizes.push(await keptUpdateBytes(h));
      // Nobody evaluates: the evaluation deadline passes and the next round opens.
      h.advanceClock(61_000);
      await h.built.rounds.advanceRound(studyId, round);
    }
    // Round 1 grew the file to hold its three updates; rounds 2-4 wrote into the same pages.
    expect(3 * 1_700_000).toBeGreaterThanOrEqual(KEPT_SPACE_RECLAIM_BYTES);
    expect(sizes[0]).toBeGreaterThanOrEqual(3 * 1_700_000);
    expect(sizes.slice(1)).toEqual([sizes[0], sizes[0], sizes[0]]);
  });

  run('rounds of small updates do not pay a VACUUM each (PGlite): their space is reclaimed only once KEPT_SPACE_RECLAIM_BYTES were dropped', async (h) => {
    if (!(await sql<{ p: boolean }>`select version() like '%PGlite%' as p`.execute(h.built.db)).rows[0].p) return;
    const vacuums = async () => Number((await sql<{ n: string }>`select vacuum_count::text as n from pg_stat_user_tables where relname = 'round_kept_updates'`.execute(h.built.db)).rows[0].n);
    const before = await vacuums();
    const studyId = await h.createStudy(tinyStudy({ rounds: 4, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
    const nodes: TestNode[] = [];
    for (const name of ['d', 'e', 'f']) nodes.push(await h.enroll(studyId, name));
    for (let round = 1; round <= 3; round++) {
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === round)?.phase === 'fit' ? true : undefined));
      await trainRound(h, studyId, round, nodes);
      await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === round)?.phase === 'evaluate' ? true : undefined));
      await h.built.rounds.idle();
      h.advanceClock(61_000);
      await h.built.rounds.advanceRound(studyId, round);
    }
    expect(await vacuums()).toBe(before);
  });

  run('a round that fails frees the space of the updates it dropped too (PGlite)', async (h) => {
    if (!(await sql<{ p: boolean }>`select version() like '%PGlite%' as p`.execute(h.built.db)).rows[0].p) return;
    const vacuums = async () => Number((await sql<{ n: string }>`select vacuum_count::text as n from pg_stat_user_tables where relname = 'round_kept_updates'`.execute(h.built.db)).rows[0].n);
    // Two ~1.77 MB updates of three required: the round fails at its deadline, dropping 3.5 MB.
    const studyId = await h.createStudy(tinyStudy({ model: { kind: 'mlp', hidden: [4096, 100] }, rounds: 2, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 600 }));
    const nodes: TestNode[] = [];
    for (const name of ['g', 'h', 'i']) nodes.push(await h.enroll(studyId, name));
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === 1)?.phase === 'fit' ? true : undefined));
    await h.built.rounds.idle();
    const before = await vacuums();
    await trainRound(h, studyId, 1, nodes.slice(0, 2));
    h.advanceClock(601_000);
    await h.built.rounds.advanceRound(studyId, 1);
    expect((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds.find((r: { round: number }) => r.round === 1)?.phase).toBe('failed');
    await h.built.rounds.idle();
    expect(await vacuums()).toBeGreaterThan(before);
  });
}, 120_000);
