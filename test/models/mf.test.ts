import { describe, expect, it } from 'vitest';
import { addClipped, bprTripleGradient, bprTripleLoss, buildInteractions, initialUserFactors, sparseNorm, trainBpr, trainBprUserDp, userSharedGradient, type MfModel } from '../../models/mf.ts';
import { GaussianNoise } from '../../protocols/privacy/gaussian-noise.ts';
import { mulberry32 } from '../../protocols/random.ts';

function toyModel(users: number, items: number, d: number, seed = 1): MfModel {
  const r = mulberry32(seed);
  return { numItems: items, factors: d, itemFactors: Float32Array.from({ length: items * d }, () => r() - 0.5), itemBias: Float32Array.from({ length: items }, () => r() - 0.5), userFactors: initialUserFactors(users, d, seed) };
}

/** Two groups of users, each buying from its own half of the items. */
function toyData(users = 20, items = 10) {
  const u: number[] = [];
  const it: number[] = [];
  for (let a = 0; a < users; a++) for (let k = 0; k < 3; k++) (u.push(a), it.push((a % 2) * (items / 2) + ((a + k) % (items / 2))));
  return buildInteractions(users, items, u, it);
}

describe('BPR matrix factorization', () => {
  it('the triple gradient matches central finite differences', () => {
    const m = toyModel(3, 5, 4);
    const [u, i, j, c, lambda] = [1, 2, 4, 1.7, 0.05];
    const g = bprTripleGradient(m, u, i, j, c, lambda);
    const h = 1e-3;
    const fd = (arr: Float32Array, at: number) => {
      const v = arr[at];
      arr[at] = v + h;
      const up = bprTripleLoss(m, u, i, j, c, lambda);
      arr[at] = v - h;
      const down = bprTripleLoss(m, u, i, j, c, lambda);
      arr[at] = v;
      return (up - down) / (2 * h);
    };
    for (let f = 0; f < 4; f++) {
      expect(g.user[f]).toBeCloseTo(fd(m.userFactors, u * 4 + f), 3);
      expect(g.itemI[f]).toBeCloseTo(fd(m.itemFactors, i * 4 + f), 3);
      expect(g.itemJ[f]).toBeCloseTo(fd(m.itemFactors, j * 4 + f), 3);
    }
    expect(g.biasI).toBeCloseTo(fd(m.itemBias, i), 3);
    expect(g.biasJ).toBeCloseTo(fd(m.itemBias, j), 3);
  });

  it('the BPR loss decreases on a toy set', () => {
    const data = toyData();
    const m = toyModel(20, 10, 4);
    const first = trainBpr(m, data, { epochs: 1, learningRate: 0.1, regularization: 0.01, seed: 3 }).loss;
    const later = trainBpr(m, data, { epochs: 30, learningRate: 0.1, regularization: 0.01, seed: 4 }).loss;
    expect(later).toBeLessThan(first * 0.7);
  });

  it('fold-in (users only) leaves the shared items untouched', () => {
    const m = toyModel(20, 10, 4);
    const before = Float32Array.from(m.itemFactors);
    trainBpr(m, toyData(), { epochs: 3, learningRate: 0.1, regularization: 0.01, seed: 3, usersOnly: true });
    expect(m.itemFactors).toEqual(before);
  });
});

describe('user-level DP-SGD', () => {
  it("one user's contribution to the shared-gradient sum has norm <= clip, whatever their interactions", () => {
    // A heavy user: every item many times, so the raw gradient is far above the clip.
    const items = 10;
    const u = Array.from({ length: 9 }, () => 0);
    const data = buildInteractions(1, items, u, Array.from({ length: 9 }, (_, k) => k), Array.from({ length: 9 }, () => 50));
    const m = toyModel(1, items, 4, 5);
    for (let i = 0; i < m.itemFactors.length; i++) m.itemFactors[i] *= 20;
    const { rows } = userSharedGradient(m, data, 0, 0.01, mulberry32(1), 0);
    const clip = 0.5;
    expect(sparseNorm(rows)).toBeGreaterThan(clip);
    const sum = new Float64Array(items * 5);
    expect(addClipped(sum, rows, clip, 5)).toBe(true);
    expect(Math.hypot(...sum)).toBeLessThanOrEqual(clip + 1e-9);
  });

  it('a step moves the items by at most lr x (sum of clipped users) / B without noise, and Poisson-samples users', () => {
    const data = toyData();
    const m = toyModel(20, 10, 4);
    const before = Float32Array.from(m.itemFactors);
    const silent = new (class extends GaussianNoise {
      override privatize(values: Float64Array) {
        void values;
      }
    })();
    const r = trainBprUserDp(m, data, { noiseMultiplier: 1, clipNorm: 0.1, samplingRate: 0.5, steps: 1, learningRate: 1, expectedBatchSize: 10, regularization: 0.01 }, silent, (n) => Float64Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 0.1 : 0.9)));
    expect(r.sampledUsers).toBe(10);
    let moved = 0;
    for (let i = 0; i < before.length; i++) moved += (m.itemFactors[i] - before[i]) ** 2;
    // 10 users each clipped to 0.1 (factors and biases together): |step| <= 1 x 10 x 0.1 / 10.
    expect(Math.sqrt(moved)).toBeLessThanOrEqual(0.1 + 1e-6);
    expect(Math.sqrt(moved)).toBeGreaterThan(0);
  });
});
