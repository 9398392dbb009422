import { describe, expect, it } from 'vitest';
import { accountedNoiseMultiplier, updateNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { privacyFacts } from '../../protocols/policy/jurisdiction-policy.ts';

/**
 * Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, Theorem 1) releases a noised count
 * of unclipped updates beside the noised update sum. The contributor count is published, so the
 * count has sensitivity 1 (not 1/2) and the pair is one Gaussian of multiplier
 * (z_delta^-2 + sigma_b^-2)^(-1/2). Checked here against closed forms computed independently.
 */

/** erfc with relative error < 1.2e-7 (Numerical Recipes, 2nd ed., 6.2, Chebyshev fit): independent of the library. */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}
const Phi = (x: number) => 0.5 * erfc(-x / Math.SQRT2);
/** Exact (epsilon, delta) of a Gaussian mechanism with mu = sensitivity / std (Balle & Wang 2018, Theorem 8). */
function exactGaussianEpsilon(mu: number, delta: number): number {
  const d = (e: number) => Phi(-e / mu + mu / 2) - Math.exp(e) * Phi(-e / mu - mu / 2);
  let lo = 0;
  let hi = 100;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (d(mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}

describe('adaptive clipping is accounted with count sensitivity 1 (the contributor count is published)', () => {
  const config = { noiseMultiplier: 2.85, clipping: { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 2 } };

  it('z = 2.85, sigma_b = 2: the charged multiplier is (z_delta^-2 + sigma_b^-2)^-1/2 = 1.794, not z', () => {
    // z_delta as drawn: (2.85^-2 - 4^-2)^-1/2 = 4.0617 (the update noise is unchanged by the fix).
    const zDelta = 1 / Math.sqrt(2.85 ** -2 - 4 ** -2);
    expect(updateNoiseMultiplier(config)).toBeCloseTo(zDelta, 12);
    expect(zDelta).toBeCloseTo(4.0617, 4);
    const expected = 1 / Math.sqrt(zDelta ** -2 + 2 ** -2);
    expect(expected).toBeCloseTo(1.7943, 4);
    expect(accountedNoiseMultiplier(config)).toBeCloseTo(expected, 12);
  });

  it('20 rounds at q = 1, delta 1e-5: epsilon about 13.1 (PLD 13.16, exact 13.1), where 7.44 was printed', () => {
    // q = 1: 20 Gaussian releases of multiplier s compose exactly into one with mu = sqrt(20) / s.
    const exact = exactGaussianEpsilon(Math.sqrt(20) / 1.7942746624687325, 1e-5);
    const old = exactGaussianEpsilon(Math.sqrt(20) / 2.85, 1e-5);
    expect(old).toBeCloseTo(7.44, 1);
    expect(exact).toBeGreaterThan(13.0);
    expect(exact).toBeLessThan(13.2);
    const pld = computeEpsilon({ q: 1, sigma: accountedNoiseMultiplier(config), steps: 20, delta: 1e-5 }, 'pld');
    // PLD is an upper bound that is tight here; RDP is looser, never below.
    expect(pld).toBeGreaterThanOrEqual(exact - 1e-3);
    expect(pld).toBeLessThan(exact + 0.1);
    expect(pld).toBeCloseTo(13.16, 1);
    expect(computeEpsilon({ q: 1, sigma: accountedNoiseMultiplier(config), steps: 20, delta: 1e-5 }, 'rdp')).toBeGreaterThan(exact);
  });

  it('fixed clipping releases no count: the charged multiplier is z', () => {
    expect(accountedNoiseMultiplier({ noiseMultiplier: 2.85, clipping: { kind: 'fixed', norm: 1 } })).toBe(2.85);
  });

  it("the jurisdiction policy's per-round epsilon uses the charged multiplier too", () => {
    const study = { privacy: { accountant: 'pld' as const, delta: 1e-5, central: { ...config, nodeSamplingRate: 1 } } } as unknown as Parameters<typeof privacyFacts>[0];
    const perRound = privacyFacts(study).epsilonPerRound!;
    expect(perRound).toBeCloseTo(exactGaussianEpsilon(1 / 1.7942746624687325, 1e-5), 1);
    expect(perRound).toBeGreaterThan(exactGaussianEpsilon(1 / 2.85, 1e-5) + 0.5);
  });
});
