/**
 * Differential-privacy accountants for the Poisson-subsampled Gaussian mechanism (DP-SGD style
 * rounds), add/remove-one adjacency:
 *  - rdp: Renyi DP (Mironov 2017; Mironov-Talwar-Zhang 2019), exact fractional-order series by
 *    default, or Google dp_accounting 0.6.0's looser one (fractionalSeries) to reproduce it;
 *    RDP curves of heterogeneous rounds can be summed (rdpCurve) and converted once (epsilonFromRdp);
 *  - pld: privacy loss distributions with pessimistic "connect the dots" discretisation and FFT
 *    composition (Koskela et al. 2020; Doroshenko et al. 2022) with a bound on the FFT round-off:
 *    tighter, still an upper bound; computeEpsilonDetails reports min(PLD, RDP) and which one won;
 *  - calibrateSigma: the noise multiplier for a target epsilon.
 */

export { PrivacyParameterError, type AccountantName, type SubsampledGaussianQuery } from './errors.ts';
export {
  RDP_ORDERS,
  deltaFromRdp,
  epsilonFromRdp,
  rdpCurve,
  rdpDelta,
  rdpEpsilon,
  type FractionalSeries,
  type RdpOptions,
} from './rdp-accountant.ts';
export { gaussianDelta, gaussianEpsilon, pldDelta, pldEpsilon, pldEpsilonDetails, type PldOptions } from './pld-accountant.ts';
export {
  calibrateSigma,
  computeEpsilon,
  computeEpsilonDetails,
  type AccountingOptions,
  type CalibrationParams,
  type EpsilonResult,
} from './calibrate.ts';
