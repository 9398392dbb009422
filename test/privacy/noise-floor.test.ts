import { describe, expect, it } from 'vitest';
import { calibrateSigma, computeEpsilon } from '../../protocols/privacy/index.ts';
import { NOISE_MULTIPLIER_FLOOR } from '../../protocols/privacy/calibrate.ts';
import { StudyPrivacy } from '../../protocols/privacy/study-privacy.ts';

describe('noise multiplier floor', () => {
  it('is where one un-subsampled Gaussian release costs epsilon 10 at delta 1e-5 (the reason stated in calibrate.ts)', () => {
    expect(NOISE_MULTIPLIER_FLOOR).toBe(0.5);
    const one = (sigma: number) => computeEpsilon({ q: 1, sigma, steps: 1, delta: 1e-5 }, 'pld');
    expect(one(0.5)).toBeGreaterThan(9.5);
    expect(one(0.5)).toBeLessThan(10.5);
    expect(one(0.3)).toBeGreaterThan(18);
    expect(one(0.1)).toBeGreaterThan(85);
    // One DP-SGD epoch at q = 0.01: 6.5 at the floor, 27 at 0.3.
    expect(computeEpsilon({ q: 0.01, sigma: 0.3, steps: 100, delta: 1e-5 }, 'pld')).toBeGreaterThan(25);
  });

  it('the study config refuses a noise multiplier under the floor, naming the field and the reason', () => {
    const central = { noiseMultiplier: 0.3, clipping: { kind: 'fixed', norm: 1 } };
    const bad = StudyPrivacy.safeParse({ central });
    expect(bad.success).toBe(false);
    const issue = bad.error!.issues[0];
    expect(issue.path).toEqual(['central', 'noiseMultiplier']);
    expect(issue.message).toMatch(/at least 0\.5: below 0\.5 the Gaussian mechanism's epsilon explodes/);
    const sgd = StudyPrivacy.safeParse({ dpSgd: { noiseMultiplier: 0.49, clipNorm: 1, samplingRate: 0.1 } });
    expect(sgd.success).toBe(false);
    expect(sgd.error!.issues[0].path).toEqual(['dpSgd', 'noiseMultiplier']);
    expect(StudyPrivacy.safeParse({ central: { ...central, noiseMultiplier: 0 } }).success).toBe(false);
    expect(StudyPrivacy.safeParse({ central: { ...central, noiseMultiplier: 0.5 }, dpSgd: { noiseMultiplier: 0.5, clipNorm: 1, samplingRate: 0.1 } }).success).toBe(true);
  });

  it('the calibrator never answers below the floor, even when a smaller sigma would meet the target', () => {
    const sigma = calibrateSigma({ q: 0.001, steps: 1, delta: 1e-5, epsilon: 50 });
    expect(sigma).toBe(0.5);
    expect(computeEpsilon({ q: 0.001, sigma: 0.3, steps: 1, delta: 1e-5 })).toBeLessThan(50);
  });
});
