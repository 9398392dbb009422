import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FedAvgStrategy } from '../../protocols/aggregation/fedavg-strategy.ts';
import { ClientLevelDpStrategy, PrivacyConfigError, updateNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import { l2Norm, subtract, type WeightSet } from '../../protocols/tensors.ts';

const ws = (a: number[], b: number[]): WeightSet => [
  { name: 'w', shape: [a.length], values: Float32Array.from(a) },
  { name: 'b', shape: [b.length], values: Float32Array.from(b) },
];
const global = ws([0.5, -0.5, 1], [0.1]);
const ctx = (participants: number) => ({ round: 1, participants });

function aggregate(strategy: ClientLevelDpStrategy, updates: WeightSet[], participants: number): WeightSet {
  const round = strategy.begin(global, ctx(participants));
  for (const u of updates) round.accept(u, 100);
  return round.finish().weights!;
}

describe('client-level DP wrapper (fixed clipping)', () => {
  const noiseless = new ClientLevelDpStrategy(new FedAvgStrategy(), { noiseMultiplier: 0, clipping: { kind: 'fixed', norm: 1 } });

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
    const round = noiseless.begin(global, ctx(2));
    round.accept(ws([0.6, -0.5, 1], [0.1]), 1_000_000);
    round.accept(ws([0.4, -0.5, 1], [0.1]), 1);
    expect(round.finish().weights![0].values[0]).toBeCloseTo(0.5, 6);
  });

  it('adds Gaussian noise of std z C / participants to every coordinate', () => {
    const n = 200_000;
    const g: WeightSet = [{ name: 'w', shape: [n], values: new Float32Array(n) }];
    const strategy = new ClientLevelDpStrategy(new FedAvgStrategy(), { noiseMultiplier: 1.5, clipping: { kind: 'fixed', norm: 2 } });
    const round = strategy.begin(g, ctx(4));
    round.accept(g, 1); // a zero update: what comes out is noise alone
    const { weights, details } = round.finish();
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
    const first = noiseless.begin(global, ctx(3));
    first.accept(updates[0], 1);
    first.accept(updates[1], 1);
    const resumed = noiseless.resume(global, first.state(), ctx(3));
    resumed.accept(updates[2], 1);
    const out = resumed.finish().weights!;
    for (let t = 0; t < out.length; t++) expect(Array.from(out[t].values)).toEqual(Array.from(straight[t].values));
  });
});

describe('adaptive clipping (Andrew et al. 2021)', () => {
  it('moves the clip norm toward the target quantile of update norms', () => {
    const strategy = new ClientLevelDpStrategy(new FedAvgStrategy(), {
      noiseMultiplier: 0,
      clipping: { kind: 'adaptive', initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 1e-9 },
    });
    // All updates under the clip: the fraction unclipped is 1, above the target 0.5, so C shrinks.
    const round = strategy.begin(global, ctx(2));
    round.accept(ws([0.6, -0.5, 1], [0.1]), 1);
    round.accept(ws([0.5, -0.4, 1], [0.1]), 1);
    expect(round.finish().details.nextClipNorm).toBeCloseTo(Math.exp(-0.2 * 0.5), 6);
    // All clipped: fraction 0, C grows; the round's clip norm comes from the context.
    const next = strategy.begin(global, { round: 2, participants: 2, clipNorm: 0.01 });
    next.accept(ws([5, 5, 5], [5]), 1);
    next.accept(ws([-5, 5, 5], [5]), 1);
    const details = next.finish().details;
    expect(details.clipNorm).toBe(0.01);
    expect(details.nextClipNorm).toBeCloseTo(0.01 * Math.exp(0.2 * 0.5), 8);
  });

  it('splits the noise so the pair of queries is one Gaussian mechanism of multiplier z', () => {
    const config = { noiseMultiplier: 1, clipping: { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 5 } };
    const zDelta = updateNoiseMultiplier(config);
    // z^-2 = z_delta^-2 + (2 sigma_b)^-2
    expect(zDelta ** -2 + (2 * 5) ** -2).toBeCloseTo(1, 12);
    expect(() => new ClientLevelDpStrategy(new FedAvgStrategy(), { ...config, noiseMultiplier: 10 })).toThrow(PrivacyConfigError);
  });
});
