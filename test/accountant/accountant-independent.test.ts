import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { calibrateSigma, computeEpsilon, epsilonFromRdp, rdpCurve, RDP_ORDERS } from '../../protocols/privacy/index.ts';

/**
 * A second, independent check of the accountants: everything expected here is computed by
 * different means (numerical integration, the Gaussian closed form with our own erfc, Google's
 * reference values), never by calling the code under test twice.
 */

const REFERENCE = fileURLToPath(new URL('../fixtures/dp_reference_public.csv', import.meta.url));

function referenceRows() {
  const [header, ...lines] = readFileSync(REFERENCE, 'utf8').trim().split('\n');
  const cols = header.split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], cols[i] === 'accountant' ? v : Number(v)]))) as Array<{ accountant: string; q: number; sigma: number; steps: number; delta: number; epsilon: number }>;
}

/** log of A_a = E_{z~N(0, sigma^2)}[((1-q) + q exp((2z-1)/(2 sigma^2)))^a], by trapezoid in log space. */
function logANumerical(q: number, sigma: number, a: number): number {
  const lo = -14 * sigma;
  const hi = a + 14 * sigma;
  const n = 400_000;
  const h = (hi - lo) / n;
  let max = -Infinity;
  const logs = new Float64Array(n + 1);
  for (let i = 0; i <= n; i++) {
    const z = lo + i * h;
    const t = (2 * z - 1) / (2 * sigma * sigma);
    // log((1-q) + q e^t) computed stably
    const inner = t > 0 ? t + Math.log(q + (1 - q) * Math.exp(-t)) : Math.log(1 - q + q * Math.exp(t));
    const logPdf = -(z * z) / (2 * sigma * sigma) - Math.log(sigma * Math.sqrt(2 * Math.PI));
    logs[i] = logPdf + a * inner + Math.log(i === 0 || i === n ? h / 2 : h);
    if (logs[i] > max) max = logs[i];
  }
  let sum = 0;
  for (let i = 0; i <= n; i++) sum += Math.exp(logs[i] - max);
  return max + Math.log(sum);
}

/** erfc with relative error < 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}
const Phi = (x: number) => 0.5 * erfc(-x / Math.SQRT2);

/** Exact epsilon of a mu-GDP mechanism (Balle & Wang 2018; Dong, Roth, Su 2019): bisection on delta(epsilon). */
function gaussianEpsilonExact(mu: number, delta: number): number {
  const deltaOf = (e: number) => Phi(-e / mu + mu / 2) - Math.exp(e) * Phi(-e / mu - mu / 2);
  let lo = 0;
  let hi = 200;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (deltaOf(mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}

describe('RDP accountant (independent checks)', () => {
  it('matches every reference value of Google dp_accounting to 1e-4 relative', () => {
    const rows = referenceRows().filter((r) => r.accountant === 'rdp');
    expect(rows.length).toBeGreaterThan(10);
    for (const r of rows) {
      const got = computeEpsilon({ q: r.q, sigma: r.sigma, steps: r.steps, delta: r.delta }, 'rdp');
      expect(Math.abs(got - r.epsilon) / r.epsilon, `q=${r.q} sigma=${r.sigma} steps=${r.steps}`).toBeLessThan(1e-4);
    }
  });

  it('q = 1 is the plain Gaussian mechanism: RDP(a) = steps a / (2 sigma^2)', () => {
    const curve = rdpCurve(1, 3, 7);
    RDP_ORDERS.forEach((a, i) => expect(curve[i]).toBeCloseTo((7 * a) / 18, 9));
  });

  it('agrees with numerical integration at hard points: fractional order 1.1, large sigma, q near 0.5, tiny q', () => {
    const cases: Array<[number, number, number]> = [
      [0.01, 1.1, 1.1],
      [0.49, 2, 1.1],
      [0.49, 2, 4.5],
      [0.01, 60, 1.5],
      [1e-4, 0.8, 2.7],
      [0.2, 0.7, 3.3],
      [0.05, 5, 10.9],
    ];
    for (const [q, sigma, a] of cases) {
      const i = RDP_ORDERS.indexOf(a);
      expect(i, `order ${a} is one of the accountant's`).toBeGreaterThanOrEqual(0);
      const expected = logANumerical(q, sigma, a) / (a - 1);
      const got = rdpCurve(q, sigma, 1)[i];
      expect(Math.abs(got - expected), `q=${q} sigma=${sigma} a=${a}: ${got} vs ${expected}`).toBeLessThan(1e-6 * Math.max(1, Math.abs(expected)) + 1e-12);
    }
  });

  it('composes heterogeneous rounds by adding curves', () => {
    const a = rdpCurve(0.1, 1.5, 30);
    const b = rdpCurve(0.1, 1.5, 70);
    const sum = a.map((v, i) => v + b[i]);
    expect(epsilonFromRdp(sum, 1e-5).epsilon).toBeCloseTo(computeEpsilon({ q: 0.1, sigma: 1.5, steps: 100, delta: 1e-5 }, 'rdp'), 9);
  });

  it('epsilon grows with steps and q and falls with sigma (property)', () => {
    fc.assert(
      fc.property(fc.double({ min: 0.001, max: 1, noNaN: true }), fc.double({ min: 0.6, max: 20, noNaN: true }), fc.integer({ min: 1, max: 2000 }), (q, sigma, steps) => {
        const e = computeEpsilon({ q, sigma, steps, delta: 1e-5 });
        expect(computeEpsilon({ q, sigma, steps: steps + 1, delta: 1e-5 })).toBeGreaterThanOrEqual(e - 1e-12);
        expect(computeEpsilon({ q: Math.min(1, q * 1.1), sigma, steps, delta: 1e-5 })).toBeGreaterThanOrEqual(e - 1e-12);
        expect(computeEpsilon({ q, sigma: sigma * 1.1, steps, delta: 1e-5 })).toBeLessThanOrEqual(e + 1e-12);
      }),
      { numRuns: 60 },
    );
  });
});

describe('PLD accountant (independent checks)', () => {
  it('q = 1: never below the exact Gaussian epsilon, and within 2% of it', () => {
    for (const [sigma, steps, delta] of [[1, 1, 1e-5], [2, 100, 1e-6], [5, 20, 1e-5], [10, 1000, 1e-5], [0.8, 3, 1e-3]] as const) {
      const exact = gaussianEpsilonExact(Math.sqrt(steps) / sigma, delta);
      const pld = computeEpsilon({ q: 1, sigma, steps, delta }, 'pld');
      expect(pld, `sigma=${sigma} steps=${steps}`).toBeGreaterThanOrEqual(exact * (1 - 1e-6));
      expect(pld).toBeLessThanOrEqual(exact * 1.02);
    }
  });

  it('is at or below RDP everywhere on a grid (the tighter accountant users are entitled to)', () => {
    for (const q of [0.001, 0.01, 0.1, 0.5, 1]) {
      for (const sigma of [0.7, 1, 2, 5]) {
        for (const steps of [1, 10, 1000]) {
          const rdp = computeEpsilon({ q, sigma, steps, delta: 1e-5 }, 'rdp');
          const pld = computeEpsilon({ q, sigma, steps, delta: 1e-5 }, 'pld');
          expect(pld, `q=${q} sigma=${sigma} steps=${steps}`).toBeLessThanOrEqual(rdp * (1 + 1e-9));
        }
      }
    }
  }, 60_000);
});

describe('calibration', () => {
  it('finds the smallest sigma meeting the target, for both accountants', () => {
    for (const accountant of ['rdp', 'pld'] as const) {
      for (const [q, steps, epsilon] of [[1, 20, 3], [0.05, 400, 2], [0.01, 5000, 1]] as const) {
        const sigma = calibrateSigma({ q, steps, delta: 1e-5, epsilon, accountant });
        expect(computeEpsilon({ q, sigma, steps, delta: 1e-5 }, accountant)).toBeLessThanOrEqual(epsilon);
        expect(computeEpsilon({ q, sigma: sigma * 0.99, steps, delta: 1e-5 }, accountant)).toBeGreaterThan(epsilon);
      }
    }
  }, 60_000);
});
