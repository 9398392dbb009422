import type { TensorSpec, WeightSet } from './tensors.ts';

/**
 * A strategy configures a round and aggregates its results, as Flower's `Strategy` does. Updates
 * are folded in one at a time as they arrive (memory O(model), not O(nodes x model)), and the
 * partial state serializes to bytes so that a coordinator restart mid-round loses nothing.
 * Privacy mechanisms wrap a strategy rather than being woven into one.
 */
export interface Strategy {
  readonly name: string;
  /**
   * Starts aggregating a round whose nodes trained from `global`; called when the round opens,
   * before any update. A privacy wrapper draws its noise here, so every `state()` is noised.
   */
  begin(global: WeightSet, context: RoundContext): RoundAggregation;
  /** Resumes a round from the bytes `RoundAggregation.state()` returned. */
  resume(global: WeightSet, state: Uint8Array, context: RoundContext): RoundAggregation;
}

/** What a strategy may know about a round before any update arrives (all of it public). */
export interface RoundContext {
  round: number;
  /** Nodes selected for the round, fixed at its start. */
  participants: number;
  /** Clip norm in force for the round (privacy wrappers with adaptive clipping carry it across rounds). */
  clipNorm?: number;
}

/** What a finished round reports beside the new model, for the round record and the audit. */
export interface RoundOutcome {
  weights: WeightSet | undefined;
  /** Mechanism details (clip norm used, noise std, fraction clipped, next clip norm...). */
  details: Record<string, number | string | boolean>;
}

export interface AcceptedUpdate {
  /**
   * L2 norm of the update relative to the global model as it entered the aggregate: after
   * clipping under a privacy wrapper (so <= the clip norm), for logs and audit (never the values).
   */
  deltaNorm: number;
  /** Whether a privacy wrapper scaled the update down to its clip norm. */
  clipped?: boolean;
}

export interface RoundAggregation {
  readonly specs: TensorSpec[];
  readonly count: number;
  /** Folds in one node's model; throws when its tensors do not match the global model's. */
  accept(update: WeightSet, numExamples: number): AcceptedUpdate;
  state(): Uint8Array;
  /** The next global model (undefined when nothing was accepted: "keep the global model"). */
  finish(): RoundOutcome;
}
