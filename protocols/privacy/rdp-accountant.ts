/**
 * Renyi-DP accountant for the Poisson-subsampled Gaussian mechanism, add/remove-one adjacency.
 *
 * References
 *  - I. Mironov, "Renyi Differential Privacy", CSF 2017: RDP, composition (RDP adds up over
 *    steps) and the conversion to (epsilon, delta)-DP.
 *  - I. Mironov, K. Talwar, L. Zhang, "Renyi Differential Privacy of the Sampled Gaussian
 *    Mechanism", arXiv:1908.10530 (2019), Section 3: A_alpha, its binomial expansion for integer
 *    orders (3.2) and the two-sided series for fractional orders (3.3).
 *  - C. Canonne, G. Kamath, T. Steinke, "The Discrete Gaussian for Differential Privacy",
 *    NeurIPS 2020 (arXiv:2004.00010, Prop. 12) and S. Asoodeh et al., "A Better Bound Gives a
 *    Hundred Rounds" (arXiv:2001.05990, eq. 20): the RDP -> (epsilon, delta) conversion below.
 *
 * Definitions are those of test/fixtures/dp_reference_README.md, which are the ones of Google's
 * dp_accounting 0.6.0 (the reference values in test/fixtures were computed with it):
 *   per step  RDP(a) = log(A_a) / (a - 1),
 *             A_a = E_{z ~ N(0, sigma^2)} [ ((1 - q) + q exp((2z - 1) / (2 sigma^2)))^a ],
 *             (q = 1: RDP(a) = a / (2 sigma^2)),
 *   T steps   T * RDP(a),
 *   epsilon = min_a [ RDP(a) + log((a - 1)/a) - (log(delta) + log(a)) / (a - 1) ].
 */

import {
  checkDelta,
  checkEpsilon,
  checkQuery,
  checkSamplingRate,
  checkSigma,
  checkSteps,
  PrivacyParameterError,
  type SubsampledGaussianQuery,
} from './errors.ts';
import { log1pExp, logAddExp, logErfc, logExpm1, logNormalCdf, logNormalSf } from './special-functions.ts';

/** 1.1, 1.2, ..., 10.9, then 11..63, then 128, 256, 512, 1024: 156 orders (dp_accounting's default). */
export const RDP_ORDERS: readonly number[] = Object.freeze([
  // 1 + x / 10 (not x / 10 + 1 or (10 + x) / 10) so that each order is the very same double as in
  // dp_accounting; 2.0, 3.0, ..., 10.0 come out exactly and take the integer path.
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 53 }, (_, i) => 11 + i),
  128,
  256,
  512,
  1024,
]);

// ---------------------------------------------------------------------------------------------
// Signed numbers in log space: value = sign * exp(log). The fractional series alternates in sign
// and its terms can be far outside the double range (exp(+-1000) is common for small sigma).

interface SignedLog {
  sign: number; // +1 or -1 (meaningless when log = -Infinity, i.e. value 0)
  log: number;
}

function signedAdd(acc: SignedLog, sign: number, log: number): void {
  if (log === -Infinity) return;
  if (acc.log === -Infinity) {
    acc.sign = sign;
    acc.log = log;
    return;
  }
  const hi = Math.max(acc.log, log);
  const lo = Math.min(acc.log, log);
  if (acc.sign === sign) {
    acc.log = hi + Math.log1p(Math.exp(lo - hi));
    return;
  }
  // Opposite signs: the result takes the sign of the larger magnitude.
  if (lo === hi) {
    acc.log = -Infinity;
    acc.sign = 1;
    return;
  }
  const d = lo - hi;
  acc.sign = acc.log >= log ? acc.sign : sign;
  acc.log = hi + (d > -Math.LN2 ? Math.log(-Math.expm1(d)) : Math.log1p(-Math.exp(d)));
}

// ---------------------------------------------------------------------------------------------
// Integer orders: exact binomial expansion (Mironov-Talwar-Zhang 2019, Section 3.2)
//   A_a = sum_{k=0}^{a} C(a,k) q^k (1-q)^(a-k) exp((k^2 - k) / (2 sigma^2)).
// Since sum_k C(a,k) q^k (1-q)^(a-k) = 1 and the exponent vanishes for k = 0, 1, the same sum gives
//   A_a - 1 = sum_{k=2}^{a} C(a,k) q^k (1-q)^(a-k) expm1((k^2 - k) / (2 sigma^2)),
// a sum of positive terms. We add it up (log-sum-exp) and return log A = log1p(A - 1): this keeps
// full relative precision of log A when it is tiny (small q), where log(sum of all terms) would
// lose it to the rounding of a sum close to 1.

const LOG_FACTORIAL: Float64Array = (() => {
  const table = new Float64Array(1025);
  let sum = 0;
  let compensation = 0; // Kahan summation: log(1024!) ~ 6078, keep the table to ~1 ulp
  for (let n = 1; n <= 1024; n++) {
    const y = Math.log(n) - compensation;
    const t = sum + y;
    compensation = t - sum - y;
    sum = t;
    table[n] = sum;
  }
  return table;
})();

function logFactorial(n: number): number {
  if (n <= 1024) return LOG_FACTORIAL[n];
  // Not reached with the standard orders; Stirling series (error < 1e-17 relative for n > 1024).
  return (n + 0.5) * Math.log(n) - n + 0.5 * Math.log(2 * Math.PI) + 1 / (12 * n) - 1 / (360 * n ** 3);
}

/** log(A_a) for an integer order a >= 2 and 0 < q < 1. Exported for tests. */
export function logAIntegerOrder(q: number, sigma: number, order: number): number {
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const inv2s2 = 1 / (2 * sigma * sigma);
  const logFactOrder = logFactorial(order);
  // Plain log-sum-exp over the (<= 1023) positive terms: first the max, then the sum.
  const terms = new Float64Array(order - 1);
  let max = -Infinity;
  for (let k = 2; k <= order; k++) {
    const logBinom = logFactOrder - logFactorial(k) - logFactorial(order - k);
    const t = logBinom + k * logQ + (order - k) * log1mQ + logExpm1((k * k - k) * inv2s2);
    terms[k - 2] = t;
    if (t > max) max = t;
  }
  if (max === -Infinity) return 0;
  let sum = 0;
  for (let i = 0; i < terms.length; i++) sum += Math.exp(terms[i] - max);
  const logAMinus1 = max + Math.log(sum);
  return log1pExp(logAMinus1);
}

// ---------------------------------------------------------------------------------------------
// Fractional orders: Mironov-Talwar-Zhang 2019, Section 3.3. Split the integral defining A_a at
// z0 = sigma^2 log(1/q - 1) + 1/2, where q e^{(2z-1)/(2 sigma^2)} = 1 - q, and expand
// ((1-q) + q e^{...})^a by the (generalised) binomial series on each side, in the ratio that is
// <= 1 there. Integrating term by term against N(0, sigma^2):
//   A_a = sum_{k>=0} C(a,k) (s0_k + s1_k),
//   s0_k = q^k (1-q)^(a-k) exp((k^2-k)/(2 sigma^2)) Phi((z0 - k)/sigma)            (z <= z0),
//   s1_k = q^(a-k) (1-q)^k exp(((a-k)^2-(a-k))/(2 sigma^2)) (1 - Phi((z0 - (a-k))/sigma))  (z > z0).
// Note that s0_k = (1-q)^a * I0_k with I0_k = E[x(z)^k ; z <= z0], x(z) = q/(1-q) e^{(2z-1)/(2sigma^2)}
// <= 1 there, so I0_k is non-increasing in k (likewise s1_k); and for k > a, |C(a,k+1)| =
// |C(a,k)| (k - a)/(k + 1) < |C(a,k)| with alternating signs. Hence for k > a the terms
// t_k = C(a,k)(s0_k + s1_k) alternate in sign with decreasing magnitude, and by the alternating
// series (Leibniz) bound the remainder after term K is at most |t_{K+1}| <= |t_K| (K - a)/(K + 1).
// We stop as soon as that bound is negligible against the sum (relative 1e-10 of log A), not after a
// fixed count: for large sigma and q near 1/2 the series needs 1e4-1e5 terms (terms decay only
// polynomially, like k^(-a-2)), for most inputs a few dozen.
//
// As for integer orders we accumulate B = A_a - 1 (the k = 0 term of the z <= z0 side enters as
// s0_0 - 1 = expm1(a log(1-q) + log Phi(z0/sigma)), computed directly), for precision when A ~ 1.
//
// Checked against direct numerical integration of A_a (test/privacy/rdp-accountant.test.ts).

const FRACTIONAL_RELATIVE_TOLERANCE = 1e-10;
const FRACTIONAL_MAX_TERMS = 20_000_000;

/** log(A_a) for a non-integer order a > 1 and 0 < q < 1. Exported for tests. */
export function logAFractionalOrder(q: number, sigma: number, order: number): number {
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const inv2s2 = 1 / (2 * sigma * sigma);
  const z0 = sigma * sigma * (log1mQ - logQ) + 0.5;
  const logTolerance = Math.log(FRACTIONAL_RELATIVE_TOLERANCE);

  const b: SignedLog = { sign: 1, log: -Infinity }; // B = A - 1
  let logAbsBinom = 0; // log |C(order, k)|
  let binomSign = 1;
  for (let k = 0; k < FRACTIONAL_MAX_TERMS; k++) {
    const j = order - k;
    // Both tails with full relative precision, also when close to 1 (log Phi ~ -1e-20 matters
    // in s0_0 - 1 below when q is tiny).
    const logPhi0 = logNormalCdf((z0 - k) / sigma);
    const logSf1 = logNormalSf((z0 - j) / sigma);
    const logS0 = k * logQ + j * log1mQ + (k * k - k) * inv2s2 + logPhi0;
    const logS1 = j * logQ + k * log1mQ + (j * j - j) * inv2s2 + logSf1;
    if (k === 0) {
      // s0_0 - 1 <= 0, computed without cancellation; then + s1_0.
      const s0Minus1 = Math.expm1(order * log1mQ + logPhi0);
      signedAdd(b, s0Minus1 < 0 ? -1 : 1, Math.log(Math.abs(s0Minus1)));
      signedAdd(b, 1, logS1);
    } else {
      signedAdd(b, binomSign, logAbsBinom + logS0);
      signedAdd(b, binomSign, logAbsBinom + logS1);
    }
    if (j === 0) break; // integer order passed in (tests): the series is a finite sum
    if (k > order) {
      const logRemainder = logAbsBinom + logAddExp(logS0, logS1) + Math.log((k - order) / (k + 1));
      if (logRemainder <= logTolerance + b.log || logRemainder < -1000) break;
    }
    // C(order, k+1) = C(order, k) (order - k) / (k + 1)
    logAbsBinom += Math.log(Math.abs(j)) - Math.log(k + 1);
    if (j < 0) binomSign = -binomSign;
    if (k === FRACTIONAL_MAX_TERMS - 1) {
      // Not expected to happen; stay on the safe side: add the (Leibniz) remainder bound.
      signedAdd(b, 1, logAbsBinom + logAddExp(logS0, logS1));
    }
  }
  if (b.log === -Infinity) return 0;
  // log A = log1p(B); B < 0 can only be rounding noise around A = 1.
  return b.sign > 0 ? log1pExp(b.log) : Math.log1p(-Math.min(1, Math.exp(b.log)));
}

// ---------------------------------------------------------------------------------------------
// dp_accounting 0.6.0 compatibility. Since April 2024 (commit "Improve numerical stability of RDP
// computation") dp_accounting's fractional-order series adds up the ABSOLUTE values of the terms
// C(a,k) s0_k and C(a,k) s1_k (log|C| from gammaln, then log-add regardless of sign), stops when
// both parts decrease and the last terms are below exp(-30) times the running total, and gives up
// after 1000 terms, returning RDP = infinity (the order is then ignored). The absolute sum is an
// upper bound of A_a, so its epsilons are valid but looser than the exact ones: by up to a few
// percent when the optimal order is below ~3 (e.g. q = 0.1, sigma = 1, 100 steps, delta = 1e-5:
// 7.9039 vs exact 7.8993), and orders are dropped for large sigma with q near 1/2. The reference
// values in test/fixtures were computed with that library; this mode reproduces them where the
// exact series and the library differ. It is an independent re-implementation of the procedure.

const DP_ACCOUNTING_MAX_TERMS = 1000;

/** log(A_a) as dp_accounting 0.6.0 computes it for fractional orders (see above); may be Infinity. */
export function logAFractionalOrderDpAccounting(q: number, sigma: number, order: number): number {
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const inv2s2 = 1 / (2 * sigma * sigma);
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const invSqrt2Sigma = 1 / (Math.SQRT2 * sigma);
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  let lastS0 = -Infinity;
  let lastS1 = -Infinity;
  let logAbsBinom = 0;
  for (let k = 0; k < DP_ACCOUNTING_MAX_TERMS; k++) {
    const j = order - k;
    const logS0 = logAbsBinom + k * logQ + j * log1mQ + (k * k - k) * inv2s2 + logErfc((k - z0) * invSqrt2Sigma) - Math.LN2;
    const logS1 = logAbsBinom + j * logQ + k * log1mQ + (j * j - j) * inv2s2 + logErfc((z0 - j) * invSqrt2Sigma) - Math.LN2;
    logA0 = logAddExp(logA0, logS0);
    logA1 = logAddExp(logA1, logS1);
    const total = logAddExp(logA0, logA1);
    if (logS0 < lastS0 && logS1 < lastS1 && Math.max(logS0, logS1) < total - 30) return total;
    lastS0 = logS0;
    lastS1 = logS1;
    logAbsBinom += Math.log(Math.abs(j)) - Math.log(k + 1);
  }
  return Infinity;
}

/**
 * How fractional orders are computed:
 *  - 'exact' (default): the signed series with a rigorous remainder bound (exact A_a to ~1e-10);
 *  - 'dp_accounting-0.6.0': the library's absolute-value series (a looser upper bound), to
 *    reproduce its numbers exactly.
 * Integer orders and q in {0, 1} are the same in both.
 */
export type FractionalSeries = 'exact' | 'dp_accounting-0.6.0';

export interface RdpOptions {
  /** Orders of the curve (default RDP_ORDERS). */
  orders?: readonly number[];
  fractionalSeries?: FractionalSeries;
}

/** RDP of one step of the Poisson-subsampled Gaussian at one order (validated inputs). */
function rdpOneStep(q: number, sigma: number, order: number, series: FractionalSeries): number {
  if (q === 0) return 0;
  if (q === 1) return order / (2 * sigma * sigma);
  // sigma so small that 1 / (2 sigma^2) overflows: A_a (>= q^a e^{(a^2 - a) / (2 sigma^2)} for
  // integer a) is infinite in double precision; say so instead of letting Infinity - Infinity = NaN
  // into the sums.
  if (!Number.isFinite(1 / (2 * sigma * sigma))) return Infinity;
  let logA: number;
  if (Number.isInteger(order)) logA = logAIntegerOrder(q, sigma, order);
  else if (series === 'exact') logA = logAFractionalOrder(q, sigma, order);
  else logA = logAFractionalOrderDpAccounting(q, sigma, order);
  // log A >= 0 in exact arithmetic (A_a >= 1 by Jensen); clamp rounding noise.
  return Math.max(0, logA) / (order - 1);
}

// Per-step curves are cached by (q, sigma, series) for the default orders: RDP is linear in the
// number of steps, and callers ask the same mechanism again and again (the CLI's sigma command,
// the ledger at every round, PLD's tilt guess). Entries are filled lazily (NaN = not computed yet),
// so a query that needs only some orders (rdpEpsilon below) computes only those.
const CURVE_CACHE_SIZE = 256;
const curveCache = new Map<string, Float64Array>();

function cachedPerStep(q: number, sigma: number, series: FractionalSeries, orders: readonly number[]): Float64Array {
  if (orders !== RDP_ORDERS) return new Float64Array(orders.length).fill(Number.NaN);
  const key = `${q}|${sigma}|${series}`;
  let values = curveCache.get(key);
  if (values) {
    curveCache.delete(key); // most recently used goes last
  } else {
    values = new Float64Array(orders.length).fill(Number.NaN);
    if (curveCache.size >= CURVE_CACHE_SIZE) curveCache.delete(curveCache.keys().next().value as string);
  }
  curveCache.set(key, values);
  return values;
}

function perStepAt(values: Float64Array, i: number, q: number, sigma: number, orders: readonly number[], series: FractionalSeries): number {
  let v = values[i];
  if (Number.isNaN(v)) {
    v = rdpOneStep(q, sigma, orders[i], series);
    values[i] = v;
  }
  return v;
}

function checkRdpOptions(options: RdpOptions): { orders: readonly number[]; series: FractionalSeries } {
  const orders = options.orders ?? RDP_ORDERS;
  const series = options.fractionalSeries ?? 'exact';
  if (series !== 'exact' && series !== 'dp_accounting-0.6.0') {
    throw new PrivacyParameterError(`fractionalSeries must be 'exact' or 'dp_accounting-0.6.0', got ${String(series)}`, 'fractionalSeries');
  }
  for (const order of orders) {
    if (!(typeof order === 'number' && order > 1 && Number.isFinite(order))) {
      throw new PrivacyParameterError(`orders must be finite numbers > 1, got ${order}`, 'orders');
    }
  }
  return { orders, series };
}

/**
 * RDP of `steps` compositions of the Poisson-subsampled Gaussian at each order of RDP_ORDERS (or
 * of options.orders). Curves of different rounds (different q, sigma) can be summed elementwise: RDP
 * composes additively (Mironov 2017, Prop. 1), then converted once with epsilonFromRdp.
 */
export function rdpCurve(q: number, sigma: number, steps: number, options: RdpOptions = {}): Float64Array {
  checkSamplingRate(q);
  checkSigma(sigma);
  checkSteps(steps);
  const { orders, series } = checkRdpOptions(options);
  const curve = new Float64Array(orders.length);
  if (steps === 0 || q === 0) return curve;
  const values = cachedPerStep(q, sigma, series, orders);
  for (let i = 0; i < orders.length; i++) curve[i] = steps * perStepAt(values, i, q, sigma, orders, series);
  return curve;
}

function checkCurve(curve: ArrayLike<number>, orders: readonly number[]): void {
  if (curve.length !== orders.length) {
    throw new PrivacyParameterError(`curve must have one RDP value per order (${orders.length}), got ${curve.length}`, 'curve');
  }
  for (let i = 0; i < curve.length; i++) {
    const r = curve[i];
    if (typeof r !== 'number' || Number.isNaN(r) || r < 0) {
      throw new PrivacyParameterError(`curve values must be numbers >= 0 (or Infinity), got ${r} at order ${orders[i]}`, 'curve');
    }
  }
}

/**
 * (epsilon, delta)-DP from an RDP curve: the conversion of Canonne-Kamath-Steinke 2020 (Prop. 12) /
 * Asoodeh et al. 2020, as in the README and in dp_accounting:
 *   epsilon = min over orders a of  RDP(a) + log1p(-1/a) - (log(delta) + log(a)) / (a - 1),
 * clamped at 0. Like dp_accounting, an order whose RDP is so small that delta^2 > 1 - exp(-RDP)
 * yields epsilon = 0: RDP(a) >= KL divergence (Renyi divergence is non-decreasing in the order) and
 * total variation <= sqrt(1 - exp(-KL)) (Bretagnolle-Huber), so the pair is (0, delta)-DP. That
 * only matters when RDP < ~delta^2 (e.g. q = 0, where it gives epsilon = 0 exactly).
 * Returns the minimising order too (the first one on ties).
 */
export function epsilonFromRdp(
  curve: ArrayLike<number>,
  delta: number,
  orders: readonly number[] = RDP_ORDERS,
): { epsilon: number; order: number } {
  checkDelta(delta);
  checkCurve(curve, orders);
  const logDelta = Math.log(delta);
  let best = Infinity;
  let bestOrder = orders[0];
  for (let i = 0; i < orders.length; i++) {
    const a = orders[i];
    const r = curve[i];
    let eps: number;
    if (delta * delta + Math.expm1(-r) > 0) eps = 0;
    else eps = r + Math.log1p(-1 / a) - (logDelta + Math.log(a)) / (a - 1);
    if (eps < best) {
      best = eps;
      bestOrder = a;
    }
  }
  return { epsilon: Math.max(0, best), order: bestOrder };
}

/**
 * The converse: the smallest delta such that the curve gives (epsilon, delta)-DP, by the same
 * bound solved for delta (log delta = (a-1)(RDP(a) - epsilon + log1p(-1/a)) - log a), together with
 * the KL bound delta <= sqrt(1 - exp(-RDP(a))) as in dp_accounting.compute_delta.
 */
export function deltaFromRdp(
  curve: ArrayLike<number>,
  epsilon: number,
  orders: readonly number[] = RDP_ORDERS,
): { delta: number; order: number } {
  checkEpsilon(epsilon);
  checkCurve(curve, orders);
  let best = Infinity;
  let bestOrder = orders[0];
  for (let i = 0; i < orders.length; i++) {
    const a = orders[i];
    const r = curve[i];
    let logDelta = r === 0 ? -Infinity : 0.5 * Math.log1p(-Math.exp(-r));
    logDelta = Math.min(logDelta, (a - 1) * (r - epsilon + Math.log1p(-1 / a)) - Math.log(a));
    if (logDelta < best) {
      best = logDelta;
      bestOrder = a;
    }
  }
  return { delta: Math.min(1, Math.exp(best)), order: bestOrder };
}

/**
 * epsilon of the query by the RDP accountant, and the order that achieves it.
 *
 * Speed: the fractional-order series is by far the costly part (1e4-1e5 terms for large sigma), and
 * fractional orders (1.1 .. 10.9) only matter when the best order is small. So the integer orders
 * are converted first, and fractional orders are evaluated only strictly between the neighbours of
 * the best integer order a* (a* - 1 < a < a* + 1): none at all once a* >= 12 (plus the smallest
 * order when the RDP is tiny, for the epsilon = 0 branch of the conversion). The minimum over a
 * subset of the orders is never below the minimum over all of them, so this can only err on the
 * safe (larger) side; since epsilon(a) is unimodal in practice it equals the full-grid minimum,
 * which test/privacy/rdp-accountant.test.ts checks on a broad grid (options.fullGrid: every order).
 */
export function rdpEpsilon(query: SubsampledGaussianQuery, options: RdpOptions & { fullGrid?: boolean } = {}): { epsilon: number; order: number } {
  const { q, sigma, steps, delta } = checkQuery(query);
  const { orders, series } = checkRdpOptions(options);
  if (options.fullGrid || steps === 0 || q === 0 || q === 1) return epsilonFromRdp(rdpCurve(q, sigma, steps, options), delta, orders);
  const values = cachedPerStep(q, sigma, series, orders);
  // epsilonFromRdp on a sub-curve: orders not evaluated get RDP = Infinity (never chosen).
  const curve = new Float64Array(orders.length).fill(Infinity);
  let hasInteger = false;
  for (let i = 0; i < orders.length; i++) {
    if (!Number.isInteger(orders[i])) continue;
    curve[i] = steps * perStepAt(values, i, q, sigma, orders, series);
    hasInteger = true;
  }
  if (!hasInteger) return epsilonFromRdp(rdpCurve(q, sigma, steps, options), delta, orders);
  const best = epsilonFromRdp(curve, delta, orders).order;
  // The conversion's other branch, epsilon = 0 when RDP(a) < -log(1 - delta^2) (see
  // epsilonFromRdp), is easiest to meet at the smallest order (RDP is non-decreasing in the order).
  // Evaluate that order too when the total RDP is within a factor 100 of the threshold at the
  // smallest integer order (RDP(1.1) >= RDP(2) / 100 in every regime we have seen; either way the
  // result stays an upper bound).
  let smallest = 0;
  let smallestInteger = -1;
  for (let i = 0; i < orders.length; i++) {
    if (orders[i] < orders[smallest]) smallest = i;
    if (Number.isInteger(orders[i]) && (smallestInteger < 0 || orders[i] < orders[smallestInteger])) smallestInteger = i;
  }
  const nearZero = curve[smallestInteger] < -100 * Math.log1p(-delta * delta);
  for (let i = 0; i < orders.length; i++) {
    const a = orders[i];
    if (Number.isInteger(a)) continue;
    if ((a > best - 1 && a < best + 1) || (i === smallest && nearZero)) curve[i] = steps * perStepAt(values, i, q, sigma, orders, series);
  }
  return epsilonFromRdp(curve, delta, orders);
}

/** delta at a given epsilon for the same mechanism by the RDP accountant. */
export function rdpDelta(
  query: { q: number; sigma: number; steps: number; epsilon: number },
  options: RdpOptions = {},
): { delta: number; order: number } {
  const q = checkSamplingRate(query?.q);
  const sigma = checkSigma(query.sigma);
  const steps = checkSteps(query.steps);
  const epsilon = checkEpsilon(query.epsilon);
  return deltaFromRdp(rdpCurve(q, sigma, steps, options), epsilon, options.orders);
}
