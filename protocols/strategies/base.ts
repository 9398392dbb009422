import { AggregationError } from '../aggregation/fedavg.ts';
import { describeSpecMismatch, specsOf, type WeightSet } from '../tensors.ts';
import type { TrainingConfig } from '../training-config.ts';
import type { EvaluationStats, PooledMetrics } from '../model-kinds/kind.ts';
import type { EvaluateResult, FitInstructions, ServerState, StrategyNode } from './strategy.ts';

/**
 * Helpers shared by the strategies: the default configureFit / configureEvaluate, and element-wise
 * access to server-state tensors aligned with the global model.
 */

/** Every node gets the study's {localEpochs, learningRate, batchSize} and proximalMu (0 unless FedProx). */
export function uniformFitInstructions(nodes: StrategyNode[], training: TrainingConfig, proximalMu = 0): Map<string, FitInstructions> {
  const instructions: FitInstructions = { localEpochs: training.localEpochs, learningRate: training.learningRate, batchSize: training.batchSize, proximalMu };
  return new Map(nodes.map((n) => [n.id, { ...instructions }]));
}

/**
 * The default aggregate_evaluate: the model kind's statistics of every report, summed (exact:
 * what a central evaluation of the pooled held-out rows would give).
 */
export function poolReports(results: EvaluateResult[], pool: (stats: EvaluationStats[]) => PooledMetrics): PooledMetrics {
  return pool(results.map((r) => r.stats));
}

/** All of the round's updaters evaluate the new model. */
export function allUpdaters(updaters: StrategyNode[]): StrategyNode[] {
  return [...updaters];
}

/** A weight set shaped like `global`, every value `fill`, as float64. */
export function filledLike(global: WeightSet, fill: number): WeightSet {
  return global.map((t) => ({ name: t.name, shape: [...t.shape], values: new Float64Array(t.values.length).fill(fill) }));
}

/**
 * The server-state tensors `key`, as float64 arrays in the global model's tensor order (copies, so
 * the caller may update them in place), or `init` when the state has none yet. Throws an
 * AggregationError when the stored tensors do not match the model.
 */
export function stateTensorsLike(global: WeightSet, state: ServerState, key: string, init: number): Float64Array[] {
  const stored = state.tensors[key];
  if (stored === undefined) return global.map((t) => new Float64Array(t.values.length).fill(init));
  const mismatch = describeSpecMismatch(specsOf(global), specsOf(stored));
  if (mismatch !== null) throw new AggregationError(`server state "${key}" does not match the model: ${mismatch}`);
  const byName = new Map(stored.map((t) => [t.name, t] as const));
  return global.map((t) => Float64Array.from(byName.get(t.name)!.values));
}

/** The mean delta's values in the global model's tensor order (throws when the tensors differ). */
export function alignedDelta(global: WeightSet, meanDelta: WeightSet): (Float32Array | Float64Array)[] {
  const mismatch = describeSpecMismatch(specsOf(global), specsOf(meanDelta));
  if (mismatch !== null) throw new AggregationError(`mean delta does not match the model: ${mismatch}`);
  const byName = new Map(meanDelta.map((t) => [t.name, t] as const));
  return global.map((t) => {
    const v = byName.get(t.name)!.values;
    if (v.length !== t.values.length) throw new AggregationError(`mean delta: tensor "${t.name}" has ${v.length} values, expected ${t.values.length}`);
    return v;
  });
}

/** Wraps float64 arrays (global order) as a weight set named like `global`. */
export function asWeightSet(global: WeightSet, arrays: Float64Array[]): WeightSet {
  return global.map((t, k) => ({ name: t.name, shape: [...t.shape], values: arrays[k] }));
}

/** global + step, computed in float64 and rounded once to float32 (the wire dtype of models). */
export function addStep(global: WeightSet, step: ArrayLike<number>[]): WeightSet {
  return global.map((t, k) => {
    const g = t.values;
    const s = step[k];
    const out = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) out[i] = g[i] + s[i];
    for (let i = 0; i < out.length; i++) {
      if (out[i] - out[i] !== 0) throw new AggregationError(`new model: tensor "${t.name}" is not finite at flat index ${i}`);
    }
    return { name: t.name, shape: [...t.shape], values: out };
  });
}
