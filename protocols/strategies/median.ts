import type { WeightSet } from '../tensors.ts';
import { EveryUpdateStrategyBase, toModel } from './every-update-fit.ts';

/**
 * Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust Distributed
 * Learning: Towards Optimal Statistical Rates", ICML): every coordinate of the new model is the
 * median of the k nodes' values (the mean of the two middle values when k is even), unweighted.
 * While fewer than half the nodes are Byzantine, each coordinate stays within the range of the
 * honest nodes' values.
 *
 * Keeps every update (memory k x model size) and ignores example counts: a node cannot take over
 * the aggregate by claiming a huge count.
 */
export class Median extends EveryUpdateStrategyBase {
  readonly name = 'median';

  protected reduce(global: WeightSet, updates: Float32Array[][]) {
    const k = updates.length;
    const scratch = new Float64Array(k);
    const mid = k >> 1;
    const out = global.map((t, ti) => {
      const r = new Float64Array(t.values.length);
      for (let i = 0; i < r.length; i++) {
        for (let j = 0; j < k; j++) scratch[j] = updates[j][ti][i];
        scratch.sort();
        r[i] = k % 2 === 1 ? scratch[mid] : (scratch[mid - 1] + scratch[mid]) / 2;
      }
      return r;
    });
    return { weights: toModel(global, out), details: { strategy: this.name } };
  }
}
