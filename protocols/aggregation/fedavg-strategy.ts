import type { RoundAggregation, RoundOutcome, Strategy } from '../strategy.ts';
import { l2Norm, specsOf, subtract, type WeightSet } from '../tensors.ts';
import { FedAvg } from '../strategies/fedavg.ts';
import { decodeAccumulatorState, encodeAccumulatorState, WeightedMeanAccumulator } from './fedavg.ts';

/**
 * FedAvg (McMahan et al. 2017): the example-weighted mean of the nodes' models.
 *
 * Transitional: this is the Strategy v2 FedAvg (protocols/strategies/fedavg.ts, so it can sit
 * under the v2 central-DP wrapper) that also keeps the v1 begin/resume of protocols/strategy.ts,
 * unchanged, for the coordinator until it moves to v2. New code: createStrategy (strategies/index.ts).
 */
export class FedAvgStrategy extends FedAvg implements Strategy {

  begin(global: WeightSet): RoundAggregation {
    return new FedAvgRound(global, new WeightedMeanAccumulator(specsOf(global)));
  }

  resume(global: WeightSet, state: Uint8Array): RoundAggregation {
    return new FedAvgRound(global, WeightedMeanAccumulator.fromState(decodeAccumulatorState(state)));
  }
}

class FedAvgRound implements RoundAggregation {
  constructor(
    private readonly global: WeightSet,
    private readonly accumulator: WeightedMeanAccumulator,
  ) {}

  get specs() {
    return specsOf(this.global);
  }

  get count() {
    return this.accumulator.count;
  }

  accept(update: WeightSet, numExamples: number) {
    this.accumulator.add(update, numExamples);
    return { deltaNorm: l2Norm(subtract(update, this.global)) };
  }

  state() {
    return encodeAccumulatorState(this.accumulator.toState());
  }

  finish(): RoundOutcome {
    return { weights: this.accumulator.count === 0 ? undefined : this.accumulator.mean(), details: { nodes: this.accumulator.count } };
  }
}
