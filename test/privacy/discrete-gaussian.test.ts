import { describe, expect, it } from 'vitest';
import { DiscreteGaussian, GaussianNoise, GRID_UNITS, type RandomWords } from '../../protocols/privacy/gaussian-noise.ts';
import { normalCdf } from '../../protocols/privacy/special-functions.ts';

/** xoshiro128** (Blackman, Vigna): a seedable source for reproducible statistical tests only. */
export class SeededWords implements RandomWords {
  private s: Uint32Array;
  constructor(seed: number) {
    let x = seed >>> 0 || 1;
    this.s = new Uint32Array(4).map(() => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    });
  }
  uint32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }
}
const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));

const N = 200_000;

function draws(seed: number, n = N): Float64Array {
  const g = new DiscreteGaussian(new SeededWords(seed));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = g.sample() / GRID_UNITS;
  return out;
}

/** |observed - expected| in binomial standard deviations. */
const zScore = (count: number, n: number, p: number) => Math.abs(count - n * p) / Math.sqrt(n * p * (1 - p));

describe('discrete Gaussian sampler (Canonne, Kamath, Steinke 2020)', () => {
  const x = draws(7);

  it('has mean 0 and variance sigma^2 (closed form: N_Z(0, S^2) has variance S^2 up to exp(-2 pi^2 S^2))', () => {
    let sum = 0;
    let sq = 0;
    for (const v of x) {
      sum += v;
      sq += v * v;
    }
    const mean = sum / N;
    const variance = sq / N - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(N)); // std of the mean: 1 / sqrt(N)
    expect(Math.abs(variance - 1)).toBeLessThan(5 * Math.sqrt(2 / N)); // std of the variance: sqrt(2 / N)
    // The draws are integers on the grid.
    for (let i = 0; i < 1000; i++) expect(Number.isInteger(x[i] * GRID_UNITS)).toBe(true);
  });

  it('matches the Gaussian bin probabilities (chi-square, 18 bins) and its tail frequencies', () => {
    const edges = [-Infinity, ...Array.from({ length: 17 }, (_, i) => -4 + i * 0.5), Infinity];
    const counts = new Array(edges.length - 1).fill(0);
    for (const v of x) {
      let b = 0;
      while (v >= edges[b + 1]) b++;
      counts[b]++;
    }
    let chi = 0;
    counts.forEach((c, b) => {
      const p = normalCdf(edges[b + 1]) - normalCdf(edges[b]);
      chi += (c - N * p) ** 2 / (N * p);
    });
    expect(chi).toBeLessThan(40.8); // chi-square, 17 degrees of freedom, p = 0.001
    for (const k of [1, 2, 3, 3.5, 4]) {
      const tail = x.filter((v) => Math.abs(v) > k).length;
      expect(zScore(tail, N, 2 * normalCdf(-k))).toBeLessThan(5);
    }
  });

  it('Kolmogorov-Smirnov distance to the normal CDF is below the 0.1% critical value', () => {
    const sorted = Float64Array.from(draws(11, 50_000)).sort();
    let d = 0;
    sorted.forEach((v, i) => {
      const f = normalCdf(v);
      d = Math.max(d, Math.abs((i + 1) / sorted.length - f), Math.abs(i / sorted.length - f));
    });
    expect(d).toBeLessThan(1.95 / Math.sqrt(sorted.length));
  });

  it('the discrete Laplace proposal has the untruncated geometric tail: P(|Y| >= v t) = 2 e^-v / (1 + e^(-1/t)) ~ e^-v, up to v = 9', () => {
    const g = new DiscreteGaussian(new SeededWords(3));
    const n = 400_000;
    const over = new Array(10).fill(0);
    for (let i = 0; i < n; i++) {
      const v = Math.floor(Math.abs(g.laplace()) / GRID_UNITS);
      for (let k = 1; k <= Math.min(v, 9); k++) over[k]++;
    }
    for (let k = 1; k <= 9; k++) expect(zScore(over[k], n, Math.exp(-k))).toBeLessThan(5);
    expect(over[9]).toBeGreaterThan(0); // 9 sigma: past where Box-Muller on 53-bit uniforms stopped (8.65)
  });

  it('accepts with probability exactly exp(-gamma) (CKS Algorithm 1), also for gamma > 1', () => {
    const g = new DiscreteGaussian(new SeededWords(5));
    const n = 200_000;
    for (const gamma of [0.1, 0.75, 1, 2.5, 6]) {
      let hits = 0;
      for (let i = 0; i < n; i++) if (g.bernoulliExp(Math.round(gamma * 2 ** 41))) hits++;
      expect(zScore(hits, n, Math.exp(-gamma))).toBeLessThan(5);
    }
  });

  it('the CSPRNG-backed noise has std equal to the requested std', () => {
    const noise = new GaussianNoise();
    const values = new Float64Array(100_000);
    noise.addTo(values, 3);
    const variance = values.reduce((s, v) => s + v * v, 0) / values.length;
    expect(Math.abs(variance / 9 - 1)).toBeLessThan(5 * Math.sqrt(2 / values.length));
  });

  it('privatize snaps to the grid and adds noise of std S g, g from gridStep (slightly more than std)', () => {
    const noise = new GaussianNoise(new SeededWords(9));
    const d = 50_000;
    const step = GaussianNoise.gridStep(2, 2, d); // std 2 = multiplier 2 x sensitivity 1
    expect(step * GRID_UNITS).toBeGreaterThan(2);
    expect(step * GRID_UNITS).toBeLessThan(2 * (1 + (2 * 1.5 * Math.sqrt(d)) / GRID_UNITS) * 1.0001);
    const values = Float64Array.from({ length: d }, (_, i) => Math.sin(i) * 10);
    const before = Float64Array.from(values);
    noise.privatize(values, step);
    let sq = 0;
    let offGrid = 0;
    for (let i = 0; i < d; i++) {
      offGrid = Math.max(offGrid, Math.abs(values[i] / step - Math.round(values[i] / step)));
      sq += (values[i] - before[i]) ** 2;
    }
    expect(offGrid).toBeLessThan(1e-6);
    expect(Math.abs(sq / d / (step * GRID_UNITS) ** 2 - 1)).toBeLessThan(5 * Math.sqrt(2 / d));
    expect(() => GaussianNoise.gridStep(1, 1000, 1e6)).toThrow(/finer grid/);
  });
});
