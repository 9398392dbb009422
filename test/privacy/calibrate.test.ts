import { describe, expect, it } from 'vitest';
import { calibrateSigma, computeEpsilon, PrivacyParameterError, type AccountantName } from '../../protocols/privacy/index.ts';

describe('calibrateSigma', () => {
  const rdpCases: Array<[number, number, number, number]> = [
    // q, steps, delta, target epsilon
    [0.01, 1000, 1e-5, 1],
    [0.01, 10_000, 1e-5, 3],
    [1, 100, 1e-5, 5],
    [0.001, 10_000, 1e-6, 0.5],
    [0.2, 50, 1e-8, 8],
  ];

  it.each(rdpCases)('rdp round trip: q=%s steps=%s delta=%s epsilon=%s', (q, steps, delta, target) => {
    const sigma = calibrateSigma({ q, steps, delta, epsilon: target });
    const reached = computeEpsilon({ q, sigma, steps, delta });
    expect(reached).toBeLessThanOrEqual(target);
    expect(reached).toBeGreaterThan(target * (1 - 1e-4));
    // minimal: a bit less noise misses the target
    expect(computeEpsilon({ q, sigma: sigma * (1 - 1e-4), steps, delta })).toBeGreaterThan(target);
  });

  const pldCases = rdpCases.filter(([, steps]) => steps <= 1000);
  it.each(pldCases)('pld round trip: q=%s steps=%s delta=%s epsilon=%s (and sigma_pld <= sigma_rdp)', (q, steps, delta, target) => {
    const sigma = calibrateSigma({ q, steps, delta, epsilon: target, accountant: 'pld' });
    const reached = computeEpsilon({ q, sigma, steps, delta }, 'pld');
    expect(reached).toBeLessThanOrEqual(target);
    expect(reached).toBeGreaterThan(target * (1 - 1e-2));
    expect(computeEpsilon({ q, sigma: sigma * (1 - 2e-3), steps, delta }, 'pld')).toBeGreaterThan(target);
    expect(sigma).toBeLessThanOrEqual(calibrateSigma({ q, steps, delta, epsilon: target, accountant: 'rdp' }));
  });

  it('needs more noise for a smaller target epsilon and for more steps', () => {
    const base = { q: 0.05, steps: 500, delta: 1e-5 };
    const a = calibrateSigma({ ...base, epsilon: 2 });
    const b = calibrateSigma({ ...base, epsilon: 1 });
    const c = calibrateSigma({ ...base, steps: 2000, epsilon: 2 });
    expect(b).toBeGreaterThan(a);
    expect(c).toBeGreaterThan(a);
  });

  it('needs no noise when nothing is released', () => {
    expect(calibrateSigma({ q: 0, steps: 100, delta: 1e-5, epsilon: 1 })).toBe(0);
    expect(calibrateSigma({ q: 0.1, steps: 0, delta: 1e-5, epsilon: 1 })).toBe(0);
  });

  it('reports an unreachable target clearly', () => {
    // a million full-batch steps: even sigma = 1e6 leaves epsilon ~ 4e-3
    const call = () => calibrateSigma({ q: 1, steps: 1_000_000, delta: 1e-5, epsilon: 1e-3 });
    expect(call).toThrow(PrivacyParameterError);
    expect(call).toThrow(/unreachable/);
  });

  it.each([
    [{ q: 0.1, steps: 10, delta: 1e-5, epsilon: 0 }, /^epsilon/],
    [{ q: 0.1, steps: 10, delta: 1e-5, epsilon: Number.NaN }, /^epsilon/],
    [{ q: 1.1, steps: 10, delta: 1e-5, epsilon: 1 }, /^q/],
    [{ q: 0.1, steps: -3, delta: 1e-5, epsilon: 1 }, /^steps/],
    [{ q: 0.1, steps: 10, delta: 2, epsilon: 1 }, /^delta/],
    [{ q: 0.1, steps: 10, delta: 1e-5, epsilon: 1, accountant: 'moments' as AccountantName }, /^accountant/],
  ])('rejects bad parameters %#', (params, message) => {
    expect(() => calibrateSigma(params)).toThrow(PrivacyParameterError);
    expect(() => calibrateSigma(params)).toThrow(message);
  });
});

describe('computeEpsilon', () => {
  it('defaults to the RDP accountant and accepts pld', () => {
    const query = { q: 0.01, sigma: 1, steps: 1000, delta: 1e-5 };
    const rdp = computeEpsilon(query);
    expect(computeEpsilon(query, 'rdp')).toBe(rdp);
    const pld = computeEpsilon(query, 'pld');
    expect(pld).toBeLessThan(rdp);
    expect(pld).toBeGreaterThan(0.8 * rdp);
  });
});
