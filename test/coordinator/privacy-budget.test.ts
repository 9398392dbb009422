import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import request from 'supertest';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { decodeClientLevelDpState, updateNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import { decodeAccumulatorState } from '../../protocols/aggregation/fedavg.ts';
import { encodeWeights, decodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { registerPrivacyReportCommand } from '../../cli/privacy-report-command.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { ADMIN, bytesOrJson, defaultMeta, inProcessCoordinator, tinyStudy as harnessStudy, withPublicMetadata, type TestNode, noisedEvaluation } from './harness.ts';
/** The fake nodes send defaultMeta (loss, steps, seconds, data counts): DP studies here declare them public (issue 10). */
const tinyStudy: typeof harnessStudy = (overrides = {}) => harnessStudy(withPublicMetadata(overrides));
import { sampleMoments } from '../helpers/stats.ts';

type Harness = Awaited<ReturnType<typeof inProcessCoordinator>>;

/** A logistic regression over `width` numeric features: enough coordinates to measure noise. */
function wideStudy(width: number, overrides: Parameters<typeof tinyStudy>[0] = {}) {
  return tinyStudy({
    features: { target: { column: 'y', positive: '1' }, features: Array.from({ length: width }, (_, i) => ({ name: `f${i}`, kind: 'numeric' as const, mean: 0, std: 1, fill: 0 })) },
    ...overrides,
  });
}

const flat = (w: WeightSet) => Float64Array.from(w.flatMap((t) => Array.from(t.values)));

async function model(h: Harness, studyId: string, version: number): Promise<WeightSet> {
  return decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/${version}`).buffer(true).parse(bytesOrJson)).body));
}

/** The round's persisted central-DP state: the wrapper's header and the running sum it holds. */
async function persistedState(h: Harness, studyId: string, round: number) {
  const row = await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirstOrThrow();
  const { header, inner } = decodeClientLevelDpState(new Uint8Array(row.accumulator!));
  const acc = decodeAccumulatorState(inner);
  return { header: header as { v: number; clipNorm: number; accepted: number; noisyAtOrBelowClip: number }, count: acc.count, sum: flat(acc.sums) };
}

/** Every study here runs DP: its evaluations are the noised form (issue 10). */
const evalReport = noisedEvaluation([0, 1], [1, 0]);
async function phaseOf(h: Harness, studyId: string, round: number): Promise<string | undefined> {
  return (await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase;
}
/** Runs an open round to its end: its participants submit `weightsFor(node)`, then evaluate. */
async function playRound(h: Harness, studyId: string, round: number, nodes: TestNode[], weightsFor: (n: TestNode) => Uint8Array) {
  await h.until(async () => ((await phaseOf(h, studyId, round)) === 'fit' ? true : undefined));
  const participants: string[] = (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body.participants;
  const selected = nodes.filter((n) => participants.includes(n.nodeId));
  for (const n of selected) expect((await h.submit(n, studyId, round, weightsFor(n))).status).toBe(201);
  if (selected.length < 2) {
    // Too few sampled for the minimum: the deadline fails the round (moved there, not waited for).
    h.advanceClock(31_000);
    await h.built.rounds.advanceRound(studyId, round);
  } else {
    await h.until(async () => ((await phaseOf(h, studyId, round)) === 'evaluate' ? true : undefined));
    for (const n of selected) expect((await h.nodePost(n, `/v1/studies/${studyId}/rounds/${round}/evaluations`, evalReport, `${studyId}/${round}`)).status).toBe(201);
  }
  await h.until(async () => (['completed', 'failed'].includes((await phaseOf(h, studyId, round)) ?? '') ? true : undefined));
  return participants;
}

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

// Central DP with q = 1, z = 2: epsilon after r rounds is the accountant's epsilon for r steps.
const central = { noiseMultiplier: 2, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 };
const eps = (rounds: number) => computeEpsilon({ q: 1, sigma: 2, steps: rounds, delta: 1e-5 }, 'rdp');

for (const backendName of BACKEND_NAMES) {
  describe(`privacy budget and ledger on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend);
    });
    afterAll(async () => h?.close());

    it('charges each round at its start, and refuses the round that would exceed the budget before any node trains', async (ctx) => {
      if (!h) return ctx.skip();
      // Budget covers exactly two rounds.
      const budget = (eps(2) + eps(3)) / 2;
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: budget, central } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      for (const round of [1, 2]) {
        const started = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
        expect(started.status).toBe(201);
        expect(started.body.round).toBe(round);
        expect((await h.submit(a, studyId, round, weights(0.1))).status).toBe(201);
        expect((await h.submit(b, studyId, round, weights(0.2))).status).toBe(201);
        await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase === 'evaluate' ? true : undefined));
        for (const node of [a, b]) {
          await h.nodePost(node, `/v1/studies/${studyId}/rounds/${round}/evaluations`, evalReport, `${studyId}/${round}`);
        }
        await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[round - 1]?.phase === 'completed' ? true : undefined));
      }
      const refused = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
      expect([409]).toContain(refused.status);
      const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      expect(report.rounds.map((r: { round: number }) => r.round)).toEqual([1, 2]);
      expect(report.spentEpsilon).toBeCloseTo(eps(2), 8);
      expect(report.rounds[0].epsilonRound).toBeCloseTo(eps(1), 8);
      expect(report.rounds[1].epsilonRound).toBeCloseTo(eps(2) - eps(1), 8);
      expect(report.accountant).toBe('rdp');
      expect(report.spentEpsilon).toBeLessThanOrEqual(budget);
      // No round 3 exists: no node was asked to train.
      expect((await h.nodeGet(a, '/v1/tasks/next')).status).toBe(204);
    });

    it('refuses with BUDGET_EXCEEDED and says why', async (ctx) => {
      if (!h) return ctx.skip();
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: eps(1) * 0.5, central } }));
      await h.enroll(studyId, 'a');
      await h.enroll(studyId, 'b');
      const refused = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe('BUDGET_EXCEEDED');
      expect(refused.body.error.message).toMatch(/over its budget/);
      expect((await h.admin('get', `/v1/studies/${studyId}/privacy`)).body.rounds).toEqual([]);
    });

    it('two rounds started at the same time cannot together overspend', async (ctx) => {
      if (!h) return ctx.skip();
      // Budget for exactly one round; ten concurrent starts.
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central } }));
      await h.enroll(studyId, 'a');
      await h.enroll(studyId, 'b');
      const results = await Promise.all(Array.from({ length: 10 }, () => h!.admin('post', `/v1/studies/${studyId}/rounds`).send({})));
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      // The nine losers are refused by the budget (checked under the study lock, after the
      // winner's charge committed), not merely because a round is open.
      expect(results.filter((r) => r.status === 409).map((r) => r.body.error.code)).toEqual(Array(9).fill('BUDGET_EXCEEDED'));
      const ledger = await h.built.db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute();
      expect(ledger).toHaveLength(1);
      const rounds = await h.built.db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).execute();
      expect(rounds).toHaveLength(1);
    });

    it('clips each node\'s update and publishes only the noised aggregate', async (ctx) => {
      if (!h) return ctx.skip();
      const studyId = await h.createStudy(tinyStudy({ rounds: 1, privacy: { accountant: 'pld', delta: 1e-5, central: { noiseMultiplier: 0.5, clipping: { kind: 'fixed', norm: 0.01 }, nodeSamplingRate: 1 } } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await h!.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
      expect((await h.submit(a, studyId, 1, weights(1000), defaultMeta(10))).status).toBe(201); // huge: clipped
      expect((await h.submit(b, studyId, 1, weights(0), defaultMeta(10))).status).toBe(201);
      await h.until(async () => ((await h!.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
      const round = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
      expect(round.updates.find((u: { nodeId: string }) => u.nodeId === a.nodeId).clipped).toBe(true);
      expect(round.mechanism).toMatchObject({ clipNorm: 0.01, noiseMultiplier: 0.5, denominator: 2, privacy: { accountant: 'pld', central: { noiseMultiplier: 0.5 } } });
      const global0 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/0`).buffer(true).parse(bytesOrJson)).body));
      const global1 = decodeWeights(new Uint8Array((await h.admin('get', `/v1/studies/${studyId}/models/1`).buffer(true).parse(bytesOrJson)).body));
      // The huge update moved the model by at most C/m plus noise (std zC/m = 0.0025 per coordinate).
      let sq = 0;
      for (let t = 0; t < global0.length; t++) for (let i = 0; i < global0[t].values.length; i++) sq += (global1[t].values[i] - global0[t].values[i]) ** 2;
      expect(Math.sqrt(sq)).toBeLessThan(0.01 / 2 + 8 * 0.0025 * Math.sqrt(8));
      // No individual update is stored: only the published aggregate.
      const stored = await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow();
      expect(stored.accumulator).toBeNull();
      const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      expect(report.accountant).toBe('pld');
      expect(report.spentEpsilon).toBeCloseTo(computeEpsilon({ q: 1, sigma: 0.5, steps: 1, delta: 1e-5 }, 'pld'), 6);
    });

    it('a closed round and a budget short of one more round: concurrent starts are all refused by the budget, nothing is charged, no task issued', async (ctx) => {
      if (!h) return ctx.skip();
      // Budget for exactly one round; round 1 runs and closes; then ten starts at once.
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: false, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      expect((await h.admin('post', `/v1/studies/${studyId}/rounds`).send({})).status).toBe(201);
      await playRound(h, studyId, 1, [a, b], () => weights(0.1));
      const ledgerBefore = await h.built.db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute();
      expect(ledgerBefore).toHaveLength(1);
      const results = await Promise.all(Array.from({ length: 10 }, () => h!.admin('post', `/v1/studies/${studyId}/rounds`).send({})));
      expect(results.map((r) => r.status)).toEqual(Array(10).fill(409));
      expect(results.map((r) => r.body.error.code)).toEqual(Array(10).fill('BUDGET_EXCEEDED'));
      expect(results[0].body.error.message).toMatch(/round 2 would bring the study to epsilon .* over its budget/);
      expect(await h.built.db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute()).toEqual(ledgerBefore);
      expect(await h.built.db.selectFrom('rounds').select('round').where('study_id', '=', studyId).execute()).toEqual([{ round: 1 }]);
      for (const n of [a, b]) expect((await h.nodeGet(n, '/v1/tasks/next?wait=0')).status).toBe(204);
    });

    it('auto-advance racing manual starts at the end of a round cannot overspend either', async (ctx) => {
      if (!h) return ctx.skip();
      const studyId = await h.createStudy(tinyStudy({ rounds: 5, autoAdvance: true, privacy: { accountant: 'rdp', delta: 1e-5, budgetEpsilon: (eps(1) + eps(2)) / 2, central } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'fit' ? true : undefined));
      for (const n of [a, b]) expect((await h.submit(n, studyId, 1, weights(0.1))).status).toBe(201);
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'evaluate' ? true : undefined));
      expect((await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, evalReport, `${studyId}/1`)).status).toBe(201);
      // b's evaluation closes round 1, which starts the automatic path to round 2; manual starts
      // and direct automatic attempts race it.
      const [lastEval, ...starts] = await Promise.all([
        h.nodePost(b, `/v1/studies/${studyId}/rounds/1/evaluations`, evalReport, `${studyId}/1`),
        ...Array.from({ length: 6 }, () => h!.admin('post', `/v1/studies/${studyId}/rounds`).send({})),
        h.built.rounds.maybeStartNextRound(studyId).then(() => undefined),
        h.built.rounds.maybeStartNextRound(studyId).then(() => undefined),
      ]);
      expect(lastEval.status).toBe(201);
      const manual = starts.filter((r): r is NonNullable<typeof r> => r !== undefined);
      expect(manual).toHaveLength(6);
      expect(manual.map((r) => r.status)).toEqual(Array(6).fill(409));
      expect(manual.map((r) => r.body.error.code)).toEqual(Array(6).fill('BUDGET_EXCEEDED'));
      const study = await h.until(async () => {
        const s = await h!.built.db.selectFrom('studies').select(['state', 'stop_reason']).where('id', '=', studyId).executeTakeFirstOrThrow();
        return s.state === 'stopped' ? s : undefined;
      });
      expect(study.stop_reason).toMatch(/privacy budget: round 2/);
      expect(await h.built.db.selectFrom('privacy_ledger').select('round').where('study_id', '=', studyId).execute()).toEqual([{ round: 1 }]);
      expect(await h.built.db.selectFrom('rounds').select('round').where('study_id', '=', studyId).execute()).toEqual([{ round: 1 }]);
      for (const n of [a, b]) expect((await h.nodeGet(n, '/v1/tasks/next?wait=0')).status).toBe(204);
      // Once stopped for budget, a manual start still names the budget.
      const after = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
      expect(after.body.error.code).toBe('BUDGET_EXCEEDED');
    });

    it('central DP: what is persisted mid-round is already noised; the aggregate carries that one noise draw, std z C / m', async (ctx) => {
      if (!h) return ctx.skip();
      const width = 400; // 401 coordinates
      const z = 2;
      const C = 1;
      const m = 3;
      const studyId = await h.createStudy(wideStudy(width, { rounds: 1, minNodesPerRound: 2, minNodesToStart: m, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: z, clipping: { kind: 'fixed', norm: C }, nodeSamplingRate: 1 } } }));
      const nodes = [await h.enroll(studyId, 'a'), await h.enroll(studyId, 'b'), await h.enroll(studyId, 'c')];
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'fit' ? true : undefined));
      const g0 = await model(h, studyId, 0);
      const g0flat = flat(g0);
      const n = g0flat.length;
      const shifted = (delta: (i: number) => number): { bytes: Uint8Array; clipped: Float64Array } => {
        const d = Float64Array.from({ length: n }, (_, i) => delta(i));
        const w: WeightSet = [];
        let k = 0;
        for (const t of g0) {
          const values = new Float32Array(t.values.length);
          for (let i = 0; i < values.length; i++, k++) values[i] = t.values[i] + d[k];
          w.push({ name: t.name, shape: t.shape, values });
        }
        // The delta as the coordinator sees it (float32 weights minus the global model), clipped to C.
        const seen = flat(w).map((v, i) => v - g0flat[i]);
        const norm = Math.sqrt(seen.reduce((s, v) => s + v * v, 0));
        return { bytes: encodeWeights(w), clipped: seen.map((v) => (norm > C ? (v * C) / norm : v)) };
      };

      // At round start: no update yet, and the state already holds N(0, (zC)^2) per coordinate.
      const start = await persistedState(h, studyId, 1);
      expect(start.header).toMatchObject({ v: 2, clipNorm: C, accepted: 0 });
      expect(start.count).toBe(1); // the noise term
      const noise = start.sum;
      const ns = sampleMoments(noise);
      // 401 draws: the sample std is within 20% of zC (about 6 standard errors) all but never.
      expect(ns.std).toBeGreaterThan(z * C * 0.8);
      expect(ns.std).toBeLessThan(z * C * 1.2);
      expect(Math.abs(ns.mean)).toBeLessThan((6 * z * C) / Math.sqrt(n));

      // One huge update arrives: what is stored is that clipped update plus the round's noise.
      const huge = shifted((i) => 1000 + (i % 7));
      expect((await h.submit(nodes[0], studyId, 1, huge.bytes)).status).toBe(201);
      const mid = await persistedState(h, studyId, 1);
      expect(mid.header.accepted).toBe(1);
      const residual = mid.sum.map((v, i) => v - huge.clipped[i]);
      for (let i = 0; i < n; i++) expect(residual[i]).toBeCloseTo(noise[i], 9);
      expect(sampleMoments(residual).std).toBeGreaterThan(z * C * 0.8); // far from the bare update (whose norm is 1)
      // The round record carries the clipped norm (<= C), never the raw one (~20,000), for the
      // operator; the audit entry neither (exact per-node values under central DP: readers.ts).
      const audit = await h.built.db.selectFrom('audit_log').select('data').where('kind', '=', 'update.received').where('study_id', '=', studyId).execute();
      const received = audit.map((e) => JSON.parse(e.data) as Record<string, unknown>);
      expect(received).toHaveLength(1);
      expect(received[0]).not.toHaveProperty('deltaNorm');
      expect(received[0]).not.toHaveProperty('clipped');
      expect(received[0].normsWithheld).toMatch(/central DP/);
      const stored = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body.updates[0];
      expect(stored.deltaNorm).toBeLessThanOrEqual(C);
      expect(stored.deltaNorm).toBeCloseTo(C, 5);
      expect(stored.clipped).toBe(true);

      const small = [shifted((i) => 0.001 * ((i % 5) - 2)), shifted((i) => -0.002 * ((i % 3) - 1))];
      expect((await h.submit(nodes[1], studyId, 1, small[0].bytes)).status).toBe(201);
      expect((await h.submit(nodes[2], studyId, 1, small[1].bytes)).status).toBe(201);
      await h.until(async () => ((await phaseOf(h!, studyId, 1)) === 'evaluate' ? true : undefined));
      const round = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
      for (const u of round.updates) expect(u.deltaNorm).toBeLessThanOrEqual(C);
      expect(round.mechanism).toMatchObject({ clipNorm: C, noiseMultiplier: z, updateNoiseStd: z * C, denominator: m, nodes: 3 });
      // The published model: g0 + (sum of clipped + the same noise) / m. No second draw was added.
      const g1 = flat(await model(h, studyId, 1));
      const sumClipped = huge.clipped.map((v, i) => v + small[0].clipped[i] + small[1].clipped[i]);
      const publishedNoise = g1.map((v, i) => (v - g0flat[i]) * m - sumClipped[i]);
      for (let i = 0; i < n; i++) expect(Math.abs(publishedNoise[i] - noise[i])).toBeLessThan(1e-4);
      const perCoordinate = sampleMoments(g1.map((v, i) => v - g0flat[i] - sumClipped[i] / m));
      expect(perCoordinate.std).toBeGreaterThan(((z * C) / m) * 0.8);
      expect(perCoordinate.std).toBeLessThan(((z * C) / m) * 1.2);
      // Only the published aggregate outlives the round.
      expect((await h.built.db.selectFrom('rounds').select('accumulator').where('study_id', '=', studyId).executeTakeFirstOrThrow()).accumulator).toBeNull();
    });

    it('node sampling q < 1: participants vary, the denominator is q x ready nodes, the ledger charges the q-based epsilon; per-node report and CLI', async (ctx) => {
      if (!h) return ctx.skip();
      const q = 0.5;
      const z = 1;
      const ready = 10;
      const studyId = await h.createStudy(tinyStudy({ rounds: 3, minNodesPerRound: 2, minNodesToStart: ready, roundDeadlineSeconds: 30, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: z, clipping: { kind: 'fixed', norm: 1 }, nodeSamplingRate: q } } }));
      const nodes: TestNode[] = [];
      for (let i = 0; i < ready; i++) nodes.push(await h.enroll(studyId, `n${i}`, true, i % 2 ? 'us' : 'eu'));
      const samples: string[][] = [];
      for (const round of [1, 2, 3]) samples.push(await playRound(h, studyId, round, nodes, () => weights(0.01)));
      // Poisson samples of 10 nodes at q = 0.5: three equal ones happen with probability 2^-20.
      expect(new Set(samples.map((s) => [...s].sort().join())).size).toBeGreaterThan(1);
      for (const round of [1, 2, 3]) {
        const detail = (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body;
        expect(detail.mechanism.expectedParticipants).toBe(q * ready);
        if (detail.phase === 'completed') expect(detail.mechanism.denominator).toBe(q * ready);
      }
      const report = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      expect(report.rounds).toHaveLength(3);
      report.rounds.forEach((r: { samplingRate: number; epsilonTotal: number }, i: number) => {
        expect(r.samplingRate).toBe(q);
        expect(r.epsilonTotal).toBeCloseTo(computeEpsilon({ q, sigma: z, steps: i + 1, delta: 1e-5 }, 'rdp'), 8);
      });
      // Sampling amplifies: three rounds at q = 0.5 cost less than three at q = 1.
      expect(report.spentEpsilon).toBeLessThan(computeEpsilon({ q: 1, sigma: z, steps: 3, delta: 1e-5 }, 'rdp'));

      // Per node: the rounds it was sampled for, and what they cost it.
      const node = nodes.find((n) => samples.some((s) => s.includes(n.nodeId)))!;
      const mine = samples.map((s, i) => (s.includes(node.nodeId) ? i + 1 : 0)).filter(Boolean);
      const viaAdmin = await h.admin('get', `/v1/studies/${studyId}/nodes/${node.nodeId}/privacy`);
      expect(viaAdmin.status).toBe(200);
      const c = viaAdmin.body.clientLevel;
      expect(c.rounds.map((r: { round: number }) => r.round)).toEqual(mine);
      expect(c.roundsCharged).toBe(3);
      expect(c.epsilon).toBeCloseTo(computeEpsilon({ q, sigma: z, steps: 3, delta: 1e-5 }, 'rdp'), 8);
      const sent = c.rounds.filter((r: { updateSent: boolean }) => r.updateSent).length;
      expect(sent).toBe(mine.length);
      expect(c.epsilonIfParticipationKnown).toBeCloseTo(computeEpsilon({ q: 1, sigma: z, steps: sent, delta: 1e-5 }, 'rdp'), 8);
      c.rounds.forEach((r: { round: number; epsilonRound: number }) => expect(r.epsilonRound).toBeCloseTo(report.rounds[r.round - 1].epsilonRound, 10));
      expect(viaAdmin.body.dpSgd).toBeNull();
      // The study report carries the same per-node entry.
      expect(report.nodes.find((n: { nodeId: string }) => n.nodeId === node.nodeId).clientLevel).toEqual(c);
      // Who may read it: admin, auditor, the node itself; not another node, not an analyst.
      const auditor = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'compliance' })).body.token;
      const analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'eu team', region: 'eu' })).body.token;
      const path = `/v1/studies/${studyId}/nodes/${node.nodeId}/privacy`;
      expect((await request(h.app).get(path).set('authorization', `Bearer ${auditor}`)).status).toBe(200);
      expect((await request(h.app).get(path).set('authorization', `Bearer ${analyst}`)).status).toBe(403);
      const own = await h.nodeGet(node, path);
      expect(own.status).toBe(200);
      expect(own.body.clientLevel).toEqual(c);
      const other = nodes.find((n) => n !== node)!;
      expect((await h.nodeGet(other, path)).status).toBe(403);

      // Who was sampled: the auditor sees it (trusted, README), an analyst only its own region's
      // nodes, a node only itself: amplification by sampling holds against those two.
      const euIds = new Set(nodes.filter((_, i) => i % 2 === 0).map((n) => n.nodeId));
      const audited = await request(h.app).get(`/v1/studies/${studyId}`).set('authorization', `Bearer ${auditor}`);
      expect(audited.body.rounds.map((r: { participants: string[] }) => r.participants)).toEqual(samples);
      const regional = await request(h.app).get(`/v1/studies/${studyId}`).set('authorization', `Bearer ${analyst}`);
      expect(regional.body.rounds.map((r: { participants: string[] }) => r.participants)).toEqual(samples.map((s) => s.filter((id) => euIds.has(id))));
      for (const round of [1, 2, 3]) {
        const seen = (await request(h.app).get(`/v1/studies/${studyId}/rounds/${round}`).set('authorization', `Bearer ${analyst}`)).body.participants;
        expect(seen).toEqual(samples[round - 1].filter((id) => euIds.has(id)));
      }
      const ownRound = await h.nodeGet(node, `/v1/studies/${studyId}/rounds/${mine[0]}`);
      expect(ownRound.body.participants).toEqual([node.nodeId]);
      expect((await h.admin('get', `/v1/studies/${studyId}/nodes/node_nope/privacy`)).status).toBe(404);

      // `fedmark privacy report --node`: the same report through the CLI, against a listening coordinator.
      const server = h.app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      try {
        const json = await runCli(['privacy', 'report', '--coordinator', url, '--token', ADMIN, '--study', studyId, '--node', node.nodeId, '--json']);
        expect(json.code).toBe(0);
        expect(JSON.parse(json.stdout)).toEqual(viaAdmin.body);
        const text = await runCli(['privacy', 'report', '--coordinator', url, '--token', auditor, '--study', studyId, '--node', node.nodeId]);
        expect(text.stdout).toMatch(new RegExp(`client-level epsilon ${c.epsilon.toFixed(4)} at delta 0.00001 \\(rdp accountant, q=0.5, z=1, 3 rounds since it enrolled\\)`));
        for (const r of mine) expect(text.stdout).toMatch(new RegExp(`round ${r} \\((completed|failed)\\)`));
        const forbidden = await runCli(['privacy', 'report', '--coordinator', url, '--token', analyst, '--study', studyId, '--node', node.nodeId]);
        expect(forbidden.code).toBe(1);
        expect(forbidden.stderr).toMatch(/answered 403/);
        const noStudy = await runCli(['privacy', 'report', '--coordinator', url, '--token', ADMIN, '--node', node.nodeId]);
        expect(noStudy.code).toBe(2);
        expect(noStudy.stderr).toMatch(/give --coordinator, --token and --study with --node/);
        const both = await runCli(['privacy', 'report', '--node', node.nodeId, '--node-state', '/tmp']);
        expect(both.code).toBe(2);
      } finally {
        await new Promise((r) => server.close(r));
      }
    });

    it('refuses a study whose noise multiplier is under the floor (0.5) with 400 naming the field and the reason', async (ctx) => {
      if (!h) return ctx.skip();
      const low = await h.admin('post', '/v1/studies').send(tinyStudy({ privacy: { accountant: 'rdp', delta: 1e-5, central: { ...central, noiseMultiplier: 0.3 } } }));
      expect(low.status).toBe(400);
      expect(low.body.error.field).toBe('body.privacy.central.noiseMultiplier');
      expect(low.body.error.message).toMatch(/at least 0\.5.*epsilon/);
      const lowSgd = await h.admin('post', '/v1/studies').send(tinyStudy({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd: { noiseMultiplier: 0.05, clipNorm: 1, samplingRate: 0.1 } } }));
      expect(lowSgd.status).toBe(400);
      expect(lowSgd.body.error.field).toBe('body.privacy.dpSgd.noiseMultiplier');
      const atFloor = await h.admin('post', '/v1/studies').send(tinyStudy({ privacy: { accountant: 'rdp', delta: 1e-5, dpSgd: { noiseMultiplier: 0.5, clipNorm: 1, samplingRate: 0.1 } } }));
      expect(atFloor.status).toBe(201);
    });

    it('adaptive clipping carries its clip norm from round to round through the database; the ledger charges the pair with count sensitivity 1, not z', async (ctx) => {
      if (!h) return ctx.skip();
      const clipping = { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 0.26 };
      const z = 0.5; // the floor; must stay under 2 x countNoiseStd
      const zDelta = updateNoiseMultiplier({ noiseMultiplier: z, clipping });
      expect(zDelta).toBeGreaterThan(z);
      const studyId = await h.createStudy(tinyStudy({ rounds: 2, privacy: { accountant: 'rdp', delta: 1e-5, central: { noiseMultiplier: z, clipping, nodeSamplingRate: 1 } } }));
      const a = await h.enroll(studyId, 'a');
      const b = await h.enroll(studyId, 'b');
      // Round 1: every update far under the clip norm -> unclipped fraction ~1 > 0.5: C shrinks.
      await playRound(h, studyId, 1, [a, b], (n) => weights(n === a ? 0.001 : -0.001));
      const r1 = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
      expect(r1.clipNorm).toBe(1);
      // Count noise std 0.26 over m = 2: the noisy fraction is 1 +- 0.13, so C moves by exp(-0.2 x (0.5 +- 0.13));
      // the bounds below are 3.8 standard deviations wide.
      expect(r1.mechanism.nextClipNorm).toBeLessThan(1);
      expect(r1.mechanism.nextClipNorm).toBeGreaterThan(Math.exp(-0.2 * 1));
      expect(r1.mechanism.updateNoiseStd).toBeCloseTo(zDelta * 1, 12);
      // Round 2 starts from round 1's next clip norm, read back from the database.
      await h.until(async () => ((await phaseOf(h!, studyId, 2)) === 'fit' ? true : undefined));
      const r2start = (await h.admin('get', `/v1/studies/${studyId}/rounds/2`)).body;
      expect(r2start.clipNorm).toBeCloseTo(r1.mechanism.nextClipNorm, 12);
      const C2 = r2start.clipNorm;
      // Round 2: every update far over it -> fraction ~0 < 0.5: C grows.
      await playRound(h, studyId, 2, [a, b], (n) => weights(n === a ? 50 : -50));
      const r2 = (await h.admin('get', `/v1/studies/${studyId}/rounds/2`)).body;
      expect(r2.mechanism.clipNorm).toBeCloseTo(C2, 12);
      expect(r2.mechanism.updateNoiseStd).toBeCloseTo(zDelta * C2, 12);
      expect(r2.mechanism.nextClipNorm).toBeGreaterThan(C2);
      expect(r2.updates.every((u: { clipped: boolean; deltaNorm: number }) => u.clipped && u.deltaNorm <= C2 * (1 + 1e-12))).toBe(true);
      // The ledger: the pair of queries as one mechanism, the count at sensitivity 1 (its
      // contributor count is published): (z_delta^-2 + sigma_b^-2)^-1/2, well below z.
      const charged = 1 / Math.sqrt(zDelta ** -2 + clipping.countNoiseStd ** -2);
      expect(charged).toBeLessThan(z / 1.5);
      const ledger = await h.built.db.selectFrom('privacy_ledger').select(['round', 'noise_multiplier', 'epsilon_total']).where('study_id', '=', studyId).orderBy('round').execute();
      expect(ledger.map((l) => l.noise_multiplier)).toEqual([charged, charged].map((x) => expect.closeTo(x, 12)));
      expect(ledger[1].epsilon_total).toBeCloseTo(computeEpsilon({ q: 1, sigma: charged, steps: 2, delta: 1e-5 }, 'rdp'), 8);
    });
  });
}

/** Runs the `fedmark privacy report` command in this process, capturing its output and exit code. */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const program = new Command().exitOverride();
  registerPrivacyReportCommand(program);
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  const before = process.exitCode;
  process.exitCode = 0;
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { code, stdout, stderr };
}
