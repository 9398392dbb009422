/**
 * Noise calibration: the smallest noise multiplier sigma such that the Poisson-subsampled Gaussian
 * mechanism composed over `steps` steps is (epsilon, delta)-DP for a target epsilon, by either
 * accountant. epsilon(sigma) is non-increasing in sigma (more noise is a post-processing of less:
 * N(0, s'^2) = N(0, s^2) + N(0, s'^2 - s^2)), so bisection on sigma finds it; the answer is the
 * upper end of the final bracket, at which the accountant was evaluated and met the target.
 */

import {
  checkAccountant,
  checkDelta,
  checkSamplingRate,
  checkSteps,
  PrivacyParameterError,
  type AccountantName,
  type SubsampledGaussianQuery,
} from './errors.ts';
import { pldEpsilonDetails } from './pld-accountant.ts';
import { rdpEpsilon, type FractionalSeries } from './rdp-accountant.ts';

export interface AccountingOptions {
  /**
   * Fractional-order series of the RDP accountant: 'exact' (default) or 'dp_accounting-0.6.0' (the
   * reference library's looser absolute-value series, to reproduce its numbers).
   */
  rdpSeries?: FractionalSeries;
}

export interface EpsilonResult {
  /** epsilon (Infinity when no finite epsilon can be certified). */
  epsilon: number;
  /** The accountant that was asked for. */
  requested: AccountantName;
  /** The accountant whose bound is reported (with 'pld' requested, RDP answers when it is smaller). */
  accountant: AccountantName;
  /** The RDP series used (by the RDP accountant, or for the RDP bound compared against PLD). */
  rdpSeries: FractionalSeries;
  /** Why another accountant answered, if it did. */
  note?: string;
}

/**
 * epsilon of the query by the chosen accountant (default 'rdp'), with which accountant answered.
 *
 * With 'pld' both bounds are computed and the smaller is reported: each is a valid upper bound of
 * the true epsilon, so their minimum is too. PLD is normally the smaller; RDP wins where the PLD's
 * certified bound is loose, chiefly at tiny delta with many steps, where the FFT round-off bound
 * (which the PLD accountant adds to delta, see pld-accountant.ts) eats into delta.
 */
export function computeEpsilonDetails(query: SubsampledGaussianQuery, accountant: AccountantName = 'rdp', options: AccountingOptions = {}): EpsilonResult {
  const requested = checkAccountant(accountant);
  const rdpSeries = options.rdpSeries ?? 'exact';
  const rdp = rdpEpsilon(query, { fractionalSeries: rdpSeries }).epsilon;
  if (requested === 'rdp') return { epsilon: rdp, requested, accountant: 'rdp', rdpSeries };
  const pld = pldEpsilonDetails(query);
  if (pld.epsilon <= rdp) return { epsilon: pld.epsilon, requested, accountant: 'pld', rdpSeries };
  const reason = Number.isFinite(pld.epsilon)
    ? `the PLD bound (${pld.epsilon}) is larger than the RDP bound`
    : 'the PLD accountant cannot certify a finite epsilon at this delta';
  return {
    epsilon: rdp,
    requested,
    accountant: 'rdp',
    rdpSeries,
    note: `${reason}${pld.roundoff > 0 ? ` (its FFT round-off bound, ${pld.roundoff.toExponential(2)}, counts against delta = ${query.delta})` : ''}; reporting the RDP epsilon, also a valid upper bound`,
  };
}

/** epsilon of the query by the chosen accountant (default 'rdp'): computeEpsilonDetails(...).epsilon. */
export function computeEpsilon(query: SubsampledGaussianQuery, accountant: AccountantName = 'rdp', options: AccountingOptions = {}): number {
  return computeEpsilonDetails(query, accountant, options).epsilon;
}

export interface CalibrationParams {
  q: number;
  steps: number;
  delta: number;
  /** Target epsilon, > 0. */
  epsilon: number;
  accountant?: AccountantName;
  /** RDP fractional-order series (default 'exact'). */
  rdpSeries?: FractionalSeries;
  /** Relative width of the final bracket (default 1e-6 for rdp, 1e-4 for pld). */
  tolerance?: number;
}

/**
 * The smallest noise multiplier fedmark runs a mechanism with. Below it the accounting is still
 * correct but no longer means anything at a useful epsilon: at delta = 1e-5 (PLD accountant,
 * `fedmark privacy epsilon --accountant pld`), one release without subsampling costs epsilon 10.0
 * at z = 0.5, 19.1 at z = 0.3, 91.8 at z = 0.1, 284 at z = 0.05; one epoch of DP-SGD at q = 0.01
 * (100 steps) costs 6.5 at z = 0.5, 26.8 at 0.3, 354 at 0.1. Past z ~ 0.5 the privacy loss of a
 * sampled row grows like 1 / z^2 and subsampling stops amplifying (a row sampled once is
 * recognised), so a study at z < 0.5 spends its budget in one round or reports epsilons in the
 * tens to thousands. The floor is 0.5: the point where one release still costs epsilon <= 10.
 */
export const NOISE_MULTIPLIER_FLOOR = 0.5;
export const NOISE_MULTIPLIER_FLOOR_REASON =
  `below ${NOISE_MULTIPLIER_FLOOR} the Gaussian mechanism's epsilon explodes (delta 1e-5: one release costs epsilon 10 at z = 0.5, 19 at 0.3, 92 at 0.1; one DP-SGD epoch at q = 0.01 costs 6.5, 27, 354): accounting at useful epsilons is meaningless`;

/** Search range of sigma: below SIGMA_MIN (the floor) we stop looking and return it, above SIGMA_MAX we give up. */
const SIGMA_MIN = NOISE_MULTIPLIER_FLOOR;
const SIGMA_MAX = 1e6;

/**
 * Smallest sigma with epsilon(q, sigma, steps, delta) <= target epsilon, to a relative tolerance;
 * the returned sigma always satisfies the target. Special cases: q = 0 or steps = 0 need no noise
 * at all (returns 0); if even sigma = NOISE_MULTIPLIER_FLOOR (0.5) meets the target (e.g. a large
 * epsilon with few steps), returns the floor rather than searching below it: nothing runs there. Throws PrivacyParameterError when the target
 * cannot be met with sigma <= 1e6.
 */
export function calibrateSigma(params: CalibrationParams): number {
  if (typeof params !== 'object' || params === null) {
    throw new PrivacyParameterError('params must be an object { q, steps, delta, epsilon, accountant? }', 'params');
  }
  const q = checkSamplingRate(params.q);
  const steps = checkSteps(params.steps);
  const delta = checkDelta(params.delta);
  const target = params.epsilon;
  if (typeof target !== 'number' || !Number.isFinite(target) || target <= 0) {
    throw new PrivacyParameterError(`epsilon (target) must be a finite number > 0, got ${String(target)}`, 'epsilon');
  }
  const accountant = checkAccountant(params.accountant ?? 'rdp');
  const tolerance = params.tolerance ?? (accountant === 'rdp' ? 1e-6 : 1e-4);
  if (!(tolerance > 0 && tolerance < 1)) {
    throw new PrivacyParameterError(`tolerance must be in (0, 1), got ${String(tolerance)}`, 'tolerance');
  }
  if (q === 0 || steps === 0) return 0;

  const rdpSeries = params.rdpSeries ?? 'exact';
  const epsilonAt = (sigma: number) => computeEpsilon({ q, sigma, steps, delta }, accountant, { rdpSeries });
  const meets = (sigma: number) => epsilonAt(sigma) <= target;

  // Bracket: lo fails the target, hi meets it.
  let lo: number;
  let hi: number;
  // PLD epsilon <= RDP epsilon, so the (cheap) RDP calibration is an upper bound of the PLD answer
  // and a good starting point.
  const start = accountant === 'pld' ? calibrateSigma({ q, steps, delta, epsilon: target, accountant: 'rdp', rdpSeries, tolerance: 1e-3 }) : 1;
  if (meets(start)) {
    hi = start;
    for (;;) {
      if (hi <= SIGMA_MIN) return SIGMA_MIN;
      lo = Math.max(SIGMA_MIN, hi / 2);
      if (!meets(lo)) break;
      hi = lo;
    }
  } else {
    lo = start;
    for (;;) {
      if (lo >= SIGMA_MAX) {
        const eps = epsilonAt(SIGMA_MAX);
        throw new PrivacyParameterError(
          `epsilon (target) ${target} is unreachable: even sigma = ${SIGMA_MAX} gives epsilon = ${eps} (q = ${q}, steps = ${steps}, delta = ${delta}, ${accountant} accountant)`,
          'epsilon',
        );
      }
      hi = Math.min(SIGMA_MAX, lo * 2);
      if (meets(hi)) break;
      lo = hi;
    }
  }
  return bisect(lo, hi);

  /**
   * Shrinks a bracket [failing, meeting] to relative width `tolerance`. Bisection safeguarded
   * regula falsi (Illinois variant) on g(sigma) = log(epsilon(sigma) / target) against log sigma:
   * g is smooth there, so this needs ~5 evaluations instead of ~15 (matters for the PLD accountant,
   * ~0.1 s per evaluation); a plain bisection step is taken whenever the bracket did not halve.
   */
  function bisect(failing: number, meeting: number): number {
    const g = (sigma: number) => Math.log(epsilonAt(sigma) / target);
    let a = failing;
    let b = meeting;
    let ga = g(a);
    let gb = g(b);
    let retained = 0; // -1: a was kept by the last step, +1: b was
    let checkpointWidth = b - a;
    let sinceCheckpoint = 0;
    let forceBisection = false;
    for (let iteration = 0; iteration < 200 && b - a > tolerance * b; iteration++) {
      let x: number;
      if (!forceBisection && Number.isFinite(ga) && Number.isFinite(gb) && ga > 0 && gb < 0) {
        const la = Math.log(a);
        const lb = Math.log(b);
        x = Math.exp(lb - (gb * (lb - la)) / (gb - ga));
        // Keep a minimal step away from both ends so that the bracket always shrinks.
        const minStep = 0.25 * tolerance * b;
        x = Math.min(b - minStep, Math.max(a + minStep, x));
      } else {
        x = 0.5 * (a + b);
      }
      const gx = g(x);
      if (gx <= 0) {
        b = x;
        gb = gx;
        if (retained === -1) ga /= 2; // Illinois: the end kept twice in a row gets half weight
        retained = -1;
      } else {
        a = x;
        ga = gx;
        if (retained === 1) gb /= 2;
        retained = 1;
      }
      // Safeguard: if two steps did not halve the bracket, the next one bisects.
      forceBisection = false;
      if (++sinceCheckpoint === 2) {
        forceBisection = b - a > 0.5 * checkpointWidth;
        checkpointWidth = b - a;
        sinceCheckpoint = 0;
      }
    }
    return b;
  }
}
