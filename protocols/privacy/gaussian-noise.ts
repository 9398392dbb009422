import { randomFillSync } from 'node:crypto';

/**
 * Gaussian noise as an exact discrete Gaussian on a fixed-point grid (Canonne, Kamath, Steinke
 * 2020, "The Discrete Gaussian for Differential Privacy", NeurIPS; arXiv:2004.00010), drawn from
 * the operating system's CSPRNG (a seeded PRNG would let anyone who learns the seed subtract it).
 *
 * Why not floats. Box-Muller on 53-bit uniforms (what this file did before) leaks through the
 * low-order bits of its output and cannot reach past ~8.65 sigma (Mironov 2012, "On Significance
 * of the Least Significant Bits for Differential Privacy"). Here every draw is an integer
 * X ~ N_Z(0, S^2) with S = 2^20, sampled exactly with integer arithmetic (CKS Algorithms 1-3:
 * Bernoulli(exp(-gamma)) by Forsythe/von Neumann, discrete Laplace, rejection), and scaled by a grid
 * step g: the noise std is g S. Tails are not cut: every integer has positive probability.
 *
 * The floating-point argument (privatize(), used by DP-SGD):
 * 1. The value is snapped to the grid first: the output is g (round(v / g) + X), so the released
 *    float is a deterministic function (post-processing) of the integer vector round(v / g) + X.
 * 2. Snapping moves each coordinate by at most 1/2, plus the float64 division's error, below 1/4
 *    while |v / g| < 2^51 (relative error 2^-53; checked, else refused), so two neighbouring
 *    inputs whose L2 distance is <= Delta give integer vectors at distance <= Delta / g + r sqrt(d),
 *    r = 1.5 (d coordinates). gridStep() picks g = sigma / (S - z r sqrt(d)) so that
 *    S / (Delta / g + r sqrt(d)) = z exactly: the integer mechanism has noise multiplier z, and the
 *    real noise std is sigma S / (S - z r sqrt d), a hair more than asked (z = 2, d = 10^5: +0.09%).
 * 3. Discrete vs continuous Gaussian at the same multiplier. CKS Section 2 (their concentrated-DP
 *    bound, via the lemma that sum_x exp(-(x - c)^2 / 2s^2) is largest at integer c): for integer shifts,
 *    D_alpha(N_Z(mu, s^2) || N_Z(nu, s^2)) <= alpha (mu - nu)^2 / (2 s^2), the continuous value;
 *    coordinates are independent, so for vectors the bound is alpha |mu - nu|^2 / (2 s^2). For
 *    Poisson subsampling at integer orders alpha, A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k)
 *    q^k E_0[(p_1 / p_0)^k] (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism", the binomial expansion for integer alpha) has non-negative
 *    coefficients and E_0[(p_1 / p_0)^k] = exp((k - 1) D_k) <= exp(k (k - 1) |mu|^2 / 2 s^2), so
 *    every term, hence the RDP of (mixture || base) at every integer order, is at most the
 *    continuous one. Argued, not proven here: the reverse direction (base || mixture), which
 *    Mironov et al. show is dominated for the continuous Gaussian, and the fractional orders and
 *    the PLD accountant, which evaluate continuous privacy-loss integrals. The discrete mechanism
 *    has the same privacy-loss function, sampled on a lattice of step 2^-20 sigma: for the smooth
 *    RDP integrands, lattice sums differ from the integrals by a relative O(exp(-2 pi^2 S^2))
 *    (Poisson summation, as CKS use for the normalizing constant); PLD's hockey-stick has a kink,
 *    where the lattice quadrature error is of order 2^-40 of the local mass. We treat both as equal.
 * What this does not cover: the float arithmetic that computes v itself (TensorFlow.js sums
 * clipped gradients in float32; Casacuberta et al. 2022, "Widespread Underestimation of
 * Sensitivity in Differentially Private Libraries"). next()/addTo() put the noise on the grid but
 * do not snap the value they are added to (client-level DP noises its running sum before any
 * update arrives); for those, the low-bit channel is blurred by the float64 sum, not closed.
 */
export const GRID_UNITS = 2 ** 20;
/** Per-coordinate snapping error bound, doubled: 2 (1/2 + 1/4) (see point 2 above). */
const ROUNDING_SLACK = 1.5;
/** Largest |v / g| privatize() accepts: the float64 division's error stays below 1/4 unit. */
const MAX_GRID_VALUE = 2 ** 51;
const TWO_41 = 2 ** 41;

/** 32-bit random words. Production: the OS CSPRNG; tests may pass a seeded source. */
export interface RandomWords {
  uint32(): number;
}

/** The OS CSPRNG (randomFillSync), read in 64 KiB blocks. */
export class CsprngWords implements RandomWords {
  private readonly pool = new Uint32Array(16384);
  private index = this.pool.length;
  uint32(): number {
    if (this.index === this.pool.length) {
      randomFillSync(this.pool);
      this.index = 0;
    }
    return this.pool[this.index++];
  }
}

/**
 * Exact sampler of N_Z(0, S^2), S = 2^20 (CKS Algorithm 3 with Laplace scale t = S, so
 * sigma^2 / t = S and every Bernoulli parameter is a dyadic rational: no division, no BigInt
 * except past 64 sigma, probability < 1e-27). CKS prove Algorithm 3 correct for any t > 0; t = S
 * is their t = floor(sigma) + 1 up to one unit.
 */
export class DiscreteGaussian {
  private bits = 0;
  private bitCount = 0;
  constructor(private readonly words: RandomWords = new CsprngWords()) {}

  private bit(): number {
    if (this.bitCount === 0) {
      this.bits = this.words.uint32();
      this.bitCount = 32;
    }
    this.bitCount--;
    return (this.bits >>> this.bitCount) & 1;
  }

  /** Uniform integer in [0, n), 1 <= n <= 2^32, by rejection (no modulo bias). */
  private below(n: number): number {
    if (n === 2) return this.bit();
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const r = this.words.uint32();
      if (r < limit) return r % n;
    }
  }

  /** Bernoulli(num / 2^41), 0 <= num <= 2^41, comparing random bits lazily (top 32, then 9). */
  private dyadic41(num: number): boolean {
    const hiNum = Math.floor(num / 512);
    const hi = this.words.uint32();
    if (hi !== hiNum) return hi < hiNum;
    return (this.words.uint32() >>> 23) < num - hiNum * 512;
  }

  /** Bernoulli(exp(-1)): CKS Algorithm 1 with gamma = 1 (Bernoulli(1 / k) each step). */
  private expMinusOne(): boolean {
    // Bernoulli(1 / 1) always succeeds: start at k = 2.
    let k = 2;
    while (this.below(k) === 0) k++;
    return (k & 1) === 1;
  }

  /** Bernoulli(exp(-u / 2^20)), 0 <= u < 2^20: CKS Algorithm 1, Bernoulli(gamma / k) = Bernoulli(gamma) and Bernoulli(1 / k). */
  private expFraction20(u: number): boolean {
    let k = 1;
    while ((this.words.uint32() >>> 12) < u && (k === 1 || this.below(k) === 0)) k++;
    return (k & 1) === 1;
  }

  /** Bernoulli(exp(-num / 2^41)) for an integer num >= 0 (< 2^53); public for the tests. */
  bernoulliExp(num: number): boolean {
    const whole = Math.floor(num / TWO_41);
    for (let i = 0; i < whole; i++) if (!this.expMinusOne()) return false;
    const frac = num - whole * TWO_41;
    let k = 1;
    while (this.dyadic41(frac) && (k === 1 || this.below(k) === 0)) k++;
    return (k & 1) === 1;
  }

  /** Discrete Laplace with scale 2^20 (CKS Algorithm 2, t = 2^20). */
  laplace(): number {
    for (;;) {
      const u = this.words.uint32() >>> 12;
      if (!this.expFraction20(u)) continue;
      let v = 0;
      while (this.expMinusOne()) v++;
      const x = u + v * GRID_UNITS;
      const negative = this.bit() === 1;
      if (negative && x === 0) continue;
      return negative ? -x : x;
    }
  }

  /** One draw of N_Z(0, 2^40): CKS Algorithm 3 with sigma = t = 2^20. */
  sample(): number {
    for (;;) {
      const y = this.laplace();
      // Accept with probability exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2)) = exp(-D^2 / 2^41).
      const d = Math.abs(y) - GRID_UNITS;
      if (Math.abs(d) < 2 ** 26) {
        if (this.bernoulliExp(d * d)) return y;
      } else if (this.expBig(d)) {
        return y;
      }
    }
  }

  /** Bernoulli(exp(-d^2 / 2^41)) past 2^26 (64 sigma), exact with BigInt: reached with probability < 1e-27. */
  private expBig(d: number): boolean {
    const sq = BigInt(d) * BigInt(d);
    const whole = sq >> 41n;
    for (let i = 0n; i < whole; i++) if (!this.expMinusOne()) return false;
    return this.bernoulliExp(Number(sq - (whole << 41n)));
  }
}

/**
 * Gaussian noise for the DP mechanisms: g X with X ~ N_Z(0, S^2) exact (see the top of the file).
 * Subclasses (tests) may override next(); addTo() goes through next().
 */
export class GaussianNoise {
  private readonly sampler: DiscreteGaussian;
  constructor(words?: RandomWords) {
    this.sampler = new DiscreteGaussian(words);
  }

  /** One draw of std x N_Z(0, S^2) / S: discrete Gaussian on the grid std / 2^20. */
  next(std: number): number {
    if (std === 0) return 0;
    return (std / GRID_UNITS) * this.sampler.sample();
  }

  /** Adds next(std) to every value in place (the values are not snapped; see the top of the file). */
  addTo(values: Float64Array | Float32Array, std: number): void {
    if (std === 0) return;
    for (let i = 0; i < values.length; i++) values[i] += this.next(std);
  }

  /**
   * Grid step g for a Gaussian mechanism of noise std sigma = multiplier x sensitivity over
   * `dimension` coordinates, so that the snapped integer mechanism has noise multiplier exactly
   * `multiplier` (point 2 at the top of the file).
   */
  static gridStep(std: number, multiplier: number, dimension: number): number {
    if (!(std > 0) || !(multiplier > 0) || !Number.isFinite(std)) throw new RangeError(`gridStep: need std > 0 and multiplier > 0, got ${std}, ${multiplier}`);
    const slack = multiplier * ROUNDING_SLACK * Math.sqrt(dimension);
    if (slack > GRID_UNITS / 2) throw new RangeError(`gridStep: ${dimension} coordinates at noise multiplier ${multiplier} need a finer grid than 2^20 units per sigma`);
    return std / (GRID_UNITS - slack);
  }

  /** The Gaussian mechanism on the grid step g (gridStep()): values[i] <- g (round(values[i] / g) + X_i). */
  privatize(values: Float64Array, step: number): void {
    for (let i = 0; i < values.length; i++) {
      const units = Math.round(values[i] / step);
      if (!(Math.abs(units) < MAX_GRID_VALUE)) throw new RangeError(`privatize: value ${values[i]} is too large (or not finite) for grid step ${step}`);
      values[i] = step * (units + this.sampler.sample());
    }
  }
}
