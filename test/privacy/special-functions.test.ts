import { describe, expect, it } from 'vitest';
import {
  erfc,
  logErfc,
  logNormalCdf,
  logNormalCdfAndSf,
  logNormalSf,
  normalCdf,
  normalSf,
  normalSfInverseLog,
} from '../../protocols/privacy/special-functions.ts';

// Reference values: mpmath with 50 significant digits.
const ERFC: Array<[number, number]> = [
  [-6, 1.9999999999999999785],
  [-2.5, 1.9995930479825550411],
  [-1, 1.8427007929497148693],
  [-0.3, 1.3286267594591274162],
  [0, 1.0],
  [1e-9, 0.9999999988716208329],
  [0.2, 0.77729741078952153382],
  [0.75, 0.2888443663464848684],
  [1, 0.15729920705028513066],
  [1.5, 0.033894853524689272933],
  [3, 0.000022090496998585441373],
  [6, 2.1519736712498913117e-17],
  [10, 2.088487583762544757e-45],
  [26, 5.6631924088561428465e-296],
];

const LOG_ERFC: Array<[number, number]> = [
  [30, -903.97411711064387808],
  [100, -10005.177585122664333],
  [1000, -1000007.4801207219062],
  [-10, 0.69314718055994530942],
];

const LOG_PHI: Array<[number, number]> = [
  [-40, -804.60844201375378817],
  [-10, -53.231285150512470578],
  [-1, -1.8410216450092635058],
  [0, -0.69314718055994530942],
  [3, -0.0013508099647481937988],
  [8, -6.2209605742717860585e-16],
];

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe('erfc and the normal CDF', () => {
  it('erfc has ~1e-15 relative precision from -6 to 26 (tails included)', () => {
    for (const [x, want] of ERFC) expect(rel(erfc(x), want), `erfc(${x})`).toBeLessThan(5e-15);
  });

  it('logErfc stays finite and precise far in the tail where erfc underflows', () => {
    for (const [x, want] of LOG_ERFC) expect(rel(logErfc(x), want), `logErfc(${x})`).toBeLessThan(1e-14);
    for (const [x, want] of ERFC) expect(rel(logErfc(x), Math.log(want)) < 1e-14 || Math.abs(logErfc(x) - Math.log(want)) < 1e-16).toBe(true);
    expect(logErfc(Infinity)).toBe(-Infinity);
    expect(logErfc(-Infinity)).toBe(Math.LN2);
  });

  it('log Phi is precise in both tails', () => {
    for (const [x, want] of LOG_PHI) expect(rel(logNormalCdf(x), want), `logPhi(${x})`).toBeLessThan(1e-13);
    for (const [x, want] of LOG_PHI) expect(rel(logNormalSf(-x), want), `logSf(${-x})`).toBeLessThan(1e-13);
    const out = new Float64Array(2);
    for (const [x, want] of LOG_PHI) {
      logNormalCdfAndSf(x, out);
      expect(rel(out[0], want)).toBeLessThan(1e-13);
      logNormalCdfAndSf(-x, out);
      expect(rel(out[1], want)).toBeLessThan(1e-13);
    }
  });

  it('Phi + (1 - Phi) = 1 and symmetry', () => {
    for (const x of [-5, -1.3, -0.2, 0, 0.7, 2, 6]) {
      expect(normalCdf(x) + normalSf(x)).toBeCloseTo(1, 15);
      expect(rel(normalCdf(-x), normalSf(x))).toBeLessThan(1e-15);
    }
  });

  it('normalSfInverseLog inverts the upper tail', () => {
    for (const p of [0.3, 1e-3, 1e-12, 1e-40, 1e-200]) {
      const z = normalSfInverseLog(Math.log(p));
      expect(rel(logNormalSf(z), Math.log(p))).toBeLessThan(1e-10);
    }
  });
});
