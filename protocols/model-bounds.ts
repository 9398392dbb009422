import type { WeightSet } from './tensors.ts';

/**
 * The one check both sides apply to a global model before it is published (coordinator) or
 * loaded (node): every value finite and |w| <= maxAbsWeight (StudyBounds.maxAbsWeight). A model
 * outside it is what a takeover looks like (weights of 1e37 were once accepted and published);
 * training from it only diverges.
 */

/** Undefined when every weight is finite and within maxAbs; otherwise where the first one is not, in words. */
export function modelOutOfRange(weights: WeightSet, maxAbs: number): string | undefined {
  for (const t of weights) {
    const v = t.values;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      // One comparison covers both: NaN fails it, and so does any |x| > maxAbs (infinities included).
      if (!(Math.abs(x) <= maxAbs)) {
        const what = Number.isFinite(x) ? `|w| = ${Math.abs(x).toExponential(3)} > ${maxAbs}` : `a non-finite value (${x})`;
        return `tensor "${t.name}" has ${what} at flat index ${i}`;
      }
    }
  }
  return undefined;
}
