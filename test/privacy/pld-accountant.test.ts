import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PrivacyParameterError } from '../../protocols/privacy/errors.ts';
import {
  defaultDiscretization,
  gaussianDelta,
  gaussianEpsilon,
  pldDelta,
  pldEpsilon,
  pldEpsilonDetails,
  composedRemovePldForTests,
} from '../../protocols/privacy/pld-accountant.ts';
import { rdpEpsilon } from '../../protocols/privacy/rdp-accountant.ts';
import { computeEpsilonDetails } from '../../protocols/privacy/calibrate.ts';
import { normalCdf, normalSf } from '../../protocols/privacy/special-functions.ts';

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

/** Smallest eps >= 0 with f(eps) <= delta for a non-increasing f, by bisection. */
function solveEpsilon(f: (eps: number) => number, delta: number): number {
  if (f(0) <= delta) return 0;
  let lo = 0;
  let hi = 1;
  while (f(hi) > delta) {
    lo = hi;
    hi *= 2;
  }
  for (let i = 0; i < 200; i++) {
    const mid = 0.5 * (lo + hi);
    if (f(mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}

/**
 * Exact hockey-stick divergence of ONE step of the Poisson-subsampled Gaussian, written directly
 * from the densities (independent of the accountant's code): M = (1-q) N(0,s^2) + q N(1,s^2), N0 = N(0,s^2).
 *  remove: sup_S M(S) - e^eps N0(S), S = {x > x_eps};  add: sup_S N0(S) - e^eps M(S), S = {x < x'_eps}.
 */
function oneStepDelta(direction: 'remove' | 'add', q: number, s: number, eps: number): number {
  if (direction === 'remove') {
    if (eps <= Math.log(1 - q)) return 1 - Math.exp(eps);
    const x = s * s * Math.log((Math.exp(eps) - (1 - q)) / q) + 0.5;
    return q * normalSf((x - 1) / s) - (Math.exp(eps) - (1 - q)) * normalSf(x / s);
  }
  if (eps >= -Math.log(1 - q)) return 0;
  const x = s * s * Math.log((Math.exp(-eps) - (1 - q)) / q) + 0.5;
  return (1 - Math.exp(eps) * (1 - q)) * normalCdf(x / s) - Math.exp(eps) * q * normalCdf((x - 1) / s);
}

describe('Gaussian mechanism closed form (Balle & Wang 2018)', () => {
  // Reference values: mpmath, 50 digits, of Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
  const cases: Array<[number, number, number]> = [
    [1, 0, 0.38292492254802620728],
    [1, 1, 0.1269367375066439458],
    [1, 4.377178095681227, 9.9999999999998908015e-6],
    [0.5, 2, 9.4391686349472337585e-6],
    [2, 3, 0.18381307654447215597],
    [3.16227766016838, 10, 0.033779545400786604469],
    [1, 20, 2.6647067053654976526e-86],
    [10, 40, 0.81477943776008176702],
    [0.1, 0.5, 6.8565824558387371436e-9],
  ];
  it.each(cases)('mu=%s eps=%s', (mu, eps, want) => {
    expect(rel(gaussianDelta(mu, eps), want)).toBeLessThan(1e-11);
  });

  it('gaussianEpsilon inverts gaussianDelta', () => {
    for (const [mu, delta] of [
      [1, 1e-5],
      [0.1, 1e-10],
      [5, 1e-3],
      [31.6, 1e-6],
    ]) {
      const eps = gaussianEpsilon(mu, delta);
      expect(rel(gaussianDelta(mu, eps), delta)).toBeLessThan(1e-9);
    }
    expect(rel(gaussianEpsilon(1, 1e-5), 4.377178095681227)).toBeLessThan(1e-12);
  });
});

describe('PLD accountant, q = 1: exact Gaussian composition', () => {
  // T steps of noise multiplier sigma are one Gaussian mechanism with mu = sqrt(T) / sigma.
  const grid: Array<[number, number, number]> = [];
  for (const sigma of [0.5, 1, 2, 10]) for (const steps of [1, 10, 1000]) for (const delta of [1e-3, 1e-6, 1e-10]) grid.push([sigma, steps, delta]);
  it.each(grid)('sigma=%s steps=%s delta=%s: exact <= PLD <= exact * 1.02 (in fact 1e-3)', (sigma, steps, delta) => {
    const exact = gaussianEpsilon(Math.sqrt(steps) / sigma, delta);
    const { epsilon } = pldEpsilon({ q: 1, sigma, steps, delta });
    expect(epsilon).toBeGreaterThanOrEqual(exact);
    expect(epsilon).toBeLessThanOrEqual(exact * 1.02);
    expect(epsilon).toBeLessThanOrEqual(exact * (1 + 1e-3) + 1e-9);
  });

  it('delta for epsilon: PLD delta >= exact delta and close', () => {
    for (const [sigma, steps, eps] of [
      [1, 10, 5],
      [2, 100, 8],
      [10, 1000, 1],
    ]) {
      const exact = gaussianDelta(Math.sqrt(steps) / sigma, eps);
      const { delta } = pldDelta({ q: 1, sigma, steps, epsilon: eps });
      expect(delta).toBeGreaterThanOrEqual(exact);
      expect(delta).toBeLessThanOrEqual(exact * 1.01);
    }
  });
});

describe('PLD accountant, one step: each direction against the exact hockey-stick curve', () => {
  const cases: Array<[number, number, number]> = [
    [0.5, 1, 1e-5],
    [0.1, 0.7, 1e-6],
    [0.01, 2, 1e-3],
    [0.3, 0.5, 1e-5],
    [0.9, 3, 1e-4],
  ];
  it.each(cases)('q=%s sigma=%s delta=%s', (q, sigma, delta) => {
    const details = pldEpsilonDetails({ q, sigma, steps: 1, delta });
    const exact = { remove: 0, add: 0 };
    for (const direction of ['remove', 'add'] as const) {
      exact[direction] = solveEpsilon((eps) => oneStepDelta(direction, q, sigma, eps), delta);
      const got = details[direction];
      // The discrete curve is exact at grid points and above in between: one grid step at most.
      expect(got, direction).toBeGreaterThanOrEqual(exact[direction] * (1 - 1e-12));
      expect(got, direction).toBeLessThanOrEqual(exact[direction] + details.discretization + 1e-12);
    }
    // the reported epsilon is the worse of the two directions, with a grid fine enough for 1e-3
    expect(details.epsilon).toBe(Math.max(details.remove, details.add));
    const worst = Math.max(exact.remove, exact.add);
    expect(details.epsilon).toBeGreaterThanOrEqual(worst);
    expect(details.epsilon).toBeLessThanOrEqual(worst * (1 + 1e-3));
  });

  it('the two directions really differ with subsampling (and coincide without)', () => {
    const a = pldEpsilonDetails({ q: 0.5, sigma: 1, steps: 1, delta: 1e-5 });
    expect(a.remove).toBeGreaterThan(a.add * 1.05);
    const b = pldEpsilonDetails({ q: 0.01, sigma: 1, steps: 1000, delta: 1e-5 });
    expect(b.remove).toBeGreaterThan(b.add);
    expect(b.add).toBeGreaterThan(0);
    const c = pldEpsilonDetails({ q: 1, sigma: 1, steps: 10, delta: 1e-5 });
    expect(rel(c.add, c.remove)).toBeLessThan(1e-9);
  });
});

describe('PLD accountant, subsampled compositions', () => {
  // Google dp_accounting 0.6.0 PLD accountant (connect-the-dots, value_discretization_interval
  // 1e-4, or 1e-5 where marked), itself an upper bound within ~1e-4 of the truth.
  const references: Array<[number, number, number, number, number]> = [
    [0.01, 1, 10000, 1e-5, 6.18774497574583],
    [0.01, 1, 1000, 1e-5, 1.828243645591767],
    [0.1, 1, 1000, 1e-5, 25.20455519793347],
    [0.5, 4, 1, 1e-6, 0.6361306036848298],
    [0.01, 0.8, 10000, 1e-5, 10.053658750532843],
    [0.5, 100, 1000, 1e-5, 0.561457120430459], // 1e-5 grid
    [0.001, 2, 10000, 1e-6, 0.2049374888075494], // 1e-5 grid
  ];
  it.each(references)('q=%s sigma=%s steps=%s delta=%s vs dp_accounting %s', (q, sigma, steps, delta, reference) => {
    expect(rel(pldEpsilon({ q, sigma, steps, delta }).epsilon, reference)).toBeLessThan(3e-4);
  });

  it('refining the grid can only lower epsilon (chords of a convex curve), and barely does', () => {
    for (const [q, sigma, steps, delta] of [
      [0.01, 1, 2000, 1e-5],
      [0.2, 2, 100, 1e-6],
    ]) {
      const d = defaultDiscretization(q, sigma);
      const coarse = pldEpsilon({ q, sigma, steps, delta }, { discretization: 2 * d }).epsilon;
      const normal = pldEpsilon({ q, sigma, steps, delta }).epsilon;
      const fine = pldEpsilon({ q, sigma, steps, delta }, { discretization: d / 2 }).epsilon;
      expect(normal).toBeLessThanOrEqual(coarse * (1 + 1e-9));
      expect(fine).toBeLessThanOrEqual(normal * (1 + 1e-9));
      expect(rel(normal, fine)).toBeLessThan(1e-4);
    }
  });

  const grid: Array<[number, number, number, number]> = [];
  for (const q of [0.001, 0.01, 0.1, 0.5]) for (const sigma of [0.8, 1.5, 4]) for (const steps of [1, 100, 3000]) for (const delta of [1e-5, 1e-8]) grid.push([q, sigma, steps, delta]);
  it.each(grid)('PLD <= RDP: q=%s sigma=%s steps=%s delta=%s', (q, sigma, steps, delta) => {
    const pld = pldEpsilon({ q, sigma, steps, delta }).epsilon;
    const rdp = rdpEpsilon({ q, sigma, steps, delta }).epsilon;
    expect(pld).toBeLessThanOrEqual(rdp);
    expect(pld).toBeGreaterThanOrEqual(0);
  });

  it('delta(epsilon) and epsilon(delta) are consistent', () => {
    for (const [q, sigma, steps, delta] of [
      [0.01, 1, 1000, 1e-5],
      [0.2, 1.5, 50, 1e-7],
    ]) {
      const { epsilon } = pldEpsilon({ q, sigma, steps, delta });
      const back = pldDelta({ q, sigma, steps, epsilon }).delta;
      expect(rel(back, delta)).toBeLessThan(1e-3);
    }
  });

  it('is fast enough to compose thousands of steps (q=0.01, sigma=1, 10000 steps) and tiny q over 1e5 steps', () => {
    // no wall-clock assertion; checks that these run and give sane values
    expect(pldEpsilon({ q: 0.01, sigma: 1, steps: 10_000, delta: 1e-5 }).epsilon).toBeGreaterThan(6);
    const tiny = pldEpsilon({ q: 1e-5, sigma: 1, steps: 100_000, delta: 1e-5 }).epsilon;
    expect(tiny).toBeGreaterThan(0);
    expect(tiny).toBeLessThan(rdpEpsilon({ q: 1e-5, sigma: 1, steps: 100_000, delta: 1e-5 }).epsilon);
  });

  it('edge cases: q = 0 or steps = 0 give 0; bad inputs throw naming the parameter', () => {
    expect(pldEpsilon({ q: 0, sigma: 1, steps: 10, delta: 1e-5 }).epsilon).toBe(0);
    expect(pldEpsilon({ q: 0.3, sigma: 1, steps: 0, delta: 1e-5 }).epsilon).toBe(0);
    expect(pldDelta({ q: 0, sigma: 1, steps: 10, epsilon: 1 }).delta).toBe(0);
    expect(() => pldEpsilon({ q: 2, sigma: 1, steps: 10, delta: 1e-5 })).toThrow(PrivacyParameterError);
    expect(() => pldEpsilon({ q: 0.1, sigma: 0, steps: 10, delta: 1e-5 })).toThrow(/^sigma/);
    expect(() => pldEpsilon({ q: 0.1, sigma: 1, steps: 2.5, delta: 1e-5 })).toThrow(/^steps/);
    expect(() => pldEpsilon({ q: 0.1, sigma: 1, steps: 10, delta: 0 })).toThrow(/^delta/);
    expect(() => pldDelta({ q: 0.1, sigma: 1, steps: 10, epsilon: -1 })).toThrow(/^epsilon/);
  });
});

describe('tiny delta with many steps: the FFT round-off is bounded and counted (never below the truth)', () => {
  // At delta <= 1e-10 and 2e4 steps the FFT's absolute noise floor (~1e-16 * log N * steps) is
  // above delta: before the round-off bound and the exponential tilt, PLD read noise there (e.g.
  // q = 0.01, sigma = 3, delta = 1e-12: 7.50 against RDP's 3.50, and 11.55 against the exact
  // 10.59 for q = 1, sigma = 100).
  const steps = 20_000;
  const cases: Array<[number, number, number]> = [];
  for (const delta of [1e-10, 1e-12]) for (const q of [1, 0.5, 0.1, 0.01, 0.001]) for (const sigma of [1, 3, 100]) cases.push([q, sigma, delta]);
  it.each(cases)('q=%s sigma=%s delta=%s: RDP >= PLD (>= exact Gaussian for q = 1)', (q, sigma, delta) => {
    const pld = pldEpsilonDetails({ q, sigma, steps, delta });
    const rdp = rdpEpsilon({ q, sigma, steps, delta }).epsilon;
    expect(pld.epsilon).toBeLessThanOrEqual(rdp);
    expect(pld.epsilon).toBeGreaterThan(0);
    // The round-off bound is part of delta's budget, and the tilt keeps it a small share.
    expect(pld.roundoff).toBeGreaterThan(0);
    expect(pld.roundoff).toBeLessThan(0.01 * delta);
    if (q === 1) {
      const exact = gaussianEpsilon(Math.sqrt(steps) / sigma, delta);
      expect(pld.epsilon).toBeGreaterThanOrEqual(exact);
      expect(rel(pld.epsilon, exact)).toBeLessThan(1e-3);
    }
  });

  it.each([
    [0.01, 1, 20_000],
    [0.01, 3, 20_000],
    [1, 100, 20_000],
    [0.1, 3, 5_000],
  ])('the round-off bound covers the FFT noise actually seen (q=%s sigma=%s steps=%s)', (q, sigma, steps) => {
    // The same composed PMF untilted and tilted at the answer: in the tail that sets delta = 1e-12
    // they differ by the untilted run's noise (the tilted one is ~1e5 times more accurate there).
    const epsilon = pldEpsilon({ q, sigma, steps, delta: 1e-12 }).epsilon;
    const plain = composedRemovePldForTests({ q, sigma, steps });
    const tilted = composedRemovePldForTests({ q, sigma, steps }, epsilon);
    expect(tilted.lowerIndex).toBe(plain.lowerIndex);
    expect(tilted.step).toBe(plain.step);
    const from = Math.max(0, Math.ceil(epsilon / plain.step) - plain.lowerIndex);
    let diff2 = 0;
    let tailMass = 0;
    for (let i = from; i < plain.probs.length; i++) {
      diff2 += (plain.probs[i] - tilted.probs[i]) ** 2;
      tailMass += tilted.probs[i];
    }
    const seen = Math.sqrt(diff2);
    // untilted: the bound on the 2-norm is roundoff * e^{logScale}, i.e. roundoffFrom(i) / sqrt(count)
    const plainBound = plain.roundoffFrom(from) / Math.sqrt(plain.probs.length - from);
    const tiltedBound = tilted.roundoffFrom(from);
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(plainBound + tiltedBound);
    // Why the tilt: untilted, the noise is a visible share of the tail mass; tilted, it is not.
    expect(seen / tailMass).toBeGreaterThan(1e-4);
    expect(tiltedBound / tailMass).toBeLessThan(1e-6);
  });

  it('delta at tiny values is never below the exact Gaussian delta (q = 1, 2e4 steps)', () => {
    for (const [sigma, epsilon] of [
      [100, 10.59],
      [100, 9.6],
      [10, 198.7],
    ]) {
      const mu = Math.sqrt(steps) / sigma;
      const exact = gaussianDelta(mu, epsilon);
      expect(exact).toBeLessThan(1e-9);
      const pld = pldDelta({ q: 1, sigma, steps, epsilon }).delta;
      expect(pld).toBeGreaterThanOrEqual(exact);
      expect(pld).toBeLessThan(exact * 1.1);
    }
  });

  it('is monotone in the grid step again (it was noise: 4.79, 9.26, 7.50 at D = 2^-10, 2^-12, 2^-14)', () => {
    const query = { q: 0.01, sigma: 3, steps, delta: 1e-12 };
    const values = [2 ** -10, 2 ** -12, 2 ** -14].map((discretization) => pldEpsilon(query, { discretization }).epsilon);
    expect(values[1]).toBeLessThanOrEqual(values[0] * (1 + 1e-9));
    expect(values[2]).toBeLessThanOrEqual(values[1] * (1 + 1e-9));
    expect(values[2]).toBeLessThan(rdpEpsilon(query).epsilon);
    expect(rel(values[2], values[0])).toBeLessThan(0.01);
  });
});

describe('computeEpsilonDetails: min(PLD, RDP), naming the accountant that answered', () => {
  it('PLD answers where it is the tighter bound', () => {
    const result = computeEpsilonDetails({ q: 0.01, sigma: 1, steps: 1000, delta: 1e-5 }, 'pld');
    expect(result).toMatchObject({ accountant: 'pld', requested: 'pld', rdpSeries: 'exact' });
    expect(result.note).toBeUndefined();
    expect(result.epsilon).toBe(pldEpsilon({ q: 0.01, sigma: 1, steps: 1000, delta: 1e-5 }).epsilon);
  });

  it('RDP answers, with a note, where PLD certifies nothing better', () => {
    // sigma = 1e-100: the PLD grid cannot resolve the loss (its mass at +infinity exceeds delta).
    const query = { q: 0.5, sigma: 1e-100, steps: 10, delta: 1e-5 };
    expect(pldEpsilon(query).epsilon).toBe(Infinity);
    const result = computeEpsilonDetails(query, 'pld');
    expect(result).toMatchObject({ accountant: 'rdp', requested: 'pld' });
    expect(result.epsilon).toBe(rdpEpsilon(query).epsilon);
    expect(Number.isFinite(result.epsilon)).toBe(true);
    expect(result.note).toMatch(/RDP epsilon/);
  });
});

describe('PLD monotonicity (property tests)', () => {
  const q = fc.double({ min: 1e-3, max: 1, noNaN: true });
  const sigma = fc.double({ min: 0.6, max: 10, noNaN: true });
  const steps = fc.integer({ min: 1, max: 2000 });
  const delta = fc.constantFrom(1e-4, 1e-6);
  // the grid step depends on (q, sigma), so allow discretisation-level differences (~1e-4)
  const notLess = (a: number, b: number) => a >= b * (1 - 1e-3) - 1e-9;
  const eps = (q: number, sigma: number, steps: number, delta: number) => pldEpsilon({ q, sigma, steps, delta }).epsilon;

  it('epsilon is non-decreasing in steps', () => {
    fc.assert(
      fc.property(q, sigma, steps, steps, delta, (q, sigma, s1, s2, delta) => notLess(eps(q, sigma, Math.max(s1, s2), delta), eps(q, sigma, Math.min(s1, s2), delta))),
      { numRuns: 12 },
    );
  });

  it('epsilon is non-decreasing in q', () => {
    fc.assert(
      fc.property(q, q, sigma, steps, delta, (q1, q2, sigma, steps, delta) => notLess(eps(Math.max(q1, q2), sigma, steps, delta), eps(Math.min(q1, q2), sigma, steps, delta))),
      { numRuns: 12 },
    );
  });

  it('epsilon is non-increasing in sigma', () => {
    fc.assert(
      fc.property(q, sigma, sigma, steps, delta, (q, s1, s2, steps, delta) => notLess(eps(q, Math.min(s1, s2), steps, delta), eps(q, Math.max(s1, s2), steps, delta))),
      { numRuns: 12 },
    );
  });

  it('PLD <= RDP on random inputs', () => {
    fc.assert(
      fc.property(q, sigma, steps, delta, (q, sigma, steps, delta) => eps(q, sigma, steps, delta) <= rdpEpsilon({ q, sigma, steps, delta }).epsilon),
      { numRuns: 12 },
    );
  });
});
