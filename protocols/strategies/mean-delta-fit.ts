import { AggregationError, decodeAccumulatorState, WeightedMeanAccumulator } from '../aggregation/fedavg.ts';
import { describeSpecMismatch, distanceNorm, specsOf, type TensorSpec, type WeightSet } from '../tensors.ts';
import type { TrainingConfig } from '../training-config.ts';
import { allUpdaters, poolReports, uniformFitInstructions } from './base.ts';
import { cloneServerState, emptyServerState } from './server-state.ts';
import type { EvaluationStats, PooledMetrics } from '../model-kinds/kind.ts';
import type { AcceptedUpdate, EvaluateResult, FitAggregation, FitFailure, FitInstructions, FitOutcome, MeanDeltaStrategy, PersistedFit, RoundContext, ServerState, StrategyNode } from './strategy.ts';

/**
 * The FitAggregation every mean-delta strategy shares. It folds the nodes' MODELS into the
 * example-weighted running sum of WeightedMeanAccumulator (float64 sums, the benchmarked hot
 * path: one multiply-add per value, no per-update delta array), and only at finish turns the sum
 * into the mean delta
 *
 *   meanDelta = sum_k n_k w_k / sum_k n_k - global        (float64)
 *
 * and hands it to the strategy's applyMeanDelta. Since sum_k n_k (w_k - g) / N = (sum_k n_k w_k)/N - g
 * exactly in real arithmetic, this is the example-weighted mean of the deltas.
 *
 * state() is the accumulator's FMA1 bytes (fedavg.ts, encodeState), so a resumed round continues from the
 * same float64 sums bit for bit.
 */
export class MeanDeltaFit implements FitAggregation {
  private readonly specList: TensorSpec[];

  constructor(
    private readonly strategy: MeanDeltaStrategy,
    private readonly global: WeightSet,
    private readonly serverState: ServerState,
    private readonly context: RoundContext,
    private readonly accumulator: WeightedMeanAccumulator,
  ) {
    this.specList = specsOf(global);
    const mismatch = describeSpecMismatch(this.specList, accumulator.specs);
    if (mismatch !== null) throw new AggregationError(`round state does not match the global model: ${mismatch}`);
  }

  get specs(): TensorSpec[] {
    return this.specList.map((s) => ({ name: s.name, shape: [...s.shape] }));
  }

  get count(): number {
    return this.accumulator.count;
  }

  accept(update: WeightSet, numExamples: number): AcceptedUpdate {
    // Validates names, shapes, finiteness and the weight; throws AggregationError, changing nothing.
    this.accumulator.add(update, numExamples);
    return { deltaNorm: distanceNorm(update, this.global) };
  }

  state(): Uint8Array {
    return this.accumulator.encodeState(); // the FMA1 bytes, without copying the sums first
  }

  finish(failures: FitFailure[]): FitOutcome {
    const nodes = this.accumulator.count;
    if (nodes === 0) {
      return { weights: undefined, serverState: cloneServerState(this.serverState), details: { nodes: 0 } };
    }
    const total = this.accumulator.totalWeight;
    const sums = new Map(this.accumulator.sum().map((s) => [s.name, s] as const)); // float64 copies
    const meanDelta: WeightSet = this.global.map((t) => {
      const s = sums.get(t.name)!;
      const g = t.values;
      const v = s.values;
      for (let i = 0; i < v.length; i++) v[i] = v[i] / total - g[i];
      return s;
    });
    const step = this.strategy.applyMeanDelta(this.global, meanDelta, cloneServerState(this.serverState), this.context.round);
    return { weights: step.weights, serverState: step.serverState, details: { ...step.details, nodes, totalExamples: total } };
  }
}


/**
 * Base of the mean-delta strategies: begin/resume build a MeanDeltaFit; configureFit sends the
 * study's training settings (proximalMu from fitProximalMu()); every updater evaluates.
 */
export abstract class MeanDeltaStrategyBase implements MeanDeltaStrategy {
  abstract readonly name: string;
  readonly input = 'mean-delta' as const;

  initialServerState(_global: WeightSet): ServerState {
    return emptyServerState();
  }

  protected fitProximalMu(): number {
    return 0;
  }

  configureFit(_round: number, _serverState: ServerState, nodes: StrategyNode[], training: TrainingConfig): Map<string, FitInstructions> {
    return uniformFitInstructions(nodes, training, this.fitProximalMu());
  }

  aggregateFit(global: WeightSet, serverState: ServerState, context: RoundContext, persisted?: PersistedFit): FitAggregation {
    const accumulator = persisted ? WeightedMeanAccumulator.fromState(decodeAccumulatorState(persisted.state)) : new WeightedMeanAccumulator(specsOf(global));
    return new MeanDeltaFit(this, global, serverState, context, accumulator);
  }

  aggregateEvaluate(_round: number, results: EvaluateResult[], _failures: FitFailure[], pool: (stats: EvaluationStats[]) => PooledMetrics): PooledMetrics {
    return poolReports(results, pool);
  }

  configureEvaluate(_round: number, _serverState: ServerState, updaters: StrategyNode[]): StrategyNode[] {
    return allUpdaters(updaters);
  }

  abstract applyMeanDelta(global: WeightSet, meanDelta: WeightSet, serverState: ServerState, round: number): { weights: WeightSet; serverState: ServerState; details: Record<string, number | string | boolean> };
}
