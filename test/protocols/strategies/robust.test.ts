import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AggregationError } from '../../../protocols/aggregation/fedavg.ts';
import { FedAvg } from '../../../protocols/strategies/fedavg.ts';
import { Krum } from '../../../protocols/strategies/krum.ts';
import { Median } from '../../../protocols/strategies/median.ts';
import { TrimmedMean } from '../../../protocols/strategies/trimmed-mean.ts';
import type { Strategy } from '../../../protocols/strategies/strategy.ts';
import { decodeWeights } from '../../../protocols/weights-codec.ts';
import { flat, model, runRound } from './helpers.ts';

const zero3 = model([0, 0, 0]);
/** Nodes' models from columns: values[j] is node j's model. */
const nodes = (values: number[][], n = 1) => values.map((v) => ({ w: model(v), n }));

describe('coordinate-wise trimmed mean (Yin et al. 2018)', () => {
  it('drops floor(beta k) values at each end of every coordinate, unweighted', () => {
    // k = 5, beta = 0.2: one dropped at each end. Coordinate 0: sorted [-50, 1, 3, 5, 100] -> (1 + 3 + 5) / 3 = 3;
    // coordinate 1 has ties: [-1, 2, 2, 2, 7] -> 2; coordinate 2: [0, 0, 0, 0, 9] -> 0.
    const five = nodes([[5, 2, 0], [1, 2, 0], [3, -1, 0], [100, 7, 0], [-50, 2, 9]]);
    expect(flat(runRound(new TrimmedMean(0.2), zero3, five).weights)).toEqual([3, 2, 0]);
    // Example counts change nothing: a node claiming a million examples is still one value.
    expect(flat(runRound(new TrimmedMean(0.2), zero3, five.map((u, j) => ({ ...u, n: j === 3 ? 1e6 : 1 }))).weights)).toEqual([3, 2, 0]);
    // k = 4 (even), beta = 0.25: [1, 2, 3, 4] -> (2 + 3) / 2 = 2.5; ties [1, 1, 1, 8] -> 1.
    expect(flat(runRound(new TrimmedMean(0.25), model([0, 0]), nodes([[4, 1], [1, 8], [2, 1], [3, 1]])).weights)).toEqual([2.5, 1]);
    // floor(0.1 * 5) = 0 trims nothing: not a plain mean (one node could move it anywhere) but no
    // new weights, with the reason (the study's minNodesPerRound rules this case out at creation).
    const none = runRound(new TrimmedMean(0.1), model([0]), nodes([[1], [2], [3], [4], [10]]));
    expect(none.weights).toBeUndefined();
    expect(String(none.details.reason)).toMatch(/trims nothing/);
  });

  it('matches sort-and-trim on random inputs, and stays within the untrimmed order statistics (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 12 }), fc.double({ min: 0.01, max: 0.49, noNaN: true }), (cols, beta) => {
        const k = cols.length;
        const b = Math.floor(beta * k);
        const result = runRound(new TrimmedMean(beta), zero3, nodes(cols));
        if (b === 0) {
          expect(result.weights).toBeUndefined();
          return;
        }
        const out = flat(result.weights);
        for (let i = 0; i < 3; i++) {
          const sorted = cols.map((c) => c[i]).sort((x, y) => x - y);
          const rest = sorted.slice(b, k - b);
          expect(out[i]).toBeCloseTo(rest.reduce((s, x) => s + x, 0) / rest.length, 3);
          expect(out[i]).toBeGreaterThanOrEqual(sorted[b]);
          expect(out[i]).toBeLessThanOrEqual(sorted[k - b - 1]);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('coordinate-wise median (Yin et al. 2018)', () => {
  it('odd k: the middle value; even k: the mean of the two middle values; ties', () => {
    expect(flat(runRound(new Median(), zero3, nodes([[3, 1, 5], [1, 1, 5], [2, 9, -5]])).weights)).toEqual([2, 1, 5]);
    expect(flat(runRound(new Median(), zero3, nodes([[4, 1, 2], [1, 1, 2], [3, 5, 2], [2, 5, 9]])).weights)).toEqual([2.5, 3, 2]);
    expect(flat(runRound(new Median(), model([0]), nodes([[7]])).weights)).toEqual([7]);
  });
});

describe('Multi-Krum (Blanchard et al. 2017)', () => {
  const honest = [
    [1, 1, 1],
    [1.1, 0.9, 1],
    [0.9, 1.05, 1.1],
    [1.05, 1, 0.95],
    [0.95, 0.95, 1.05],
  ];
  const attackers = [
    [100, -100, 50],
    [-80, 90, 10],
  ];

  it('with f attackers among n > 2f + 2, selects only honest updates and averages them', () => {
    // Attackers arrive first and in the middle: selection does not depend on order.
    const arrival = [attackers[0], honest[0], honest[1], attackers[1], honest[2], honest[3], honest[4]];
    const honestIdx = [1, 2, 4, 5, 6];
    for (const select of [1, 3, 5]) {
      const out = runRound(new Krum(2, select), zero3, nodes(arrival, 1000));
      const selected = String(out.details.selected).split(',').map(Number);
      expect(selected).toHaveLength(select);
      for (const j of selected) expect(honestIdx).toContain(j);
      const mean = [0, 1, 2].map((i) => selected.reduce((s, j) => s + Math.fround(arrival[j][i]), 0) / select);
      flat(out.weights).forEach((x, i) => expect(x).toBeCloseTo(mean[i], 6));
    }
  });

  it('by hand: scores are sums of squared distances to the n - f - 2 nearest others', () => {
    // 1-D, n = 5, f = 1: two nearest others each. Values 0, 1, 3, 4, 100.
    // Scores: 0 -> 1 + 9 = 10; 1 -> 1 + 4 = 5; 3 -> 1 + 4 = 5; 4 -> 1 + 9 = 10; 100 -> 96^2 + 97^2.
    // Krum (select 1) takes the lowest score, ties to the earlier arrival: 1. Select 2: mean(1, 3) = 2.
    const cols = [[0], [1], [3], [4], [100]];
    expect(flat(runRound(new Krum(1, 1), model([0]), nodes(cols)).weights)).toEqual([1]);
    expect(flat(runRound(new Krum(1, 2), model([0]), nodes(cols)).weights)).toEqual([2]);
  });

  it('fewer than 2f + 3 updates: no new model, with a reason', () => {
    const out = runRound(new Krum(2, 1), zero3, nodes([...honest, honest[0]]));
    expect(out.weights).toBeUndefined();
    expect(String(out.details.reason)).toMatch(/at least 7 updates/);
  });
});

describe('every-update strategies: what they keep', () => {
  it('accept validates the update and returns it as a float32 FMW1 frame; state() stays tiny', () => {
    const fit = new Median().aggregateFit(zero3, { scalars: {}, tensors: {} }, { round: 1, participants: 2 });
    const a = fit.accept([{ name: 'w', shape: [3], values: Float64Array.from([0.1, 2, 3]) }], 5);
    expect(a.deltaNorm).toBeCloseTo(Math.hypot(Math.fround(0.1), 2, 3), 6);
    expect(flat(decodeWeights(a.kept!, { dtype: 'float32' }))).toEqual([Math.fround(0.1), 2, 3]);
    expect(() => fit.accept(model([1, 2]), 1)).toThrow(AggregationError);
    expect(() => fit.accept(model([1, Number.POSITIVE_INFINITY, 2]), 1)).toThrow(AggregationError);
    expect(() => fit.accept([{ name: 'w', shape: [3], values: Float64Array.from([1, 1e300, 1]) }], 1)).toThrow(AggregationError); // overflows float32
    expect(fit.count).toBe(1);
    expect(fit.state().length).toBeLessThan(32);
  });
});

describe('one node sends its update scaled 1000x (n >= 5)', () => {
  // Honest nodes' models: global + a shared direction + small per-node noise. The attacker sends
  // global + 1000 x its own honest-looking delta.
  const honestUpdates = fc.record({
    global: fc.array(fc.integer({ min: -100, max: 100 }), { minLength: 4, maxLength: 4 }),
    // |base / 100| >= 0.02 and |noise / 1000| <= 0.005: every delta has coordinates of size >= 0.015
    // and the honest spread is <= 0.01 (+ float32 rounding).
    base: fc.array(fc.oneof(fc.integer({ min: 2, max: 50 }), fc.integer({ min: -50, max: -2 })), { minLength: 4, maxLength: 4 }),
    noise: fc.array(fc.array(fc.integer({ min: -5, max: 5 }), { minLength: 4, maxLength: 4 }), { minLength: 5, maxLength: 9 }),
  });
  const setup = ({ global, base, noise }: { global: number[]; base: number[]; noise: number[][] }) => {
    const g = global.map((x) => x / 10);
    const deltas = noise.map((e) => base.map((b, i) => b / 100 + e[i] / 1000));
    const honest = deltas.slice(1).map((d) => d.map((x, i) => Math.fround(g[i] + x)));
    const attacker = deltas[0].map((x, i) => g[i] + 1000 * x);
    return { g, honest, attacker, all: [attacker, ...honest] };
  };
  const range = (honest: number[][], i: number) => [Math.min(...honest.map((h) => h[i])), Math.max(...honest.map((h) => h[i]))];

  it('median and trimmed mean: every coordinate stays within [min, max] of the honest updates', () => {
    fc.assert(
      fc.property(honestUpdates, (input) => {
        const { g, honest, all } = setup(input);
        for (const s of [new Median(), new TrimmedMean(0.2)] as Strategy[]) {
          const out = flat(runRound(s, model(g), nodes(all)).weights);
          out.forEach((x, i) => {
            const [lo, hi] = range(honest, i);
            expect(x).toBeGreaterThanOrEqual(lo);
            expect(x).toBeLessThanOrEqual(hi);
          });
        }
      }),
      { numRuns: 200 },
    );
  });

  it('Krum (f = 1): the aggregate is exactly an honest-only one', () => {
    fc.assert(
      fc.property(honestUpdates, (input) => {
        const { g, honest, all } = setup(input);
        const out = runRound(new Krum(1, 2), model(g), nodes(all));
        const selected = String(out.details.selected).split(',').map(Number);
        expect(selected).not.toContain(0);
        const mean = g.map((_, i) => (Math.fround(all[selected[0]][i]) + Math.fround(all[selected[1]][i])) / 2);
        expect(flat(out.weights)).toEqual(mean.map(Math.fround));
        flat(out.weights).forEach((x, i) => {
          const [lo, hi] = range(honest, i);
          expect(x).toBeGreaterThanOrEqual(lo);
          expect(x).toBeLessThanOrEqual(hi);
        });
      }),
      { numRuns: 200 },
    );
  });

  it('FedAvg: the attacker moves the model by at least 100x the honest spread', () => {
    fc.assert(
      fc.property(honestUpdates, (input) => {
        const { g, honest, all } = setup(input);
        const out = flat(runRound(new FedAvg(), model(g), nodes(all)).weights);
        const spread = Math.max(...g.map((_, i) => range(honest, i)[1] - range(honest, i)[0]), 1e-6);
        const honestMean = g.map((_, i) => honest.reduce((s, h) => s + h[i], 0) / honest.length);
        const shift = Math.max(...out.map((x, i) => Math.abs(x - honestMean[i])));
        expect(shift).toBeGreaterThanOrEqual(100 * spread);
      }),
      { numRuns: 200 },
    );
  });
});
