import type { WeightSet } from '../tensors.ts';
import { EveryUpdateStrategyBase, toModel } from './every-update-fit.ts';

/**
 * Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
 * Distributed Learning: Towards Optimal Statistical Rates", ICML): for every coordinate, sort the
 * k nodes' values, drop the b = floor(beta k) smallest and b largest, and average the rest
 * (unweighted). With at most b Byzantine nodes every coordinate of the result lies within the
 * range of the honest nodes' values.
 *
 * Keeps every update (memory k x model size) and ignores example counts: a node cannot take over
 * the aggregate by claiming a huge count.
 */
export class TrimmedMean extends EveryUpdateStrategyBase {
  readonly name = 'trimmed-mean';

  constructor(readonly trimFraction: number) {
    super();
    if (!(trimFraction > 0 && trimFraction < 0.5)) throw new RangeError(`trimmed-mean: trimFraction must be in (0, 0.5), got ${String(trimFraction)}`);
  }

  protected reduce(global: WeightSet, updates: Float32Array[][]): { weights: WeightSet | undefined; details: Record<string, number | string | boolean> } {
    const k = updates.length;
    const b = Math.floor(this.trimFraction * k);
    // Trimming nothing would be a plain mean: one node could move it arbitrarily. The study's
    // minNodesPerRound rules this out (checked at creation); should it happen, keep the model.
    if (b === 0) return { weights: undefined, details: { strategy: this.name, trimFraction: this.trimFraction, trimmedEachEnd: 0, reason: `trimmed mean of ${k} updates with trimFraction ${this.trimFraction} trims nothing; the global model is kept` } };
    const kept = k - 2 * b; // >= 1 since trimFraction < 0.5
    const scratch = new Float64Array(k);
    const out = global.map((t, ti) => {
      const r = new Float64Array(t.values.length);
      for (let i = 0; i < r.length; i++) {
        for (let j = 0; j < k; j++) scratch[j] = updates[j][ti][i];
        scratch.sort();
        let s = 0;
        for (let j = b; j < k - b; j++) s += scratch[j];
        r[i] = s / kept;
      }
      return r;
    });
    return { weights: toModel(global, out), details: { strategy: this.name, trimFraction: this.trimFraction, trimmedEachEnd: b } };
  }
}
