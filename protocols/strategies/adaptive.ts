import type { WeightSet } from '../tensors.ts';
import { addStep, alignedDelta, asWeightSet, filledLike, stateTensorsLike } from './base.ts';
import { MeanDeltaStrategyBase } from './mean-delta-fit.ts';
import type { ServerState } from './strategy.ts';

/**
 * The common server step of FedAdam, FedYogi and FedAdagrad (Reddi, Charles, Zaheer, Garrett,
 * Rush, Konecny, Kumar, McMahan 2021, "Adaptive Federated Optimization", ICLR, Algorithm 2),
 * with Delta the (example-weighted) mean delta:
 *   m <- beta1 m + (1 - beta1) Delta
 *   v <- secondMoment(v, Delta^2)
 *   w <- w + eta m / (sqrt(v) + tau)
 * m starts at 0 and v at tau^2 (the paper's v_{-1} >= tau^2). As in the paper there is no bias
 * correction of m or v. State tensors "m" (when beta1 > 0) and "v", float64.
 */
export abstract class AdaptiveServerOptimizer extends MeanDeltaStrategyBase {
  constructor(
    protected readonly eta: number,
    protected readonly beta1: number,
    protected readonly tau: number,
  ) {
    super();
  }

  /** The new second moment of one coordinate from the old one and Delta^2. */
  protected abstract secondMoment(v: number, deltaSquared: number): number;

  override initialServerState(global: WeightSet): ServerState {
    const tensors: Record<string, WeightSet> = { v: filledLike(global, this.tau * this.tau) };
    if (this.beta1 > 0) tensors.m = filledLike(global, 0);
    return { scalars: {}, tensors };
  }

  applyMeanDelta(global: WeightSet, meanDelta: WeightSet, serverState: ServerState, _round: number) {
    const delta = alignedDelta(global, meanDelta);
    const { eta, beta1, tau } = this;
    const useM = beta1 > 0;
    const m = useM ? stateTensorsLike(global, serverState, 'm', 0) : [];
    const v = stateTensorsLike(global, serverState, 'v', tau * tau);
    const step = v.map((vk, k) => {
      const d = delta[k];
      const mk = useM ? m[k] : undefined;
      const s = new Float64Array(vk.length);
      for (let i = 0; i < vk.length; i++) {
        const di = d[i];
        let mi = di;
        if (mk !== undefined) {
          mi = beta1 * mk[i] + (1 - beta1) * di;
          mk[i] = mi;
        }
        vk[i] = this.secondMoment(vk[i], di * di);
        s[i] = (eta * mi) / (Math.sqrt(vk[i]) + tau);
      }
      return s;
    });
    const tensors: Record<string, WeightSet> = { ...serverState.tensors, v: asWeightSet(global, v) };
    if (useM) tensors.m = asWeightSet(global, m);
    return {
      weights: addStep(global, step),
      serverState: { scalars: { ...serverState.scalars }, tensors },
      details: { strategy: this.name, serverLearningRate: eta, tau },
    };
  }
}
