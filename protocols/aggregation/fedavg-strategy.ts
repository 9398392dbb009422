import type { RoundAggregation, RoundOutcome, Strategy } from '../strategy.ts';
import { l2Norm, specsOf, subtract, type WeightSet } from '../tensors.ts';
import { decodeAccumulatorState, encodeAccumulatorState, WeightedMeanAccumulator } from './fedavg.ts';

/** FedAvg (McMahan et al. 2017): the example-weighted mean of the nodes' models. */
export class FedAvgStrategy implements Strategy {
  readonly name = 'fedavg';

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
