import type { WeightSet } from '../tensors.ts';
import { addStep, alignedDelta, asWeightSet, filledLike, stateTensorsLike } from './base.ts';
import { MeanDeltaStrategyBase } from './mean-delta-fit.ts';
import type { ServerState } from './strategy.ts';

export interface FedAvgMParams {
  /** Server learning rate eta. */
  serverLearningRate: number;
  /** Server momentum beta. */
  momentum: number;
}

/**
 * FedAvgM (Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
 * Federated Visual Classification"): server momentum on the mean delta,
 *   v <- beta v + meanDelta,   w <- w + eta v,
 * with v = 0 before round 1. The server state holds v as tensors "momentum" (float64).
 */
export class FedAvgM extends MeanDeltaStrategyBase {
  readonly name = 'fedavgm';

  constructor(readonly params: FedAvgMParams) {
    super();
  }

  override initialServerState(global: WeightSet): ServerState {
    return { scalars: {}, tensors: { momentum: filledLike(global, 0) } };
  }

  applyMeanDelta(global: WeightSet, meanDelta: WeightSet, serverState: ServerState, _round: number) {
    const { serverLearningRate: eta, momentum: beta } = this.params;
    const delta = alignedDelta(global, meanDelta);
    const v = stateTensorsLike(global, serverState, 'momentum', 0);
    const step = v.map((vk, k) => {
      const d = delta[k];
      const s = new Float64Array(vk.length);
      for (let i = 0; i < vk.length; i++) {
        vk[i] = beta * vk[i] + d[i];
        s[i] = eta * vk[i];
      }
      return s;
    });
    return {
      weights: addStep(global, step),
      serverState: { scalars: { ...serverState.scalars }, tensors: { ...serverState.tensors, momentum: asWeightSet(global, v) } },
      details: { strategy: this.name, serverLearningRate: eta, momentum: beta },
    };
  }
}
