import { AggregationError } from '../aggregation/fedavg.ts';
import { describeSpecMismatch, specsOf, type TensorSpec, type WeightSet } from '../tensors.ts';
import type { TrainingConfig } from '../training-config.ts';
import { decodeWeights, encodeWeights } from '../weights-codec.ts';
import { allUpdaters, poolReports, uniformFitInstructions } from './base.ts';
import { emptyServerState } from './server-state.ts';
import type { EvaluationStats, PooledMetrics } from '../model-kinds/kind.ts';
import type { AcceptedUpdate, EvaluateResult, FitAggregation, FitFailure, FitInstructions, FitOutcome, PersistedFit, RoundContext, ServerState, Strategy, StrategyNode } from './strategy.ts';

/**
 * The FitAggregation of the robust strategies (input 'every-update'): it keeps every update, as
 * float32 arrays in the global model's tensor order. accept() validates the update and returns it
 * as `kept` (a float32 FMW1 frame) for the coordinator to store once; state() is only a count.
 * aggregateFit (resuming) decodes the kept frames back, in arrival order, to the same float32 values.
 *
 * Memory: k updates x model size. Example counts are ignored: each update counts once.
 */
export class EveryUpdateFit implements FitAggregation {
  private readonly specList: TensorSpec[];
  private readonly updates: Float32Array[][] = [];
  /**
   * Kept frames handed back on resume, decoded only when the round finishes: the coordinator
   * resumes the aggregation for every arriving update, and decoding all earlier ones each time
   * would cost O(k^2) decodes per round.
   */
  private pending: Uint8Array[] = [];

  constructor(
    private readonly reduce: (global: WeightSet, updates: Float32Array[][]) => { weights: WeightSet | undefined; details: Record<string, number | string | boolean> },
    private readonly global: WeightSet,
    private readonly serverState: ServerState,
  ) {
    this.specList = specsOf(global);
  }

  get specs(): TensorSpec[] {
    return this.specList.map((s) => ({ name: s.name, shape: [...s.shape] }));
  }

  get count(): number {
    return this.pending.length + this.updates.length;
  }

  /** Validates an update (same tensors as the global model, finite float32 values) into global order. */
  private align(update: WeightSet, what: string): Float32Array[] {
    if (!Array.isArray(update)) throw new AggregationError(`${what} must be an array of tensors`);
    for (let i = 0; i < update.length; i++) {
      const t = update[i];
      if (t === null || typeof t !== 'object' || typeof t.name !== 'string' || !Array.isArray(t.shape)) throw new AggregationError(`${what}: tensor at index ${i} is not a {name, shape, values} object`);
    }
    const mismatch = describeSpecMismatch(this.specList, specsOf(update));
    if (mismatch !== null) throw new AggregationError(`${what} does not match the model: ${mismatch}`);
    const byName = new Map(update.map((t) => [t.name, t] as const));
    return this.global.map((g) => {
      const v = byName.get(g.name)!.values;
      if (!(v instanceof Float32Array || v instanceof Float64Array)) throw new AggregationError(`${what}: tensor "${g.name}": values must be a Float32Array or Float64Array`);
      if (v.length !== g.values.length) throw new AggregationError(`${what}: tensor "${g.name}" needs ${g.values.length} values, got ${v.length}`);
      const f = Float32Array.from(v); // the kept precision: what resume gets back from the frame
      for (let i = 0; i < f.length; i++) {
        if (f[i] - f[i] !== 0) throw new AggregationError(`${what}: tensor "${g.name}" has a non-finite value (${v[i]}) at flat index ${i}`);
      }
      return f;
    });
  }

  accept(update: WeightSet, _numExamples: number): AcceptedUpdate {
    const values = this.align(update, 'update');
    const kept = encodeWeights(this.global.map((g, k) => ({ name: g.name, shape: [...g.shape], values: values[k] })), 'float32');
    // Restored frames stay pending: finish puts them first (arrival order) when it decodes them.
    this.updates.push(values);
    return { deltaNorm: deltaNorm(values, this.global), kept };
  }

  /** @internal resume: the kept frames, in arrival order (decoded when needed). */
  restore(kept: Uint8Array[]): void {
    this.pending = [...kept];
  }

  private decodePending(): void {
    if (this.pending.length === 0) return;
    const frames = this.pending;
    this.pending = [];
    const decoded = frames.map((bytes, index) => {
      let ws: WeightSet;
      try {
        ws = decodeWeights(bytes, { expected: this.specList, dtype: 'float32' });
      } catch (err) {
        throw new AggregationError(`kept update ${index}: ${(err as Error).message}`, { cause: err });
      }
      return this.align(ws, `kept update ${index}`);
    });
    this.updates.unshift(...decoded);
  }

  state(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify({ v: 1, count: this.count }));
  }

  finish(failures: FitFailure[]): FitOutcome {
    this.decodePending();
    const serverState = { scalars: { ...this.serverState.scalars }, tensors: { ...this.serverState.tensors } };
    if (this.updates.length === 0) return { weights: undefined, serverState, details: { nodes: 0 } };
    const { weights, details } = this.reduce(this.global, this.updates);
    return { weights, serverState, details: { ...details, nodes: this.updates.length } };
  }
}

function deltaNorm(values: Float32Array[], global: WeightSet): number {
  let s = 0;
  for (let k = 0; k < values.length; k++) {
    const u = values[k];
    const g = global[k].values;
    for (let i = 0; i < u.length; i++) {
      const d = u[i] - g[i];
      s += d * d;
    }
  }
  return Math.sqrt(s); // float32 inputs: no overflow in float64
}

function parseCount(state: Uint8Array): number {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(state));
  } catch (err) {
    throw new AggregationError(`round state is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const count = (parsed as { v?: unknown; count?: unknown } | null)?.count;
  if ((parsed as { v?: unknown } | null)?.v !== 1 || !Number.isSafeInteger(count) || (count as number) < 0) throw new AggregationError('round state must be {"v":1,"count":n}');
  return count as number;
}

/** Base of the every-update strategies: they aggregate the kept float32 updates at finish. */
export abstract class EveryUpdateStrategyBase implements Strategy {
  abstract readonly name: string;
  readonly input = 'every-update' as const;

  /** The aggregate of the round's updates (float32 values in the global model's tensor order). */
  protected abstract reduce(global: WeightSet, updates: Float32Array[][]): { weights: WeightSet | undefined; details: Record<string, number | string | boolean> };

  initialServerState(_global: WeightSet): ServerState {
    return emptyServerState();
  }

  configureFit(_round: number, _serverState: ServerState, nodes: StrategyNode[], training: TrainingConfig): Map<string, FitInstructions> {
    return uniformFitInstructions(nodes, training, 0);
  }

  aggregateFit(global: WeightSet, serverState: ServerState, _context: RoundContext, persisted?: PersistedFit): FitAggregation {
    if (!persisted) return new EveryUpdateFit((g, u) => this.reduce(g, u), global, serverState);
    const { state, kept } = persisted;
    const count = parseCount(state);
    if (kept.length !== count) throw new AggregationError(`round state counts ${count} updates but ${kept.length} kept updates were given`);
    const fit = new EveryUpdateFit((g, u) => this.reduce(g, u), global, serverState);
    fit.restore(kept);
    return fit;
  }

  aggregateEvaluate(_round: number, results: EvaluateResult[], _failures: FitFailure[], pool: (stats: EvaluationStats[]) => PooledMetrics): PooledMetrics {
    return poolReports(results, pool);
  }

  configureEvaluate(_round: number, _serverState: ServerState, updaters: StrategyNode[]): StrategyNode[] {
    return allUpdaters(updaters);
  }
}

/** Rounds float64 per-tensor results to a float32 weight set named like `global`. */
export function toModel(global: WeightSet, arrays: Float64Array[]): WeightSet {
  return global.map((t, k) => ({ name: t.name, shape: [...t.shape], values: Float32Array.from(arrays[k]) }));
}
