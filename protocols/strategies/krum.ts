import type { WeightSet } from '../tensors.ts';
import { EveryUpdateStrategyBase, toModel } from './every-update-fit.ts';

/**
 * Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with Adversaries:
 * Byzantine Tolerant Gradient Descent", NeurIPS). With n updates of which at most f are Byzantine,
 * each update's score is the sum of squared L2 distances to its n - f - 2 nearest other updates;
 * the `select` lowest-scored updates are averaged (unweighted; select = 1 is Krum). The guarantee
 * needs n > 2f + 2: with fewer updates the round yields no new model (weights undefined, with a
 * details.reason). Ties in score go to the earlier arrival.
 *
 * Keeps every update (memory k x model size, plus a k x k distance table) and ignores example
 * counts: a node cannot take over the aggregate by claiming a huge count.
 */
export class Krum extends EveryUpdateStrategyBase {
  readonly name = 'krum';

  constructor(
    readonly byzantine: number,
    readonly select: number,
  ) {
    super();
    if (!Number.isSafeInteger(byzantine) || byzantine < 0) throw new RangeError(`krum: byzantine must be an integer >= 0, got ${String(byzantine)}`);
    if (!Number.isSafeInteger(select) || select < 1) throw new RangeError(`krum: select must be an integer >= 1, got ${String(select)}`);
  }

  protected reduce(global: WeightSet, updates: Float32Array[][]) {
    const n = updates.length;
    const f = this.byzantine;
    const base = { strategy: this.name, byzantine: f, select: this.select };
    if (n < 2 * f + 3 || n < this.select) {
      return { weights: undefined, details: { ...base, reason: `krum needs at least ${Math.max(2 * f + 3, this.select)} updates (n > 2f + 2 and n >= select), got ${n}` } };
    }
    const dist = new Float64Array(n * n);
    for (let a = 0; a < n; a++) {
      for (let b = a + 1; b < n; b++) {
        let s = 0;
        for (let t = 0; t < updates[a].length; t++) {
          const x = updates[a][t];
          const y = updates[b][t];
          for (let i = 0; i < x.length; i++) {
            const d = x[i] - y[i];
            s += d * d;
          }
        }
        dist[a * n + b] = s;
        dist[b * n + a] = s;
      }
    }
    const nearest = n - f - 2;
    const scores = Array.from({ length: n }, (_, a) => {
      const others: number[] = [];
      for (let b = 0; b < n; b++) if (b !== a) others.push(dist[a * n + b]);
      others.sort((x, y) => x - y);
      let s = 0;
      for (let j = 0; j < nearest; j++) s += others[j];
      return s;
    });
    const order = scores.map((s, i) => ({ s, i })).sort((x, y) => x.s - y.s || x.i - y.i);
    const chosen = order.slice(0, this.select).map((o) => o.i).sort((x, y) => x - y);
    const out = global.map((t, ti) => {
      const r = new Float64Array(t.values.length);
      for (const j of chosen) {
        const u = updates[j][ti];
        for (let i = 0; i < r.length; i++) r[i] += u[i];
      }
      for (let i = 0; i < r.length; i++) r[i] /= chosen.length;
      return r;
    });
    return { weights: toModel(global, out), details: { ...base, selected: chosen.join(',') } };
  }
}
