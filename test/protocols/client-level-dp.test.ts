import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ClientLevelDpStrategy, decodeClientLevelDpState, DP_CLIP_NORM, PrivacyConfigError, updateNoiseMultiplier, type ClientLevelDpConfig } from '../../protocols/privacy/client-level-dp.ts';
import { FedAvg } from '../../protocols/strategies/fedavg.ts';
import { Median } from '../../protocols/strategies/median.ts';
import type { FitAggregation, MeanDeltaStrategy, ServerState } from '../../protocols/strategies/strategy.ts';
import { decodeAccumulatorState, encodeAccumulatorState } from '../../protocols/aggregation/fedavg.ts';
import { l2Norm, subtract, type WeightSet } from '../../protocols/tensors.ts';
import { sampleMoments } from '../helpers/stats.ts';

const ws = (a: number[], b: number[]): WeightSet => [
  { name: 'w', shape: [a.length], values: Float32Array.from(a) },
  { name: 'b', shape: [b.length], values: Float32Array.from(b) },
];
const global = ws([0.5, -0.5, 1], [0.1]);
const ctx = (participants: number) => ({ round: 1, participants });
const dp = (config: ClientLevelDpConfig) => new ClientLevelDpStrategy(new FedAvg(), config);
/** The server state before round 1, or one whose clip norm is C. */
const serverState = (strategy: ClientLevelDpStrategy, g: WeightSet, clipNorm?: number): ServerState => {
  const s = strategy.initialServerState(g);
  if (clipNorm !== undefined) s.scalars[DP_CLIP_NORM] = clipNorm;
  return s;
};
const begin = (strategy: ClientLevelDpStrategy, g: WeightSet, participants: number, clipNorm?: number): FitAggregation => strategy.aggregateFit(g, serverState(strategy, g, clipNorm), ctx(participants));
const resume = (strategy: ClientLevelDpStrategy, g: WeightSet, state: Uint8Array, participants: number): FitAggregation => strategy.aggregateFit(g, serverState(strategy, g), ctx(participants), { state, kept: [] });

function aggregate(strategy: ClientLevelDpStrategy, updates: WeightSet[], participants: number): WeightSet {
  const round = begin(strategy, global, participants);
  for (const u of updates) round.accept(u, 100);
  return round.finish([]).weights!;
}

describe('client-level DP wrapper (fixed clipping)', () => {
  const noiseless = dp({ noiseMultiplier: 0, clipping: { kind: 'fixed', norm: 1 } });

  it('leaves updates under the clip norm alone: global + sum of deltas / participants', () => {
    const a = ws([0.6, -0.5, 1], [0.1]); // delta norm 0.1
    const b = ws([0.5, -0.3, 1], [0.1]); // delta norm 0.2
    const out = aggregate(noiseless, [a, b], 2);
    expect(out[0].values[0]).toBeCloseTo(0.55, 6);
    expect(out[0].values[1]).toBeCloseTo(-0.4, 6);
  });

  it('bounds any one node\'s influence by the clip norm, however huge its update', () => {
    fc.assert(
      fc.property(fc.array(fc.float({ min: -1e6, max: 1e6, noNaN: true }), { minLength: 4, maxLength: 4 }), fc.integer({ min: 2, max: 20 }), (huge, m) => {
        const others = [ws([0.55, -0.5, 1], [0.1]), ws([0.5, -0.45, 1.02], [0.12])];
        const attacker = ws(huge.slice(0, 3), huge.slice(3));
        const withIt = aggregate(noiseless, [...others, attacker], m);
        const without = aggregate(noiseless, others, m);
        // The sum moves by at most C = 1; the aggregate divides the sum by m.
        expect(l2Norm(subtract(withIt, without))).toBeLessThanOrEqual(1 / m + 1e-5);
      }),
      { numRuns: 200 },
    );
  });

  it('weights nodes equally, whatever example counts they claim', () => {
    const round = begin(noiseless, global, 2);
    round.accept(ws([0.6, -0.5, 1], [0.1]), 1_000_000);
    round.accept(ws([0.4, -0.5, 1], [0.1]), 1);
    expect(round.finish([]).weights![0].values[0]).toBeCloseTo(0.5, 6);
  });

  it('adds Gaussian noise of std z C / participants to every coordinate', () => {
    const n = 200_000;
    const g: WeightSet = [{ name: 'w', shape: [n], values: new Float32Array(n) }];
    const strategy = dp({ noiseMultiplier: 1.5, clipping: { kind: 'fixed', norm: 2 } });
    const round = begin(strategy, g, 4);
    round.accept(g, 1); // a zero update: what comes out is noise alone
    const { weights, details } = round.finish([]);
    const v = weights![0].values;
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      sum += v[i];
      sq += v[i] * v[i];
    }
    const mean = sum / n;
    const std = Math.sqrt(sq / n - mean * mean);
    expect(std).toBeGreaterThan(0.75 * 0.98); // 1.5 * 2 / 4 = 0.75
    expect(std).toBeLessThan(0.75 * 1.02);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(details).toMatchObject({ clipNorm: 2, noiseMultiplier: 1.5, updateNoiseStd: 3, denominator: 4 });
  });

  it('survives a restart: state serialized half-way gives the same aggregate', () => {
    const updates = [ws([0.6, -0.5, 1], [0.1]), ws([9, 9, 9], [9]), ws([0.5, -0.3, 1], [0.1])];
    const straight = aggregate(noiseless, updates, 3);
    const first = begin(noiseless, global, 3);
    first.accept(updates[0], 1);
    first.accept(updates[1], 1);
    const resumed = resume(noiseless, global, first.state(), 3);
    resumed.accept(updates[2], 1);
    const out = resumed.finish([]).weights!;
    for (let t = 0; t < out.length; t++) expect(Array.from(out[t].values)).toEqual(Array.from(straight[t].values));
  });
});

describe('adaptive clipping (Andrew et al. 2021)', () => {
  it('moves the clip norm toward the target quantile of update norms', () => {
    const strategy = dp({
      noiseMultiplier: 0,
      clipping: { kind: 'adaptive', initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 1e-9 },
    });
    // All updates under the clip: the fraction unclipped is 1, above the target 0.5, so C shrinks.
    const round = begin(strategy, global, 2);
    round.accept(ws([0.6, -0.5, 1], [0.1]), 1);
    round.accept(ws([0.5, -0.4, 1], [0.1]), 1);
    const first = round.finish([]);
    expect(first.details.nextClipNorm).toBeCloseTo(Math.exp(-0.2 * 0.5), 6);
    // The next clip norm is carried in the server state (the wrapper's namespaced scalar).
    expect(first.serverState.scalars[DP_CLIP_NORM]).toBe(first.details.nextClipNorm);
    const carried = strategy.aggregateFit(global, first.serverState, { round: 2, participants: 2 });
    carried.accept(global, 1);
    expect(carried.finish([]).details.clipNorm).toBe(first.details.nextClipNorm);
    // All clipped: fraction 0, C grows; the round's clip norm comes from the server state.
    const next = begin(strategy, global, 2, 0.01);
    next.accept(ws([5, 5, 5], [5]), 1);
    next.accept(ws([-5, 5, 5], [5]), 1);
    const details = next.finish([]).details;
    expect(details.clipNorm).toBe(0.01);
    expect(details.nextClipNorm).toBeCloseTo(0.01 * Math.exp(0.2 * 0.5), 8);
  });

  it('splits the noise so the pair of queries is one Gaussian mechanism of multiplier z', () => {
    const config = { noiseMultiplier: 1, clipping: { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 5 } };
    const zDelta = updateNoiseMultiplier(config);
    // z^-2 = z_delta^-2 + (2 sigma_b)^-2
    expect(zDelta ** -2 + (2 * 5) ** -2).toBeCloseTo(1, 12);
    expect(() => dp({ ...config, noiseMultiplier: 10 })).toThrow(PrivacyConfigError);
  });

  it('refuses an inner strategy that is not a mean-delta one', () => {
    expect(() => new ClientLevelDpStrategy(new Median() as unknown as MeanDeltaStrategy, { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } })).toThrow(PrivacyConfigError);
  });
});


describe('noise drawn when the round begins (issue 3: only noised state is ever stored)', () => {
  const n = 200_000;
  const zeros: WeightSet = [{ name: 'w', shape: [n], values: new Float32Array(n) }];
  const innerSums = (state: Uint8Array) => decodeAccumulatorState(decodeClientLevelDpState(state).inner).sums[0].values;

  it('the state right after begin() already holds N(0, (z_delta C)^2) on every coordinate', () => {
    const strategy = dp({ noiseMultiplier: 1.5, clipping: { kind: 'fixed', norm: 2 } });
    const { mean, std } = sampleMoments(innerSums(begin(strategy, zeros, 4).state()));
    // 200,000 draws: the sample std is within 1% of 3 with overwhelming probability (se 0.16%).
    expect(std).toBeGreaterThan(3 * 0.99);
    expect(std).toBeLessThan(3 * 1.01);
    expect(Math.abs(mean)).toBeLessThan(0.03);
  });

  it('after one arrival the stored sum is that clipped update plus the round\'s noise, not the update alone', () => {
    const strategy = dp({ noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } });
    const round = begin(strategy, zeros, 3);
    const noise = Float64Array.from(innerSums(round.state()));
    const update: WeightSet = [{ name: 'w', shape: [n], values: new Float32Array(n).fill(1) }]; // norm sqrt(n), clipped to 1
    const accepted = round.accept(update, 10);
    // The reported norm is the clipped one (what entered the sum), not the raw sqrt(n).
    expect(accepted.deltaNorm).toBeLessThanOrEqual(1);
    expect(accepted.deltaNorm).toBeCloseTo(1, 6);
    expect(accepted.clipped).toBe(true);
    const stored = innerSums(round.state());
    const clippedValue = 1 / Math.sqrt(n);
    const residual = Float64Array.from(stored, (v, i) => v - clippedValue);
    for (let i = 0; i < n; i += 997) expect(residual[i]).toBeCloseTo(noise[i], 9);
    const { std } = sampleMoments(residual);
    expect(std).toBeGreaterThan(0.99); // z C = 1, while the clipped update itself is 0.0022 per coordinate
    expect(std).toBeLessThan(1.01);
  });

  it('the final aggregate carries exactly that noise once: std z C / m (fixed clipping)', () => {
    const strategy = dp({ noiseMultiplier: 2, clipping: { kind: 'fixed', norm: 0.5 } });
    const round = begin(strategy, zeros, 5);
    const noise = Float64Array.from(innerSums(round.state()));
    // Resumed from bytes half-way, as after a coordinator restart: no second draw.
    round.accept(zeros, 1);
    const resumed = resume(strategy, zeros, round.state(), 5);
    resumed.accept(zeros, 1);
    const out = resumed.finish([]).weights![0].values;
    for (let i = 0; i < n; i += 997) expect(out[i]).toBeCloseTo(noise[i] / 5, 5);
    const { std } = sampleMoments(out);
    expect(std).toBeGreaterThan(0.2 * 0.99); // 2 x 0.5 / 5 = 0.2
    expect(std).toBeLessThan(0.2 * 1.01);
  });

  it('adaptive clipping: the update noise is z_delta C / m, and the count noise has std sigma_b (over many rounds)', () => {
    const config = { noiseMultiplier: 1, clipping: { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 2 } };
    const zDelta = updateNoiseMultiplier(config);
    const strategy = dp(config);
    const round = begin(strategy, zeros, 4, 3);
    round.accept(zeros, 1);
    const { std } = sampleMoments(round.finish([]).weights![0].values);
    expect(std).toBeGreaterThan(((zDelta * 3) / 4) * 0.99);
    expect(std).toBeLessThan(((zDelta * 3) / 4) * 1.01);
    // The count noise sits in the persisted header from the start: 20,000 rounds of a 1-coordinate model.
    const tiny: WeightSet = [{ name: 'w', shape: [1], values: new Float32Array(1) }];
    const counts = Float64Array.from({ length: 20_000 }, () => (decodeClientLevelDpState(begin(strategy, tiny, 4).state()).header as { noisyAtOrBelowClip: number }).noisyAtOrBelowClip);
    const c = sampleMoments(counts);
    // se of the sample std: 2 / sqrt(40,000) = 0.5%; 3% is 6 standard errors.
    expect(c.std).toBeGreaterThan(2 * 0.97);
    expect(c.std).toBeLessThan(2 * 1.03);
    expect(Math.abs(c.mean)).toBeLessThan(0.1);
  });

  it('a state persisted before noise moved to begin() is noised when resumed, once', () => {
    const strategy = dp({ noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } });
    // The old format: header {clipNorm, atOrBelowClip} and an inner sum of the clipped deltas only.
    const inner = encodeAccumulatorState({ specs: [{ name: 'w', shape: [n] }], sums: [{ name: 'w', shape: [n], values: new Float64Array(n) }], totalWeight: 1, count: 1 });
    const header = new TextEncoder().encode(JSON.stringify({ clipNorm: 1, atOrBelowClip: 1 }));
    const legacy = new Uint8Array(4 + header.length + inner.length);
    new DataView(legacy.buffer).setUint32(0, header.length, true);
    legacy.set(header, 4);
    legacy.set(inner, 4 + header.length);
    const resumed = resume(strategy, zeros, legacy, 2);
    expect(resumed.count).toBe(1);
    const out = resumed.finish([]).weights![0].values;
    const { std } = sampleMoments(out);
    expect(std).toBeGreaterThan(0.5 * 0.99); // z C / m = 0.5: one draw, not zero, not two
    expect(std).toBeLessThan(0.5 * 1.01);
  });
});
