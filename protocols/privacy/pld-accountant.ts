/**
 * Privacy-loss-distribution (PLD) accountant for the Poisson-subsampled Gaussian mechanism composed
 * over `steps` steps, add/remove-one adjacency. Tighter than RDP: it computes the (epsilon, delta)
 * curve of the composition of a discretised dominating pair, which is an upper bound of the true
 * curve; epsilon is typically within 1e-5..1e-4 relative of the truth (at most 1e-3).
 *
 * References
 *  - A. Koskela, J. Jalko, A. Honkela, "Computing Tight Differential Privacy Guarantees Using FFT",
 *    AISTATS 2020: the PLD on a grid, composition by FFT, truncation and aliasing analysis.
 *  - V. Doroshenko, B. Ghazi, P. Kamath, R. Kumar, P. Manurangsi, "Connect the Dots: Tighter
 *    Discrete Approximations of Privacy Loss Distributions", PETS 2022: the pessimistic
 *    discretisation used here (below).
 *  - Y. Zhu, J. Dong, Y.-X. Wang, "Optimal Accounting of Differential Privacy via Characteristic
 *    Function", AISTATS 2022, and the dp_accounting PLD library: for add/remove adjacency with
 *    subsampling the two directions (remove, add) have different PLDs; both are composed and the
 *    worse one is reported.
 *  - B. Balle, Y.-X. Wang, "Improving the Gaussian Mechanism for Differential Privacy", ICML 2018:
 *    the exact curve of the Gaussian mechanism (gaussianDelta / gaussianEpsilon below, used to test
 *    the q = 1 case).
 *
 * The two dominating pairs (one step, sensitivity 1, noise std sigma, mixture
 * M = (1 - q) N(0, sigma^2) + q N(1, sigma^2), base N0 = N(0, sigma^2)):
 *   remove: P = M,  Q = N0, privacy loss L(x) =  log(1 - q + q e^{(2x-1)/(2 sigma^2)}), x ~ P;
 *   add:    P = N0, Q = M,  privacy loss L(x) = -log(1 - q + q e^{(2x-1)/(2 sigma^2)}), x ~ P.
 * Their hockey-stick divergence delta(eps) = P(L > eps) - e^eps Q(L > eps) has closed forms in
 * terms of the normal CDF since L is monotone in x.
 *
 * Discretisation ("connect the dots"). On the grid eps_j = j * D we want a discrete PLD whose
 * delta(eps) equals the true one at every grid point and lies above it in between. delta is convex
 * in e^eps (it is a supremum of affine functions of e^eps), so connecting the grid values linearly
 * in e^eps gives an upper bound; that piecewise-linear curve is the hockey-stick curve of the
 * discrete PLD obtained by splitting the probability of each loss value l in (a, b] = (eps_j,
 * eps_{j+1}] between a and b so that E[e^{-L}] (the Q mass) is preserved:
 *   mass to b = (P(I) - e^a Q(I)) / (1 - e^{-D}),  mass to a = P(I) - mass to b,
 * with P(I), Q(I) the probabilities of the loss interval under P and Q. The probability below the
 * lowest grid point is moved up to it and P(L > eps_top) - e^eps_top Q(L > eps_top) = delta(eps_top)
 * goes to +infinity (both pessimistic). A curve that is pointwise above another is that of a
 * dominating pair (Blackwell), and dominance survives composition, so composing the discrete PLDs
 * and reading off their exact delta(eps) gives an upper bound of the composed mechanism's delta.
 * Unlike rounding every loss up to the grid ("privacy buckets"), this does not shift each step's
 * loss by ~D/2 (which would add ~steps * D / 2 to epsilon); the error per step is second order.
 *
 * Composition: the T-fold convolution by FFT, pmf -> DFT -> (DFT)^T -> inverse DFT, on a cyclic
 * window [K_lo, K_lo + N) of the composed loss index (N a power of two). The window comes from
 * Chernoff bounds on the discrete per-step PMF: P(S >= u) <= exp(T log E[e^{tL}] - t u), t > 0
 * (and t < 0 for the lower tail). Mass below the window wraps around to the top of it (only
 * increases delta: pessimistic); mass above wraps to the bottom, so its Chernoff bound is added to
 * the mass at +infinity. The remove and add PMFs (both real) share one complex FFT.
 *
 * Precision choices (measured; see test/privacy/pld-accountant.test.ts):
 *  - grid step D = the power of two just below (per-step loss std) / 32, clamped to [2^-40, 2^-6]
 *    (e.g. q = 0.01, sigma = 1: D = 2^-12 ~ 2.4e-4; q = 0.001, sigma = 2: 2^-16 ~ 1.5e-5; q = 1:
 *    2^-6). Splitting adds at most D^2/4 to the per-step loss variance (< 2.5e-4 of it); measured,
 *    the epsilon error shrinks like D^2 and is ~1e-5 to 5e-5 relative at this D (halving D costs 2x
 *    time for 4x less error). A fixed D, as in dp_accounting (1e-4), is too coarse for small q:
 *    at q = 1e-4, sigma = 1, 1e5 steps it overestimates epsilon by 5% (0.1389 vs 0.1319). D is a
 *    power of two so that small changes of sigma do not change it (epsilon stays monotone in sigma
 *    for calibration, up to the rare jumps at D boundaries, of the size of the error above).
 *    Very wide loss ranges (tiny sigma) coarsen D until the per-step grid has <= 2^20 points and
 *    the FFT <= 2^21: still an upper bound, less tight.
 *  - for one step the discrete curve is exact at grid points, so epsilon is over by at most D; when
 *    the answer is small against D (few steps, small epsilon) the query is rerun once with
 *    D <= epsilon / 1024 (power of two, at most 64x finer), i.e. <= 1e-3 relative.
 *  - truncation: total pessimistic slack in delta <= 1e-5 * delta for epsilon queries (<= 1e-14
 *    absolute for delta queries), split between per-step upper and lower truncation and the
 *    composed window's tails.
 *  - the FFT works in double precision. Its round-off (~1e-16 * log N * steps absolute per entry) is
 *    bounded rigorously and the bound is added to delta (see fftRelativeError / composeBoth), and
 *    the PMF is exponentially tilted where that bound would otherwise matter (many steps, tiny
 *    delta), which keeps it a negligible share of delta. Clamping negative round-off to 0 is covered
 *    by the same bound. If PLD cannot certify a better epsilon than RDP, computeEpsilonDetails
 *    (calibrate.ts) reports RDP's and says so.
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
import { rdpEpsilon } from './rdp-accountant.ts';
import { logAddExp, logNormalCdf, logNormalCdfAndSf, logSubExp, normalSfInverseLog } from './special-functions.ts';

export interface PldOptions {
  /** Grid step of the privacy loss; default: chosen from the per-step loss spread (see above). */
  discretization?: number;
}

// ---------------------------------------------------------------------------------------------
// One step: privacy loss of the two dominating pairs.

type Direction = 'remove' | 'add';

class StepLoss {
  readonly logQ: number;
  readonly log1mQ: number;
  private readonly scratch = new Float64Array(4);

  constructor(
    readonly q: number,
    readonly sigma: number,
  ) {
    this.logQ = Math.log(q);
    this.log1mQ = Math.log1p(-q);
  }

  /** v(x) = log(1 - q + q e^{w}), w = (2x - 1) / (2 sigma^2): the remove loss at x. */
  logRatio(x: number): number {
    const w = (2 * x - 1) / (2 * this.sigma * this.sigma);
    return logAddExp(this.log1mQ, this.logQ + w);
  }

  /** The x with logRatio(x) = v, for v > log(1 - q). */
  xOfLogRatio(v: number): number {
    let w: number;
    if (this.q === 1) w = v;
    else if (v > 0) w = v + Math.log1p(-(1 - this.q) * Math.exp(-v)) - this.logQ;
    else w = Math.log(Math.expm1(v) + this.q) - this.logQ;
    return this.sigma * this.sigma * w + 0.5;
  }

  /**
   * log P(L > l), log Q(L > l), log P(L <= l), log Q(L <= l) for the given direction, written into
   * out[0..3]. Each is computed from the normal tail on its own side, so that all four keep full
   * relative precision, also when tiny.
   */
  logTails(direction: Direction, l: number, out: Float64Array): void {
    const v = direction === 'remove' ? l : -l;
    if (this.q < 1 && !(v > this.log1mQ)) {
      // remove: l <= log(1-q), every x has a larger loss; add: l >= -log(1-q), none has.
      const above = direction === 'remove' ? 0 : -Infinity;
      const below = direction === 'remove' ? -Infinity : 0;
      out[0] = above;
      out[1] = above;
      out[2] = below;
      out[3] = below;
      return;
    }
    const x = this.xOfLogRatio(v);
    const y0 = x / this.sigma;
    const y1 = (x - 1) / this.sigma;
    // log Phi and log(1 - Phi) at y0 and y1.
    const phi = this.scratch;
    logNormalCdfAndSf(y0, phi, 0);
    logNormalCdfAndSf(y1, phi, 2);
    const lc0 = phi[0];
    const ls0 = phi[1];
    const lc1 = phi[2];
    const ls1 = phi[3];
    // Mixture (1-q) N(0) + q N(1) on each side of x.
    const mixAbove = logAddExp(this.log1mQ + ls0, this.logQ + ls1);
    const mixBelow = logAddExp(this.log1mQ + lc0, this.logQ + lc1);
    if (direction === 'remove') {
      // L > l  <=>  X > x;  P = mixture, Q = N0.
      out[0] = mixAbove;
      out[1] = ls0;
      out[2] = mixBelow;
      out[3] = lc0;
    } else {
      // L > l  <=>  X < x;  P = N0, Q = mixture.
      out[0] = lc0;
      out[1] = mixBelow;
      out[2] = ls0;
      out[3] = mixAbove;
    }
  }

  /** The loss at x for a direction (for placing the truncation points). */
  lossAt(direction: Direction, x: number): number {
    const v = this.logRatio(x);
    return direction === 'remove' ? v : -v;
  }

  /** Standard deviation of the loss under P, by the trapezoid rule over x (only sets the grid). */
  lossStd(direction: Direction): number {
    const s = this.sigma;
    const lo = -12 * s;
    const hi = 1 + 12 * s;
    const m = 4000;
    const h = (hi - lo) / m;
    let w0 = 0;
    let w1 = 0;
    let w2 = 0;
    for (let i = 0; i <= m; i++) {
      const x = lo + i * h;
      const base = Math.exp(-0.5 * (x / s) ** 2);
      const density = direction === 'remove' ? (1 - this.q) * base + this.q * Math.exp(-0.5 * ((x - 1) / s) ** 2) : base;
      const weight = (i === 0 || i === m ? 0.5 : 1) * density;
      const l = this.lossAt(direction, x);
      w0 += weight;
      w1 += weight * l;
      w2 += weight * l * l;
    }
    const mean = w1 / w0;
    return Math.sqrt(Math.max(0, w2 / w0 - mean * mean));
  }
}

// ---------------------------------------------------------------------------------------------
// Discretisation of one step (connect-the-dots, pessimistic).

interface DiscretePld {
  /** Grid index of probs[0]; atom i sits at loss (lowerIndex + i) * step. */
  lowerIndex: number;
  probs: Float64Array;
  /** Probability of loss +infinity. */
  infinityMass: number;
}

/** log(e^a - e^b) of the mass of an interval from its tail (a, b = log S at the ends) or CDF values. */
function logIntervalMass(logAboveA: number, logAboveB: number, logBelowA: number, logBelowB: number): number {
  // Difference of the smaller-side values: S(a) - S(b) when S(a) < 1/2, else F(b) - F(a).
  return logAboveA < -Math.LN2 ? logSubExp(logAboveA, logAboveB) : logSubExp(logBelowB, logBelowA);
}

const MAX_STEP_GRID = 1 << 20;

function discretizeStep(loss: StepLoss, direction: Direction, step: number, tailMass: number): DiscretePld | null {
  // Truncation points: the P-probability beyond each is <= tailMass.
  const z = normalSfInverseLog(Math.log(tailMass));
  const s = loss.sigma;
  let lowLoss: number;
  let highLoss: number;
  if (direction === 'remove') {
    lowLoss = loss.lossAt('remove', -s * z); // P(L <= .) <= Phi(x / sigma)
    highLoss = loss.lossAt('remove', 1 + s * z); // P(L > .) <= 1 - Phi((x - 1) / sigma)
  } else {
    lowLoss = loss.lossAt('add', s * z); // P(L <= .) = 1 - Phi(x / sigma)
    highLoss = loss.lossAt('add', -s * z); // P(L > .) = Phi(x / sigma)
  }
  const jLo = Math.floor(lowLoss / step);
  const jHi = Math.max(jLo + 1, Math.ceil(highLoss / step));
  const n = jHi - jLo + 1;
  if (n > MAX_STEP_GRID) return null; // caller coarsens the grid

  const logAboveP = new Float64Array(n);
  const logAboveQ = new Float64Array(n);
  const logBelowP = new Float64Array(n);
  const logBelowQ = new Float64Array(n);
  const tails = new Float64Array(4);
  for (let i = 0; i < n; i++) {
    loss.logTails(direction, (jLo + i) * step, tails);
    logAboveP[i] = tails[0];
    logAboveQ[i] = tails[1];
    logBelowP[i] = tails[2];
    logBelowQ[i] = tails[3];
  }

  const probs = new Float64Array(n);
  probs[0] += Math.exp(logBelowP[0]); // everything at or below the lowest point, moved up to it
  const oneMinusExpMinusStep = -Math.expm1(-step);
  for (let i = 0; i + 1 < n; i++) {
    const logP = logIntervalMass(logAboveP[i], logAboveP[i + 1], logBelowP[i], logBelowP[i + 1]);
    if (logP === -Infinity) continue;
    const logQ = logIntervalMass(logAboveQ[i], logAboveQ[i + 1], logBelowQ[i], logBelowQ[i + 1]);
    const p = Math.exp(logP);
    const a = (jLo + i) * step;
    const eaQ = Math.exp(a + logQ); // E_P[e^{a - L}; I], between e^{-step} p and p
    let toUpper = (p - eaQ) / oneMinusExpMinusStep;
    if (!(toUpper >= 0)) toUpper = 0;
    if (toUpper > p) toUpper = p;
    probs[i] += p - toUpper;
    probs[i + 1] += toUpper;
  }
  // Above the top point: its Q mass (times e^top) stays at the top, the rest is delta(top) -> +inf.
  const top = jHi * step;
  const logTopQ = top + logAboveQ[n - 1];
  probs[n - 1] += Math.exp(Math.min(logTopQ, logAboveP[n - 1]));
  const infinityMass = Math.exp(logSubExp(logAboveP[n - 1], logTopQ));
  return { lowerIndex: jLo, probs, infinityMass };
}

// ---------------------------------------------------------------------------------------------
// Chernoff window for the T-fold composition.

function logMgf(pld: DiscretePld, t: number, step: number): number {
  // log sum_i p_i e^{t l_i}: the largest exponent is at the first or last atom (e^{t l} is monotone).
  const { probs, lowerIndex } = pld;
  let first = 0;
  let last = probs.length - 1;
  while (first <= last && !(probs[first] > 0)) first++;
  while (last >= first && !(probs[last] > 0)) last--;
  if (first > last) return -Infinity;
  const max = t * (lowerIndex + (t > 0 ? last : first)) * step;
  // e^{t l_i - max} = e^{a (i - iMax)}, a = t * step: in blocks of B atoms, one exp per block times a
  // table of e^{a j}, j < B (each product within a few ulps, like one exp). This is the inner loop of
  // the Chernoff window search (~130 calls over up to 1e6 atoms). B |a| <= 30 keeps the block factor
  // from underflowing much earlier than a direct exp would (e^-715 instead of e^-745).
  const a = t * step;
  const iMax = t > 0 ? last : first;
  const block = Math.max(1, Math.min(64, Math.floor(30 / Math.max(Math.abs(a), 1e-300))));
  let sum = 0;
  if (block === 1) {
    for (let i = first; i <= last; i++) {
      const p = probs[i];
      if (p > 0) sum += p * Math.exp(a * (i - iMax));
    }
    return max + Math.log(sum);
  }
  const table = mgfTable.length >= block ? mgfTable : (mgfTable = new Float64Array(64));
  for (let j = 0; j < block; j++) table[j] = Math.exp(a * j);
  for (let i0 = first; i0 <= last; i0 += block) {
    const factor = Math.exp(a * (i0 - iMax));
    const end = Math.min(last, i0 + block - 1);
    let partial = 0;
    for (let i = i0; i <= end; i++) partial += probs[i] * table[i - i0];
    sum += factor * partial;
  }
  return max + Math.log(sum);
}

let mgfTable = new Float64Array(64);

/** Grid indices [lo, hi] outside of which the T-fold composition has mass <= tail each side. */
function compositionWindow(pld: DiscretePld, steps: number, step: number, tail: number): { lo: number; hi: number; upperTruncated: boolean } {
  const { probs, lowerIndex } = pld;
  const fullLo = steps * lowerIndex;
  const fullHi = steps * (lowerIndex + probs.length - 1);
  if (steps === 1) return { lo: fullLo, hi: fullHi, upperTruncated: false };
  // Scale of t from a normal approximation of the composed loss; search around it.
  let m0 = 0;
  let m1 = 0;
  let m2 = 0;
  for (let i = 0; i < probs.length; i++) {
    const l = (lowerIndex + i) * step;
    m0 += probs[i];
    m1 += probs[i] * l;
    m2 += probs[i] * l * l;
  }
  const mean = m1 / m0;
  const variance = Math.max(m2 / m0 - mean * mean, (step * step) / 16);
  const logTail = Math.log(tail);
  const tStar = Math.sqrt((-2 * logTail) / (steps * variance));
  // Chernoff: P(S >= u) <= tail for u = (T log M(t) - log tail) / t, any t > 0 (t < 0: lower tail).
  // For a near-Gaussian composition the best t is ~tStar; heavy upper tails (small q) want much
  // smaller t. Scan octaves over a wide range, then refine around the best one.
  const bound = (t: number) => (steps * logMgf(pld, t, step) - logTail) / t;
  const best = (sign: 1 | -1): number => {
    let bestK = 0;
    let bestValue = sign * bound(sign * tStar);
    for (let k = -20; k <= 4; k++) {
      const value = sign * bound(sign * tStar * 2 ** k);
      if (value < bestValue) {
        bestValue = value;
        bestK = k;
      }
    }
    for (let k = bestK - 0.75; k <= bestK + 0.75; k += 0.25) {
      const value = sign * bound(sign * tStar * 2 ** k);
      if (value < bestValue) bestValue = value;
    }
    return sign * bestValue;
  };
  const upper = best(1);
  const lower = best(-1);
  const hi = Math.min(fullHi, Math.ceil(upper / step));
  const lo = Math.max(fullLo, Math.floor(lower / step));
  return { lo, hi, upperTruncated: hi < fullHi };
}

// ---------------------------------------------------------------------------------------------
// FFT: iterative radix-2, precomputed twiddles.

interface Twiddles {
  /** Stage-major: the stage of butterfly length len keeps cos/sin(2 pi k / len), k < len/2, from offset len/2 - 1. */
  cos: Float64Array;
  sin: Float64Array;
}

const twiddleCache = new Map<number, Twiddles>();

/**
 * cos and sin of 2 pi k / len for every stage, evaluated directly (no recurrence: accurate to an
 * ulp), laid out stage by stage so that each stage reads them sequentially (a strided table lookup
 * misses the cache on large transforms).
 */
function twiddles(n: number): Twiddles {
  let t = twiddleCache.get(n);
  if (!t) {
    t = { cos: new Float64Array(Math.max(1, n - 1)), sin: new Float64Array(Math.max(1, n - 1)) };
    for (let len = 2; len <= n; len <<= 1) {
      const half = len >> 1;
      const stride = n / len;
      for (let k = 0; k < half; k++) {
        // the same doubles as cos(2 pi (k stride) / n) of a single table
        t.cos[half - 1 + k] = Math.cos((2 * Math.PI * (k * stride)) / n);
        t.sin[half - 1 + k] = Math.sin((2 * Math.PI * (k * stride)) / n);
      }
    }
    if (twiddleCache.size > 4) twiddleCache.clear();
    twiddleCache.set(n, t);
  }
  return t;
}

function fft(re: Float64Array, im: Float64Array, inverse: boolean): void {
  const n = re.length;
  // bit reversal
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      let t = re[i];
      re[i] = re[j];
      re[j] = t;
      t = im[i];
      im[i] = im[j];
      im[j] = t;
    }
  }
  const { cos, sin } = twiddles(n);
  const sign = inverse ? 1 : -1;
  for (let len = 2; len <= n; len <<= 1) {
    const halfLen = len >> 1;
    const offset = halfLen - 1;
    for (let start = 0; start < n; start += len) {
      for (let k = 0; k < halfLen; k++) {
        const wr = cos[offset + k];
        const wi = sign * sin[offset + k];
        const a = start + k;
        const b = a + halfLen;
        const xr = re[b] * wr - im[b] * wi;
        const xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr;
        im[b] = im[a] - xi;
        re[a] += xr;
        im[a] += xi;
      }
    }
  }
  if (inverse) {
    const scale = 1 / n;
    for (let i = 0; i < n; i++) {
      re[i] *= scale;
      im[i] *= scale;
    }
  }
}

function mod(k: number, n: number): number {
  const r = k % n;
  return r < 0 ? r + n : r;
}

/** z^T for a complex z = (x, y) with |z| <= 1, written into out[0], out[1] (polar form). */
function complexPow(x: number, y: number, power: number, out: Float64Array): void {
  const logR = 0.5 * Math.log(x * x + y * y);
  const logRT = power * logR;
  if (!(logRT > -745)) {
    // Underflows (most high frequencies once T is large): skip the trigonometry.
    out[0] = 0;
    out[1] = 0;
    return;
  }
  const rT = Math.exp(logRT);
  const angle = power * Math.atan2(y, x);
  out[0] = rT * Math.cos(angle);
  out[1] = rT * Math.sin(angle);
}

/**
 * A composed PLD (one direction) on a window of grid indices, kept exponentially tilted (below):
 * the probability of composed loss l_k = k * step is  probs[i] * exp(logScale - tilt * l_k),
 * k = lowerIndex + i, up to an FFT round-off error whose 2-norm over the window is at most
 * `roundoff` in the tilted domain.
 */
interface ComposedPld {
  /** Grid index of probs[0]. */
  lowerIndex: number;
  /** Tilted probabilities (negative round-off clamped to 0; see composedDeltaAt). */
  probs: Float64Array;
  infinityMass: number;
  step: number;
  /** lambda >= 0 of the tilt (0: none). */
  tilt: number;
  /** steps * log E[e^{tilt L}] of the per-step discrete PLD. */
  logScale: number;
  /** Bound on the 2-norm of the round-off error of `probs` (tilted domain). */
  roundoff: number;
  /** Relative error bound of the untilting multiplications (applied to delta). */
  untiltRelativeError: number;
}

const MAX_FFT_SIZE = 1 << 21;
const UNIT_ROUNDOFF = 2 ** -53;

/*
 * FFT round-off. The composed PMF comes out of double-precision FFTs whose error is ~1e-16 relative
 * to the 2-norm of the whole vector, i.e. an absolute noise floor of ~1e-16 * log N * steps: at
 * delta = 1e-12 and 2e4 steps that floor is above delta and the read-off epsilon is noise (and,
 * without a bound, not provably on the safe side). Two fixes (Koskela et al. 2020 use the same tilt
 * idea for the error analysis of their FFT accountant):
 *
 * 1. Exponential tilting. Compose p~_k = p_k e^{lambda l_k} / M(lambda), M(lambda) = E[e^{lambda L}],
 *    instead of p: the T-fold convolution of p~ is (p^{*T})_k e^{lambda l_k} / M(lambda)^T, so the
 *    composed PMF is recovered by multiplying back by exp(T log M - lambda l_k). With lambda at the
 *    saddle point of the tail that matters (T (log M)'(lambda) ~ epsilon), the tilted masses there are
 *    O(1 / sqrt(window)), far above the noise floor, and the noise is scaled DOWN by the untilting
 *    (by about the Chernoff bound of the tail). lambda = 0 is the plain composition.
 *
 * 2. A rigorous bound of the error, added to delta (pessimistic). Higham, "Accuracy and Stability of
 *    Numerical Algorithms", 2nd ed., Thm 24.2: the radix-2 FFT computed in floating point with
 *    twiddles of error mu satisfies ||fl(F x) - F x||_2 <= eF ||F x||_2, eF = L eta / (1 - L eta),
 *    L = log2 N, eta = mu + gamma_4 (sqrt 2 + mu), gamma_4 = 4u / (1 - 4u). Then, with the unitary
 *    scalings ||F x||_2 = sqrt(N) ||x||_2, the unpacking of the two real transforms (a contraction),
 *    z -> z^T being T-Lipschitz on the unit disk (|A_m| <= 1 for a probability vector; computed values
 *    at most 1 + ||dA|| + the rounding excess of the total mass, hence the factor exp(T (...))), and
 *    complexPow's own relative error (<= (15 T + 1600) u: the angle T atan2 and the modulus
 *    exp(T log r) with |T log r| <= 745), the
 *    2-norm of the error of each composed (tilted) PMF is bounded by `roundoff` below. The error of
 *    delta(eps) = sum_{l_k > eps} p_k (1 - e^{eps - l_k}) is then, by Cauchy-Schwarz, at most
 *    roundoff * sqrt(sum_{l_k > eps} exp(2 (logScale - lambda l_k))), a geometric sum in closed
 *    form. Clamping negative values to 0 does not increase the error (p_k >= 0: projection onto
 *    [0, inf) is 1-Lipschitz).
 */
function fftRelativeError(n: number): number {
  const u = UNIT_ROUNDOFF;
  const L = Math.log2(n);
  const mu = 2 * u; // Math.cos / Math.sin of 2 pi k / n, evaluated directly: within ~1 ulp (+ rounding of the argument)
  const gamma4 = (4 * u) / (1 - 4 * u);
  const eta = mu + gamma4 * (Math.SQRT2 + mu);
  return (L * eta) / (1 - L * eta);
}

/** p~_i = p_i exp(lambda l_i - log M(lambda)) and log M(lambda). */
function tiltPmf(pld: DiscretePld, lambda: number, step: number): { probs: Float64Array; logM: number } {
  if (lambda === 0) return { probs: pld.probs, logM: Math.log(pld.probs.reduce((a, b) => a + b, 0)) };
  const logM = logMgf(pld, lambda, step);
  const probs = new Float64Array(pld.probs.length);
  for (let i = 0; i < probs.length; i++) {
    const p = pld.probs[i];
    if (p > 0) probs[i] = p * Math.exp(lambda * (pld.lowerIndex + i) * step - logM);
  }
  return { probs, logM };
}

/**
 * Composes both directions `steps` times with one complex FFT (real parts: remove, imaginary: add),
 * each tilted by its own lambda >= 0.
 */
function composeBoth(
  remove: DiscretePld,
  add: DiscretePld,
  steps: number,
  step: number,
  tail: number,
  tilts: { remove: number; add: number },
): [ComposedPld, ComposedPld] | null {
  const wr = compositionWindow(remove, steps, step, tail);
  const wa = compositionWindow(add, steps, step, tail);
  // The two windows can be far apart (the add loss is bounded above, the remove loss below). Shift
  // the add PMF by `shift` grid steps, which shifts its T-fold composition by steps * shift, so that
  // both windows start within `steps` of each other and share one FFT length.
  const shift = Math.floor((wr.lo - wa.lo) / steps);
  const addOffset = steps * shift;
  const lo = Math.min(wr.lo, wa.lo + addOffset);
  const hi = Math.max(wr.hi, wa.hi + addOffset);
  let n = 1;
  while (n < hi - lo + 1) n <<= 1;
  if (n > MAX_FFT_SIZE) return null;
  const tiltedRemove = tiltPmf(remove, tilts.remove, step);
  const tiltedAdd = tiltPmf(add, tilts.add, step);
  const re = new Float64Array(n);
  const im = new Float64Array(n);
  for (let i = 0; i < remove.probs.length; i++) re[mod(remove.lowerIndex + i, n)] += tiltedRemove.probs[i];
  for (let i = 0; i < add.probs.length; i++) im[mod(add.lowerIndex + shift + i, n)] += tiltedAdd.probs[i];
  let inputNorm2 = 0;
  for (let i = 0; i < n; i++) inputNorm2 += re[i] * re[i] + im[i] * im[i];
  const u = UNIT_ROUNDOFF;
  const sqrtN = Math.sqrt(n);
  const eF = fftRelativeError(n);
  // Relative error of the tilted inputs (exp of arguments up to |lambda l| + |log M|) and of the
  // per-step probabilities' own rounding.
  const maxAbsLoss = step * Math.max(Math.abs(remove.lowerIndex), Math.abs(remove.lowerIndex + remove.probs.length), Math.abs(add.lowerIndex), Math.abs(add.lowerIndex + add.probs.length));
  const inputRelative = (Math.max(tilts.remove, tilts.add) * maxAbsLoss + Math.max(Math.abs(tiltedRemove.logM), Math.abs(tiltedAdd.logM)) + 16) * 2 * u;
  const xNorm = Math.sqrt(inputNorm2) * (1 + inputRelative);
  // |A_m| <= total mass, which is 1 only up to the rounding of log M (a sum of up to n terms): the
  // excess enters the Lipschitz factor of z -> z^T below.
  let massRemove = 0;
  let massAdd = 0;
  for (let i = 0; i < tiltedRemove.probs.length; i++) massRemove += tiltedRemove.probs[i];
  for (let i = 0; i < tiltedAdd.probs.length; i++) massAdd += tiltedAdd.probs[i];
  const massExcess = Math.max(0, massRemove - 1, massAdd - 1) + (remove.probs.length + add.probs.length + 16) * u;
  fft(re, im, false);
  // Error of each unpacked transform (A or B), 2-norm and hence also entrywise.
  const dA = (eF + inputRelative) * sqrtN * xNorm + 2 * u * sqrtN * xNorm;
  const growth = Math.exp(steps * (dA + massExcess));
  // Unpack the two real transforms A (remove), B (add) from Z = A + iB:
  //   A_m = (Z_m + conj Z_{n-m}) / 2,  B_m = (Z_m - conj Z_{n-m}) / (2i),
  // raise each to the power T and pack again as A^T + i B^T (inverse transform of both at once).
  const pa = new Float64Array(2);
  const pb = new Float64Array(2);
  for (let m = 0; m <= n / 2; m++) {
    const m2 = m === 0 ? 0 : n - m;
    const zr = re[m];
    const zi = im[m];
    const cr = re[m2];
    const ci = -im[m2]; // conj Z_{n-m}
    const ar = 0.5 * (zr + cr);
    const ai = 0.5 * (zi + ci);
    const br = 0.5 * (zi - ci);
    const bi = -0.5 * (zr - cr);
    complexPow(ar, ai, steps, pa);
    complexPow(br, bi, steps, pb);
    // R_m = A^T + i B^T;  R_{n-m} = conj(A^T) + i conj(B^T).
    re[m] = pa[0] - pb[1];
    im[m] = pa[1] + pb[0];
    if (m2 !== m) {
      re[m2] = pa[0] + pb[1];
      im[m2] = -pa[1] + pb[0];
    }
  }
  let outputNorm2 = 0;
  for (let i = 0; i < n; i++) outputNorm2 += re[i] * re[i] + im[i] * im[i];
  // ||dR||_2: propagated (Lipschitz) + complexPow's rounding + the underflow cut (< e^-745 each)
  // + the packing additions.
  const powerNorm = growth * (sqrtN * xNorm + dA);
  // complexPow's relative error: the angle T atan2(y, x) is off by <= ~3 pi T u (atan2's ulp and the
  // product's rounding, then cos/sin), the modulus exp(T log r) by <= (T + 2 * 745 + few) u (the
  // rounding of x^2 + y^2 times T, log's and exp's ulps with |T log r| <= 745): (15 T + 1600) u.
  const powRelative = (15 * steps + 1600) * u;
  const dR = 2 * (steps * growth * dA + powRelative * powerNorm + sqrtN * 1e-323) + 2 * u * Math.sqrt(outputNorm2);
  fft(re, im, true);
  // y = F* R / N: propagated error ||dR|| / sqrt(N), the inverse FFT's own eF ||R||_2 / sqrt(N), and
  // the (exact, power-of-two) scaling's rounding of underflowing values.
  // (1.01: the computed norms themselves are sums of up to n rounded squares.)
  const roundoff = (1.01 * (dR + eF * Math.sqrt(outputNorm2))) / sqrtN + u * 1e-300;
  // Window position i holds composed index lo + i (lo - addOffset + i for the add direction).
  const first = mod(lo, n);
  const result = (values: Float64Array, pld: DiscretePld, upperTruncated: boolean, lowerIndex: number, tilt: number, logM: number): ComposedPld => {
    const probs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const j = first + i;
      const v = values[j < n ? j : j - n];
      probs[i] = v > 0 ? v : 0; // p >= 0: clamping does not increase the error (covered by `roundoff`)
    }
    const infinityMass = -Math.expm1(steps * Math.log1p(-pld.infinityMass)) + (upperTruncated ? tail : 0);
    const logScale = steps * logM;
    const maxUntilt = Math.abs(logScale) + tilt * step * Math.max(Math.abs(lowerIndex), Math.abs(lowerIndex + n));
    return {
      lowerIndex,
      probs,
      infinityMass: Math.min(1, infinityMass),
      step,
      tilt,
      logScale,
      roundoff,
      untiltRelativeError: 4 * u * (maxUntilt + 8) + steps * inputRelative,
    };
  };
  return [
    result(re, remove, wr.upperTruncated, lo, tilts.remove, tiltedRemove.logM),
    result(im, add, wa.upperTruncated, lo - addOffset, tilts.add, tiltedAdd.logM),
  ];
}

// ---------------------------------------------------------------------------------------------
// Reading (epsilon, delta) off a composed discrete PLD (exact for the discrete distribution, plus
// the round-off bound).

/** Untilted probability of window entry i. */
function untilted(pld: ComposedPld, i: number): number {
  const p = pld.probs[i];
  if (!(p > 0)) return 0;
  // Untilted runs (the common case): logScale = T log(total mass) ~ 0, a constant factor.
  if (pld.tilt === 0) return p * untiltedScale(pld);
  return p * Math.exp(pld.logScale - pld.tilt * (pld.lowerIndex + i) * pld.step);
}

const scaleCache = new WeakMap<ComposedPld, number>();
function untiltedScale(pld: ComposedPld): number {
  let scale = scaleCache.get(pld);
  if (scale === undefined) {
    scale = Math.exp(pld.logScale);
    scaleCache.set(pld, scale);
  }
  return scale;
}

/**
 * Round-off bound on delta(eps) for any eps >= the loss of entry i - 1, i.e. when the entries that
 * count are those at index >= i: roundoff * sqrt(sum_{k >= lowerIndex + i} exp(2 (logScale - tilt k step))).
 */
function roundoffBound(pld: ComposedPld, i: number): number {
  const { roundoff, tilt, logScale, step, lowerIndex, probs } = pld;
  const count = probs.length - i;
  if (count <= 0) return 0;
  if (tilt === 0) return roundoff * Math.sqrt(count) * untiltedScale(pld);
  // Geometric series, bounded by its infinite sum.
  const logSum = 2 * (logScale - tilt * (lowerIndex + i) * step) - Math.log(-Math.expm1(-2 * tilt * step));
  return roundoff * Math.exp(0.5 * logSum);
}

/**
 * The smallest epsilon with delta(epsilon) + round-off bound <= delta, and -d delta / d epsilon there
 * (0 when the round-off bound alone decided it): epsilon moves by about (bound / slope) because of
 * the bound, which tells whether a tilted rerun is worth it.
 */
function composedEpsilon(pld: ComposedPld, delta: number): { epsilon: number; slope: number } {
  const { probs, lowerIndex, infinityMass, step } = pld;
  if (infinityMass >= delta) return { epsilon: Infinity, slope: 0 };
  const grow = 1 + pld.untiltRelativeError;
  const decay = Math.exp(-step);
  const oneMinusDecay = -Math.expm1(-step);
  // Scan down from the top. At grid index k:
  //   above = sum_{k' > k} p_k',   d = sum_{k' > k} p_k' (1 - e^{(k - k') step}),
  //   delta(k step) = infinityMass + d,  and for 0 <= u <= step:
  //   delta(k step + u) = infinityMass + above - e^u (above - d),
  // each plus the round-off bound of the entries above k (the same for all u in [0, step)).
  let above = 0;
  let d = 0;
  // Untilted (the common case): constant untilting factor, round-off bound errScale * sqrt(count).
  const flat = pld.tilt === 0;
  const scale = untiltedScale(pld);
  const errScale = pld.roundoff * scale;
  for (let i = probs.length - 1; i >= -1; i--) {
    const k = lowerIndex + i;
    const err = flat ? errScale * Math.sqrt(probs.length - i - 1) : roundoffBound(pld, i + 1);
    if (infinityMass + grow * d + err > delta) {
      const target = (delta - infinityMass - err) / grow;
      if (!(target > 0)) return { epsilon: (k + 1) * step, slope: 0 }; // failed just above: the previous grid point
      const u = Math.log((above - target) / (above - d));
      const clamped = Math.min(step, Math.max(0, u));
      return { epsilon: Math.max(0, k * step + clamped), slope: clamped === u ? above - target : 0 };
    }
    if (k * step <= 0) return { epsilon: 0, slope: Infinity }; // delta(0) <= target already
    if (i < 0) break;
    const p = flat ? (probs[i] > 0 ? probs[i] * scale : 0) : untilted(pld, i);
    d = oneMinusDecay * (p + above) + decay * d;
    above += p;
    if (!Number.isFinite(above)) return { epsilon: (k + 1) * step, slope: 0 }; // untilting overflow far below the tail: delta > 1 here
  }
  // Below the window (no atoms there): delta(eps) = inf + above - e^{eps - k step}(above - d).
  const k = lowerIndex - 1;
  const target = (delta - infinityMass - roundoffBound(pld, 0)) / grow;
  if (!(target > 0)) return { epsilon: lowerIndex * step, slope: 0 };
  const eps = k * step + Math.log((above - target) / (above - d));
  return { epsilon: Math.max(0, eps), slope: above - target };
}

function composedDelta(pld: ComposedPld, epsilon: number): number {
  const { probs, lowerIndex, infinityMass, step } = pld;
  let sum = 0;
  let i = probs.length - 1;
  for (; i >= 0; i--) {
    const loss = (lowerIndex + i) * step;
    if (loss <= epsilon) break;
    sum += untilted(pld, i) * -Math.expm1(epsilon - loss);
  }
  return Math.min(1, infinityMass + sum * (1 + pld.untiltRelativeError) + roundoffBound(pld, i + 1));
}

// ---------------------------------------------------------------------------------------------

/** Grid step: power of two below (smallest per-step loss std) / 32, clamped to [2^-40, 2^-6]. */
export function defaultDiscretization(q: number, sigma: number): number {
  const loss = new StepLoss(q, sigma);
  const sd = Math.min(loss.lossStd('remove'), loss.lossStd('add'));
  const target = sd / 32;
  const exponent = Math.min(-6, Math.max(-40, Math.floor(Math.log2(target > 0 ? target : 2 ** -40))));
  return 2 ** exponent;
}

/**
 * The tilt lambda >= 0 that minimises the Chernoff exponent steps * log M(lambda) - lambda * epsilon of
 * the composed loss at `epsilon` (the saddle point: there the tilted composition is centred on
 * epsilon). Golden-section search in log lambda (the exponent is convex in lambda); lambda = 0 when
 * epsilon is not in the upper tail.
 */
function saddlePointTilt(pld: DiscretePld, steps: number, step: number, epsilon: number): number {
  if (!(epsilon > 0) || !Number.isFinite(epsilon)) return 0;
  const exponent = (logLambda: number) => {
    const lambda = Math.exp(logLambda);
    return steps * logMgf(pld, lambda, step) - lambda * epsilon;
  };
  let a = Math.log(1e-4);
  let b = Math.log(1e4);
  const ratio = (Math.sqrt(5) - 1) / 2;
  let c = b - ratio * (b - a);
  let d = a + ratio * (b - a);
  let fc = exponent(c);
  let fd = exponent(d);
  for (let i = 0; i < 60 && b - a > 1e-3; i++) {
    if (fc < fd) {
      b = d;
      d = c;
      fd = fc;
      c = b - ratio * (b - a);
      fc = exponent(c);
    } else {
      a = c;
      c = d;
      fc = fd;
      d = a + ratio * (b - a);
      fd = exponent(d);
    }
  }
  const best = 0.5 * (a + b);
  const value = exponent(best);
  // log M(0) = log(total mass) ~ 0: no tilt if it does not help.
  return Number.isFinite(value) && value < steps * logMgf(pld, 0, step) ? Math.exp(best) : 0;
}

/** An epsilon to tilt for, or a function of the discretised per-step PLD that gives one. */
type TiltTarget = number | ((pld: DiscretePld, step: number) => number);
interface TiltTargets {
  remove?: TiltTarget;
  add?: TiltTarget;
}

/**
 * A cheap guess of a direction's epsilon, for the tilt only (any guess gives a valid bound; one at
 * or below the answer never makes the round-off bound worse than no tilt, since the Chernoff factor
 * T log M(lambda) - lambda eps is <= 0 between 0 and the saddle point): the composition as a Gaussian
 * with the per-step loss mean and variance, read with the exact Gaussian-mechanism curve
 * (Balle & Wang 2018) shifted by the mean's excess over variance / 2.
 */
function gaussianGuess(pld: DiscretePld, step: number, steps: number, delta: number): number {
  let m0 = 0;
  let m1 = 0;
  let m2 = 0;
  for (let i = 0; i < pld.probs.length; i++) {
    const p = pld.probs[i];
    const l = (pld.lowerIndex + i) * step;
    m0 += p;
    m1 += p * l;
    m2 += p * l * l;
  }
  const mean = steps * (m1 / m0);
  const variance = steps * Math.max(m2 / m0 - (m1 / m0) ** 2, 0);
  if (!(variance > 0)) return Math.max(0, mean);
  return Math.max(0, mean - variance / 2 + gaussianEpsilon(Math.sqrt(variance), delta));
}

/**
 * Composed PLDs of both directions for `steps` steps, with truncations whose total pessimistic
 * slack in delta is at most `slack`, each direction tilted for reading delta near its `tiltAt`
 * epsilon (see composeBoth), or untilted when that is undefined.
 */
function composedPlds(
  q: number,
  sigma: number,
  steps: number,
  slack: number,
  options: PldOptions,
  tiltAt: TiltTargets = {},
): [ComposedPld, ComposedPld] {
  const loss = new StepLoss(q, sigma);
  let step = options.discretization ?? defaultDiscretization(q, sigma);
  if (!(step > 0 && Number.isFinite(step))) {
    throw new PrivacyParameterError(`discretization must be a finite number > 0, got ${step}`, 'discretization');
  }
  // slack/4 each: per-step upper truncation (x steps), per-step lower truncation (x steps),
  // composed upper tail, composed lower tail.
  const perStepTail = Math.max(1e-300, slack / (4 * steps));
  for (;;) {
    // A loss range too wide for the grid (tiny sigma, huge epsilon) or a composed window too wide
    // for the FFT: coarser grid (still an upper bound, only less tight).
    const remove = discretizeStep(loss, 'remove', step, perStepTail);
    const add = remove && discretizeStep(loss, 'add', step, perStepTail);
    if (remove && add) {
      const target = (pld: DiscretePld, t: TiltTarget | undefined) => (typeof t === 'function' ? t(pld, step) : t);
      const removeAt = target(remove, tiltAt.remove);
      const addAt = target(add, tiltAt.add);
      const tilts = {
        remove: removeAt === undefined ? 0 : saddlePointTilt(remove, steps, step, removeAt),
        add: addAt === undefined ? 0 : saddlePointTilt(add, steps, step, addAt),
      };
      const composed = composeBoth(remove, add, steps, step, slack / 4, tilts);
      if (composed) return composed;
    }
    step *= 2;
  }
}

/**
 * For tests: the composed remove-direction PLD, untilted or tilted for `tiltAt`, as untilted
 * probabilities with grid indices and the round-off bound on their 2-norm error over entries >= i
 * (roundoffFrom(i)).
 */
export function composedRemovePldForTests(
  query: { q: number; sigma: number; steps: number },
  tiltAt?: number,
): { lowerIndex: number; step: number; probs: Float64Array; roundoffFrom: (i: number) => number } {
  const { q, sigma, steps } = validate(query);
  const [remove] = composedPlds(q, sigma, steps, 1e-20, {}, tiltAt === undefined ? {} : { remove: tiltAt });
  const probs = new Float64Array(remove.probs.length);
  for (let i = 0; i < probs.length; i++) probs[i] = untilted(remove, i);
  return { lowerIndex: remove.lowerIndex, step: remove.step, probs, roundoffFrom: (i) => roundoffBound(remove, i) };
}

const DELTA_QUERY_SLACK = 1e-14;

function validate(query: { q: unknown; sigma: unknown; steps: unknown }): { q: number; sigma: number; steps: number } {
  return { q: checkSamplingRate(query.q), sigma: checkSigma(query.sigma), steps: checkSteps(query.steps) };
}

/**
 * epsilon of the query by the PLD accountant: an upper bound, typically within ~1e-4 relative of the
 * truth. Infinity when the accountant cannot certify any epsilon at this delta (the FFT round-off
 * bound alone exceeds delta); computeEpsilon then answers with RDP.
 */
export function pldEpsilon(query: SubsampledGaussianQuery, options: PldOptions = {}): { epsilon: number } {
  return { epsilon: pldEpsilonDetails(query, options).epsilon };
}

/**
 * Round-off bound on delta just below `epsilon` (the entries from its grid cell up): whether the bound
 * was what stopped epsilon from going lower.
 */
function roundoffAt(pld: ComposedPld, epsilon: number): number {
  if (!Number.isFinite(epsilon)) return 0;
  const i = Math.max(0, Math.ceil(epsilon / pld.step - 1e-9) - 1 - pld.lowerIndex);
  return roundoffBound(pld, i);
}

/**
 * The same with the epsilon of each direction of the add/remove adjacency (the reported epsilon is
 * the larger), the grid step used and the FFT round-off bound on delta at the answer (already
 * counted in it); for tests and diagnostics.
 */
export function pldEpsilonDetails(
  query: SubsampledGaussianQuery,
  options: PldOptions = {},
): { epsilon: number; remove: number; add: number; discretization: number; roundoff: number } {
  const { q, sigma, steps, delta } = checkQuery(query);
  if (q === 0 || steps === 0) return { epsilon: 0, remove: 0, add: 0, discretization: NaN, roundoff: 0 };
  // shift: how much the round-off bound raised epsilon, to first order (bound / slope).
  type Side = { epsilon: number; roundoff: number; shift: number };
  const run = (step: number, tiltAt: TiltTargets) => {
    const [remove, add] = composedPlds(q, sigma, steps, 1e-5 * delta, { discretization: step }, tiltAt);
    // NaN only comes out of degenerate grids (sigma ~ 1e-100 coarsens the grid step to ~1e190):
    // no certificate, i.e. infinity.
    const certified = (e: number) => (Number.isNaN(e) ? Infinity : e);
    const side = (pld: ComposedPld): Side => {
      const { epsilon: raw, slope } = composedEpsilon(pld, delta);
      const epsilon = certified(raw);
      const roundoff = roundoffAt(pld, epsilon);
      return { epsilon, roundoff, shift: roundoff === 0 ? 0 : slope > 0 ? roundoff / slope : Infinity };
    };
    return { remove: side(remove), add: side(add), discretization: remove.step };
  };
  // At ordinary deltas and few steps the round-off bound is a negligible share of delta. Where it
  // is not (tiny delta, many steps), tilt each such direction at its current answer or RDP's epsilon,
  // whichever is smaller (both upper bounds of the final one), and repeat while that helps: every run is
  // a valid upper bound, so per direction the smallest one is kept.
  const runAdaptive = (step: number) => {
    let rdpGuess: number | undefined;
    const rdp = () => (rdpGuess ??= rdpEpsilon({ q, sigma, steps, delta }).epsilon);
    // With many steps the untilted bound (~1e-16 * log N * steps per entry) nearly always matters at
    // the 1e-6 level: start tilted at a guess there (one FFT pass instead of two), untilted
    // otherwise. A side that comes out noisy gets the other treatment below.
    const startTilted = steps >= 1000;
    const estimate = (pld: DiscretePld, gridStep: number) => Math.min(rdp(), gaussianGuess(pld, gridStep, steps, delta));
    const first = startTilted ? run(step, { remove: estimate, add: estimate }) : run(step, {});
    const best = { remove: first.remove, add: first.add };
    const guess = (side: Side) => (side.epsilon > 0 ? Math.min(side.epsilon, rdp()) : rdp());
    // Worth another run when the bound moved epsilon by more than 1e-5 relative (the size of the
    // discretisation error, ~1e-5..1e-4), or decided it.
    const noisy = (side: Side) => !Number.isFinite(side.epsilon) || !(side.shift <= 1e-5 * side.epsilon);
    if (startTilted && (noisy(best.remove) || noisy(best.add))) {
      // A tilt well above a side's answer amplifies the noise there (e.g. the add direction at tiny
      // q, whose loss is bounded): try that side untilted.
      const next = run(step, {});
      for (const side of ['remove', 'add'] as const) if (next[side].epsilon < best[side].epsilon) best[side] = next[side];
    }
    for (let pass = 0; pass < 4; pass++) {
      const tiltAt = {
        remove: noisy(best.remove) ? guess(best.remove) : undefined,
        add: noisy(best.add) ? guess(best.add) : undefined,
      };
      if (tiltAt.remove === undefined && tiltAt.add === undefined) break;
      const next = run(step, tiltAt);
      let improved = false;
      for (const side of ['remove', 'add'] as const) {
        if (tiltAt[side] === undefined || !(next[side].epsilon < best[side].epsilon)) continue;
        improved ||= next[side].epsilon < best[side].epsilon * (1 - 1e-3) || !Number.isFinite(best[side].epsilon);
        best[side] = next[side];
      }
      if (!improved) break;
    }
    return {
      epsilon: Math.max(best.remove.epsilon, best.add.epsilon),
      remove: best.remove.epsilon,
      add: best.add.epsilon,
      discretization: first.discretization,
      roundoff: Math.max(best.remove.roundoff, best.add.roundoff),
    };
  };
  if (options.discretization !== undefined) return runAdaptive(options.discretization);
  const first = runAdaptive(defaultDiscretization(q, sigma));
  // The discrete curve is exact at grid points, so (for one step) epsilon is overestimated by at
  // most one grid step: when epsilon is small against the step, refine once (few steps and a
  // small epsilon make that cheap).
  const refined = refinedDiscretization(first.discretization, first.epsilon);
  return refined < first.discretization ? runAdaptive(refined) : first;
}

/** A grid step <= epsilon / 1024 (power of two), at most 64 times finer than `step`. */
function refinedDiscretization(step: number, epsilon: number): number {
  if (!(epsilon > 0) || !Number.isFinite(epsilon) || step <= epsilon / 1024) return step;
  return Math.max(step / 64, 2 ** Math.floor(Math.log2(epsilon / 1024)));
}

/**
 * delta at a given epsilon by the PLD accountant (upper bound; additive slack <= 1e-14 plus the FFT
 * round-off bound, which the tilt at epsilon keeps far below delta in all but degenerate cases).
 */
export function pldDelta(query: { q: number; sigma: number; steps: number; epsilon: number }, options: PldOptions = {}): { delta: number } {
  if (typeof query !== 'object' || query === null) throw new PrivacyParameterError('query must be an object { q, sigma, steps, epsilon }', 'query');
  const { q, sigma, steps } = validate(query);
  const epsilon = checkEpsilon(query.epsilon);
  if (q === 0 || steps === 0) return { delta: 0 };
  const step = options.discretization ?? refinedDiscretization(defaultDiscretization(q, sigma), epsilon);
  const [remove, add] = composedPlds(q, sigma, steps, DELTA_QUERY_SLACK, { discretization: step }, { remove: epsilon, add: epsilon });
  const delta = Math.max(composedDelta(remove, epsilon), composedDelta(add, epsilon));
  return { delta: Number.isNaN(delta) ? 1 : delta };
}

// ---------------------------------------------------------------------------------------------
// Exact curve of the (non-subsampled) Gaussian mechanism, Balle & Wang 2018, Theorem 8:
//   delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2),  mu = sensitivity / std.
// T compositions of a Gaussian with noise multiplier sigma are one Gaussian with mu = sqrt(T)/sigma.

/** delta(epsilon) of the Gaussian mechanism with mu = sensitivity / noise std (log space for tails). */
export function gaussianDelta(mu: number, epsilon: number): number {
  if (!(mu > 0)) throw new PrivacyParameterError(`mu must be > 0, got ${mu}`, 'mu');
  checkEpsilon(epsilon);
  const a = logNormalCdf(-epsilon / mu + mu / 2);
  const b = epsilon + logNormalCdf(-epsilon / mu - mu / 2);
  return Math.exp(logSubExp(a, b));
}

/** The smallest epsilon >= 0 with gaussianDelta(mu, epsilon) <= delta (bisection). */
export function gaussianEpsilon(mu: number, delta: number): number {
  checkDelta(delta);
  if (gaussianDelta(mu, 0) <= delta) return 0;
  let lo = 0;
  let hi = 1;
  while (gaussianDelta(mu, hi) > delta) {
    lo = hi;
    hi *= 2;
  }
  for (let i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
    const mid = 0.5 * (lo + hi);
    if (gaussianDelta(mu, mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}
