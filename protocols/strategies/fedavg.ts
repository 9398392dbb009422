import type { WeightSet } from '../tensors.ts';
import { addStep, alignedDelta } from './base.ts';
import { MeanDeltaStrategyBase } from './mean-delta-fit.ts';
import type { ServerState } from './strategy.ts';

/**
 * FedAvg (McMahan, Moore, Ramage, Hampson, Arcas 2017, "Communication-Efficient Learning of Deep
 * Networks from Decentralized Data"): the new global model is the example-weighted mean of the
 * nodes' models, i.e. w <- w + meanDelta. Stateless on the server.
 */
export class FedAvg extends MeanDeltaStrategyBase {
  readonly name: string = 'fedavg';

  applyMeanDelta(global: WeightSet, meanDelta: WeightSet, serverState: ServerState, _round: number) {
    return { weights: addStep(global, alignedDelta(global, meanDelta)), serverState, details: { strategy: this.name } };
  }
}
