/**
 * Error type and input checks shared by the privacy accountants.
 *
 * Every check throws a PrivacyParameterError whose message starts with the name of the offending
 * parameter, so a CLI or an HTTP handler can show it as is.
 */

export type AccountantName = 'rdp' | 'pld';

/**
 * One Poisson-subsampled Gaussian mechanism composed over `steps` steps, add/remove-one adjacency.
 *  - q: Poisson sampling rate in [0, 1] (1 = every record/client takes part in every step);
 *  - sigma: noise multiplier (noise std / L2 sensitivity), > 0;
 *  - steps: number of compositions, integer >= 0;
 *  - delta: target delta in (0, 1).
 */
export interface SubsampledGaussianQuery {
  q: number;
  sigma: number;
  steps: number;
  delta: number;
}

export class PrivacyParameterError extends Error {
  /** Name of the offending parameter (q, sigma, steps, delta, epsilon, curve, ...), when known. */
  readonly parameter: string | undefined;

  constructor(message: string, parameter?: string) {
    super(message);
    this.name = 'PrivacyParameterError';
    this.parameter = parameter;
  }
}

function describe(value: unknown): string {
  return typeof value === 'number' ? String(value) : `${typeof value} ${JSON.stringify(value)}`;
}

export function checkSamplingRate(q: unknown, name = 'q'): number {
  if (typeof q !== 'number' || !Number.isFinite(q) || q < 0 || q > 1) {
    throw new PrivacyParameterError(`${name} (sampling rate) must be a number in [0, 1], got ${describe(q)}`, name);
  }
  return q;
}

export function checkSigma(sigma: unknown, name = 'sigma'): number {
  if (typeof sigma !== 'number' || !Number.isFinite(sigma) || sigma <= 0) {
    const hint = sigma === 0 ? ' (sigma = 0 adds no noise: the mechanism is not differentially private)' : '';
    throw new PrivacyParameterError(`${name} (noise multiplier) must be a finite number > 0, got ${describe(sigma)}${hint}`, name);
  }
  return sigma;
}

export function checkSteps(steps: unknown, name = 'steps'): number {
  if (typeof steps !== 'number' || !Number.isSafeInteger(steps) || steps < 0) {
    throw new PrivacyParameterError(`${name} must be an integer >= 0, got ${describe(steps)}`, name);
  }
  return steps;
}

export function checkDelta(delta: unknown, name = 'delta'): number {
  if (typeof delta !== 'number' || !Number.isFinite(delta) || delta <= 0 || delta >= 1) {
    throw new PrivacyParameterError(`${name} must be a number in (0, 1), got ${describe(delta)}`, name);
  }
  return delta;
}

export function checkEpsilon(epsilon: unknown, name = 'epsilon'): number {
  if (typeof epsilon !== 'number' || !Number.isFinite(epsilon) || epsilon < 0) {
    throw new PrivacyParameterError(`${name} must be a finite number >= 0, got ${describe(epsilon)}`, name);
  }
  return epsilon;
}

export function checkAccountant(accountant: unknown): AccountantName {
  if (accountant !== 'rdp' && accountant !== 'pld') {
    throw new PrivacyParameterError(`accountant must be 'rdp' or 'pld', got ${describe(accountant)}`, 'accountant');
  }
  return accountant;
}

/** Validates a whole query (and that it is an object at all). */
export function checkQuery(query: unknown): SubsampledGaussianQuery {
  if (typeof query !== 'object' || query === null) {
    throw new PrivacyParameterError(`query must be an object { q, sigma, steps, delta }, got ${describe(query)}`, 'query');
  }
  const { q, sigma, steps, delta } = query as Record<string, unknown>;
  return { q: checkSamplingRate(q), sigma: checkSigma(sigma), steps: checkSteps(steps), delta: checkDelta(delta) };
}
