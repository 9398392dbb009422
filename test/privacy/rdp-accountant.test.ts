import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  deltaFromRdp,
  epsilonFromRdp,
  logAFractionalOrder,
  logAFractionalOrderDpAccounting,
  logAIntegerOrder,
  RDP_ORDERS,
  rdpCurve,
  rdpDelta,
  rdpEpsilon,
} from '../../protocols/privacy/rdp-accountant.ts';
import { PrivacyParameterError } from '../../protocols/privacy/errors.ts';

interface ReferenceRow {
  q: number;
  sigma: number;
  steps: number;
  delta: number;
  epsilon: number;
}

function readReference(): ReferenceRow[] {
  const text = readFileSync(new URL('../fixtures/dp_reference_public.csv', import.meta.url), 'utf8');
  const [header, ...lines] = text.trim().split(/\r?\n/);
  const columns = header.split(',');
  return lines
    .map((line) => Object.fromEntries(line.split(',').map((v, i) => [columns[i], v])))
    .filter((row) => row.accountant === 'rdp')
    .map((row) => ({ q: Number(row.q), sigma: Number(row.sigma), steps: Number(row.steps), delta: Number(row.delta), epsilon: Number(row.epsilon) }));
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

/**
 * Independent slow computation of log A_a by quadrature, A_a = E_{z~N(0,s^2)}[(1 - q + q e^{(2z-1)/(2 s^2)})^a]:
 * A_a - 1 = integral of phi_s(z) expm1(a log1p(q expm1(w))) dz, w = (2z - 1)/(2 s^2), by the
 * trapezoid rule on a fine grid. The integrand is analytic in a strip of half-width ~pi s^2 and
 * decays like a Gaussian, so the trapezoid rule converges geometrically (error ~exp(-2 pi d / h));
 * with h = min(s, s^2)/50 it is at rounding level. Writing it for A - 1 keeps the relative
 * precision when A ~ 1 (tiny q).
 */
function logAByQuadrature(q: number, s: number, a: number): number {
  const h = Math.min(s, s * s) / 50;
  const lo = Math.min(0, a) - 40 * s - 1;
  const hi = Math.max(1, a) + 40 * s + 1;
  const n = Math.ceil((hi - lo) / h);
  const logNorm = -Math.log(s * Math.sqrt(2 * Math.PI));
  let sum = 0;
  for (let i = 0; i <= n; i++) {
    const z = lo + i * h;
    const w = (2 * z - 1) / (2 * s * s);
    // log(1 - q + q e^w) without overflow
    const logRatio = w < 30 ? Math.log1p(q * Math.expm1(w)) : w + Math.log(q) + Math.log1p(((1 - q) * Math.exp(-w)) / q);
    const logPhi = logNorm - (z * z) / (2 * s * s);
    const e = a * logRatio;
    const value = e < 30 ? Math.exp(logPhi) * Math.expm1(e) : Math.exp(logPhi + e) - Math.exp(logPhi);
    sum += (i === 0 || i === n ? 0.5 : 1) * value;
  }
  return Math.log1p(sum * h);
}

describe('RDP orders', () => {
  it('are the 156 orders of the reference (1.1..10.9, 11..63, 128..1024)', () => {
    expect(RDP_ORDERS).toHaveLength(156);
    expect(RDP_ORDERS[0]).toBe(1.1);
    expect(RDP_ORDERS[98]).toBe(10.9);
    expect(RDP_ORDERS.slice(99, 152)).toEqual(Array.from({ length: 53 }, (_, i) => 11 + i));
    expect(RDP_ORDERS.slice(152)).toEqual([128, 256, 512, 1024]);
    for (let k = 2; k <= 10; k++) expect(RDP_ORDERS).toContain(k); // exact doubles: integer path
  });
});

describe('RDP accountant vs reference values (Google dp_accounting 0.6.0)', () => {
  const rows = readReference();

  it('has reference rows', () => {
    expect(rows.length).toBeGreaterThanOrEqual(14);
  });

  it.each(rows)('q=$q sigma=$sigma steps=$steps delta=$delta -> epsilon $epsilon (1e-4 relative)', (row) => {
    const { epsilon } = rdpEpsilon(row);
    expect(rel(epsilon, row.epsilon)).toBeLessThanOrEqual(1e-4);
    // In fact to ~1e-12: same definitions, only rounding differs.
    expect(rel(epsilon, row.epsilon)).toBeLessThan(1e-10);
  });

  it.each(rows)('dp_accounting compatibility mode gives the same q=$q sigma=$sigma steps=$steps', (row) => {
    const { epsilon } = rdpEpsilon(row, { fractionalSeries: 'dp_accounting-0.6.0' });
    expect(rel(epsilon, row.epsilon)).toBeLessThan(1e-10);
  });
});

describe('fractional orders: exact series vs dp_accounting 0.6.0', () => {
  // dp_accounting 0.6.0 sums |terms| of the fractional-order series (an upper bound of A_a) and
  // drops orders whose series has not converged after 1000 terms. Values below were computed
  // with its rdp_privacy_accountant.py; where a fractional order is optimal they are a bit larger
  // than the exact RDP epsilon.
  const cases: Array<[number, number, number, number, number]> = [
    // q, sigma, steps, delta, dp_accounting epsilon
    [0.1, 1, 100, 1e-5, 7.903850223578231],
    [0.5, 2, 100, 1e-5, 15.725339864622036],
    [0.01, 0.5, 100, 1e-5, 8.034119713902147],
    [0.5, 20, 10000, 1e-3, 11.777322733886358],
  ];
  it.each(cases)('q=%s sigma=%s steps=%s delta=%s', (q, sigma, steps, delta, reference) => {
    const compat = rdpEpsilon({ q, sigma, steps, delta }, { fractionalSeries: 'dp_accounting-0.6.0' }).epsilon;
    const exact = rdpEpsilon({ q, sigma, steps, delta }).epsilon;
    expect(rel(compat, reference)).toBeLessThan(1e-8);
    expect(exact).toBeLessThan(compat);
    expect(exact).toBeGreaterThan(0.9 * compat);
  });

  it('the absolute-value series overestimates A_a; the signed one matches quadrature', () => {
    // q = 0.01, sigma = 1, a = 1.5: exact log A = 6.3627e-5 (mpmath quadrature), dp_accounting 6.6184e-5
    expect(rel(logAFractionalOrder(0.01, 1, 1.5), 6.362687166371192e-5)).toBeLessThan(1e-8);
    expect(rel(logAFractionalOrderDpAccounting(0.01, 1, 1.5), 6.618425146996524e-5)).toBeLessThan(1e-8);
    // and gives up (infinity) on slowly converging series that the exact one handles
    expect(logAFractionalOrderDpAccounting(0.5, 100, 1.1)).toBe(Infinity);
    expect(Number.isFinite(logAFractionalOrder(0.5, 100, 1.1))).toBe(true);
  });
});

describe('dp_accounting 0.6.0 compatibility series, on rows where the exact series differs', () => {
  // Rows computed by running dp_accounting 0.6.0 from source; see the `source` note in the file.
  const fixture = JSON.parse(readFileSync(new URL('./dp-accounting-0.6.0-grid.json', import.meta.url), 'utf8')) as {
    source: string;
    rows: Array<ReferenceRow & { order: number }>;
  };

  it('has rows and says where they come from', () => {
    expect(fixture.rows.length).toBeGreaterThanOrEqual(10);
    expect(fixture.source).toMatch(/dp_accounting 0\.6\.0/);
  });

  it.each(fixture.rows)('q=$q sigma=$sigma steps=$steps delta=$delta: dp_accounting $epsilon at order $order', (row) => {
    const compat = rdpEpsilon(row, { fractionalSeries: 'dp_accounting-0.6.0' });
    expect(rel(compat.epsilon, row.epsilon)).toBeLessThan(1e-10);
    expect(compat.order).toBe(row.order);
    // The exact series gives a smaller epsilon, by more than the 1e-4 tolerance: these rows are the
    // ones where "matching dp_accounting" depends on the series.
    const exact = rdpEpsilon(row).epsilon;
    expect(exact).toBeLessThan(row.epsilon * (1 - 1e-4));
  });
});

describe('fractional orders only around the best integer order (rdpEpsilon shortcut)', () => {
  // The shortcut minimises over a subset of the orders, so it can only be >= the full grid; these
  // check it is equal on a broad grid, with both series.
  const qs = [1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.99];
  const sigmas = [0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 30];
  const stepsList = [1, 10, 100, 1000, 10_000, 100_000];
  const deltas = [1e-3, 1e-5, 1e-8, 1e-12];
  it.each(['exact', 'dp_accounting-0.6.0'] as const)('equals the full grid on %s series (1944 queries)', (fractionalSeries) => {
    const mismatches: string[] = [];
    for (const q of qs)
      for (const sigma of sigmas)
        for (const steps of stepsList)
          for (const delta of deltas) {
            const query = { q, sigma, steps, delta };
            const fast = rdpEpsilon(query, { fractionalSeries });
            const full = rdpEpsilon(query, { fractionalSeries, fullGrid: true });
            if (fast.epsilon !== full.epsilon) mismatches.push(`${JSON.stringify(query)}: ${fast.epsilon} vs ${full.epsilon}`);
          }
    expect(mismatches).toEqual([]);
  });

  it('equals the full grid on random inputs', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 1e-5, max: 0.999, noNaN: true }),
        fc.double({ min: 0.4, max: 40, noNaN: true }),
        fc.integer({ min: 1, max: 100_000 }),
        fc.double({ min: -14, max: -2, noNaN: true }),
        (q, sigma, steps, logDelta) => {
          const query = { q, sigma, steps, delta: 10 ** logDelta };
          return rdpEpsilon(query).epsilon === rdpEpsilon(query, { fullGrid: true }).epsilon;
        },
      ),
      { numRuns: 60 },
    );
  });

  it('the per-(q, sigma) cache returns the same curve as a fresh computation', () => {
    for (const [q, sigma] of [[0.01, 1.1], [0.5, 3], [0.2, 0.7]]) {
      const cached = rdpCurve(q, sigma, 123);
      const again = rdpCurve(q, sigma, 123);
      const fresh = rdpCurve(q, sigma, 123, { orders: [...RDP_ORDERS] }); // another orders array: not cached
      expect(Array.from(again)).toEqual(Array.from(cached));
      expect(Array.from(fresh)).toEqual(Array.from(cached));
    }
  });

  it('is fast where the full grid is slow: large sigma, q near 1/2 (best order is an integer)', () => {
    // The full grid needs ~1e5-term series at every fractional order here (seconds); the shortcut
    // none. Not a timing assertion: it checks which orders the answer came from.
    const { order } = rdpEpsilon({ q: 0.5, sigma: 1000, steps: 1000, delta: 1e-5 });
    expect(Number.isInteger(order)).toBe(true);
    expect(order).toBeGreaterThanOrEqual(12);
  });
});

describe('closed form for q = 1', () => {
  it.each([
    [1, 1],
    [2, 100],
    [0.7, 1000],
  ])('sigma=%s steps=%s: RDP(a) = steps * a / (2 sigma^2)', (sigma, steps) => {
    const curve = rdpCurve(1, sigma, steps);
    RDP_ORDERS.forEach((a, i) => expect(rel(curve[i], (steps * a) / (2 * sigma * sigma))).toBeLessThan(1e-15));
  });

  it('epsilon is the minimum of the README conversion over the orders', () => {
    const sigma = 3;
    const steps = 50;
    const delta = 1e-6;
    let best = Infinity;
    for (const a of RDP_ORDERS) {
      const r = (steps * a) / (2 * sigma * sigma);
      best = Math.min(best, r + Math.log((a - 1) / a) - (Math.log(delta) + Math.log(a)) / (a - 1));
    }
    expect(rel(rdpEpsilon({ q: 1, sigma, steps, delta }).epsilon, best)).toBeLessThan(1e-14);
  });

  it('the subsampled formulas tend to the closed form as q -> 1', () => {
    for (const a of [2, 3.5, 10.9, 40]) {
      const logA = Number.isInteger(a) ? logAIntegerOrder(1 - 1e-12, 2, a) : logAFractionalOrder(1 - 1e-12, 2, a);
      expect(rel(logA / (a - 1), a / 8)).toBeLessThan(1e-8);
    }
  });
});

describe('log A_a against an independent quadrature', () => {
  // Hard cases: large sigma (slowly converging, alternating series), q near 1/2, order 1.1, tiny q.
  const fractional: Array<[number, number, number]> = [
    [0.5, 100, 1.1],
    [0.45, 50, 1.1],
    [0.5, 50, 1.5],
    [0.4, 100, 2.7],
    [0.5, 0.5, 1.1],
    [0.5, 0.5, 10.9],
    [0.1, 0.5, 1.3],
    [0.01, 1, 2.5],
    [0.99, 2, 3.3],
    [0.1, 5, 7.7],
    [1e-5, 1, 1.1],
    [1e-5, 1, 5.5],
    [1e-5, 0.6, 8.8],
    [0.001, 2, 1.1],
  ];
  it.each(fractional)('fractional: q=%s sigma=%s order=%s', (q, sigma, a) => {
    const want = logAByQuadrature(q, sigma, a);
    expect(rel(logAFractionalOrder(q, sigma, a), want)).toBeLessThan(1e-7);
  });

  const integer: Array<[number, number, number]> = [
    [0.5, 100, 2],
    [0.01, 1, 10],
    [1e-5, 1, 2],
    [0.1, 0.8, 32],
    [0.001, 5, 128],
  ];
  it.each(integer)('integer: q=%s sigma=%s order=%s', (q, sigma, a) => {
    expect(rel(logAIntegerOrder(q, sigma, a), logAByQuadrature(q, sigma, a))).toBeLessThan(1e-7);
  });

  it('the fractional series at an integer order reduces to the binomial expansion', () => {
    for (const [q, sigma, a] of [
      [0.3, 1.5, 2],
      [0.01, 0.7, 7],
      [0.9, 3, 12],
    ]) {
      expect(rel(logAFractionalOrder(q, sigma, a), logAIntegerOrder(q, sigma, a))).toBeLessThan(1e-10);
    }
  });

  it('is continuous across integer orders', () => {
    const at2 = logAIntegerOrder(0.05, 1.2, 2);
    expect(rel(logAFractionalOrder(0.05, 1.2, 2 + 1e-7), at2)).toBeLessThan(1e-5);
    expect(rel(logAFractionalOrder(0.05, 1.2, 2 - 1e-7), at2)).toBeLessThan(1e-5);
  });

  it('large orders with small sigma stay finite (log space)', () => {
    const curve = rdpCurve(0.5, 0.3, 1);
    for (const r of curve) expect(Number.isFinite(r) && r > 0).toBe(true);
    expect(curve[RDP_ORDERS.indexOf(1024)]).toBeGreaterThan(1000);
  });
});

describe('composition and conversion', () => {
  it('RDP is additive over steps (curves of rounds can be summed)', () => {
    const one = rdpCurve(0.02, 1.1, 1);
    const many = rdpCurve(0.02, 1.1, 100_000);
    one.forEach((r, i) => expect(rel(many[i], 100_000 * r)).toBeLessThan(1e-12));
    const a = rdpCurve(0.01, 1, 300);
    const b = rdpCurve(0.05, 2, 40);
    const summed = a.map((r, i) => r + b[i]);
    const { epsilon } = epsilonFromRdp(summed, 1e-5);
    expect(epsilon).toBeGreaterThan(epsilonFromRdp(a, 1e-5).epsilon);
    expect(epsilon).toBeGreaterThan(epsilonFromRdp(b, 1e-5).epsilon);
    expect(epsilon).toBeLessThan(epsilonFromRdp(a, 1e-5).epsilon + epsilonFromRdp(b, 1e-5).epsilon);
  });

  it('epsilonFromRdp applies the README formula and reports the minimising order', () => {
    const curve = rdpCurve(0.01, 0.9, 2000);
    const delta = 1e-7;
    let best = Infinity;
    let bestOrder = NaN;
    RDP_ORDERS.forEach((a, i) => {
      const e = curve[i] + Math.log((a - 1) / a) - (Math.log(delta) + Math.log(a)) / (a - 1);
      if (e < best) {
        best = e;
        bestOrder = a;
      }
    });
    const result = epsilonFromRdp(curve, delta);
    expect(rel(result.epsilon, best)).toBeLessThan(1e-14);
    expect(result.order).toBe(bestOrder);
  });

  it('q = 0 and steps = 0 give epsilon 0 (no release)', () => {
    expect(rdpEpsilon({ q: 0, sigma: 1, steps: 1000, delta: 1e-5 }).epsilon).toBe(0);
    expect(rdpEpsilon({ q: 0.5, sigma: 1, steps: 0, delta: 1e-5 }).epsilon).toBe(0);
  });

  it('deltaFromRdp inverts epsilonFromRdp', () => {
    for (const [q, sigma, steps, delta] of [
      [0.01, 1, 1000, 1e-5],
      [0.2, 3, 50, 1e-8],
      [1, 5, 10, 1e-3],
    ]) {
      const curve = rdpCurve(q, sigma, steps);
      const { epsilon } = epsilonFromRdp(curve, delta);
      const back = deltaFromRdp(curve, epsilon).delta;
      expect(back).toBeLessThanOrEqual(delta * (1 + 1e-9));
      expect(back).toBeGreaterThan(delta * 0.999);
      expect(rdpDelta({ q, sigma, steps, epsilon }).delta).toBe(back);
    }
  });

  it('steps = 1e5 with tiny q: finite, small epsilon, large optimal order', () => {
    const { epsilon, order } = rdpEpsilon({ q: 1e-5, sigma: 1, steps: 100_000, delta: 1e-5 });
    expect(epsilon).toBeGreaterThan(0);
    expect(epsilon).toBeLessThan(0.5);
    expect(order).toBeGreaterThan(10);
  });
});

describe('input validation', () => {
  const good = { q: 0.01, sigma: 1, steps: 100, delta: 1e-5 };
  it.each([
    ['q', -0.1],
    ['q', 1.5],
    ['q', Number.NaN],
    ['sigma', 0],
    ['sigma', -1],
    ['sigma', Number.POSITIVE_INFINITY],
    ['steps', 1.5],
    ['steps', -1],
    ['delta', 0],
    ['delta', 1],
    ['delta', Number.NaN],
  ])('%s = %s throws a PrivacyParameterError naming it', (name, value) => {
    const call = () => rdpEpsilon({ ...good, [name]: value });
    expect(call).toThrow(PrivacyParameterError);
    expect(call).toThrow(new RegExp(`^${name}\\b`));
    try {
      call();
    } catch (error) {
      expect((error as PrivacyParameterError).parameter).toBe(name);
    }
  });

  it('rejects a curve of the wrong length or with negative values', () => {
    expect(() => epsilonFromRdp(new Float64Array(3), 1e-5)).toThrow(/curve/);
    const bad = rdpCurve(0.1, 1, 1);
    bad[5] = -1;
    expect(() => epsilonFromRdp(bad, 1e-5)).toThrow(/curve/);
  });
});

describe('monotonicity (property tests)', () => {
  const q = fc.double({ min: 1e-4, max: 1, noNaN: true });
  const sigma = fc.double({ min: 0.5, max: 20, noNaN: true });
  const steps = fc.integer({ min: 1, max: 20_000 });
  const delta = fc.constantFrom(1e-3, 1e-5, 1e-8);
  const notLess = (a: number, b: number) => a >= b * (1 - 1e-9) - 1e-12;

  it('epsilon is non-decreasing in steps', () => {
    fc.assert(
      fc.property(q, sigma, steps, steps, delta, (q, sigma, s1, s2, delta) => {
        const [lo, hi] = s1 <= s2 ? [s1, s2] : [s2, s1];
        return notLess(rdpEpsilon({ q, sigma, steps: hi, delta }).epsilon, rdpEpsilon({ q, sigma, steps: lo, delta }).epsilon);
      }),
      { numRuns: 40 },
    );
  });

  it('epsilon is non-decreasing in q', () => {
    fc.assert(
      fc.property(q, q, sigma, steps, delta, (q1, q2, sigma, steps, delta) => {
        const [lo, hi] = q1 <= q2 ? [q1, q2] : [q2, q1];
        return notLess(rdpEpsilon({ q: hi, sigma, steps, delta }).epsilon, rdpEpsilon({ q: lo, sigma, steps, delta }).epsilon);
      }),
      { numRuns: 40 },
    );
  });

  it('epsilon is non-increasing in sigma', () => {
    fc.assert(
      fc.property(q, sigma, sigma, steps, delta, (q, s1, s2, steps, delta) => {
        const [lo, hi] = s1 <= s2 ? [s1, s2] : [s2, s1];
        return notLess(rdpEpsilon({ q, sigma: lo, steps, delta }).epsilon, rdpEpsilon({ q, sigma: hi, steps, delta }).epsilon);
      }),
      { numRuns: 40 },
    );
  });
});
