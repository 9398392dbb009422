import { z } from 'zod';
import type { TensorSpec, WeightSet } from '../tensors.ts';
import type { TrainingConfig } from '../training-config.ts';
import type { EvaluationStats, PooledMetrics } from '../model-kinds/kind.ts';

/**
 * Core v2 strategy contract, shaped after Flower's `Strategy` (flwr.server.strategy):
 *   configure_fit      -> configureFit      (per-node fit instructions)
 *   aggregate_fit      -> aggregateFit: a FitAggregation that folds updates as they arrive
 *                         (accept), ends with finish(failures), and resumes from what it persisted
 *   configure_evaluate -> configureEvaluate
 *   aggregate_evaluate -> aggregateEvaluate
 * plus a serializable ServerState carried across rounds and persisted with each round, so a
 * coordinator restart resumes server momentum, Adam moments or an adaptive clip norm exactly.
 *
 * Pure: no database, no TensorFlow. The coordinator's round state machine is generic over this.
 */

/** What a node is told to do in one round's local training (sent in its fit task). */
export const FitInstructions = z.object({
  localEpochs: z.number().int().positive().max(1000),
  learningRate: z.number().positive().max(10),
  batchSize: z.number().int().positive().max(65536),
  /** FedProx's proximal coefficient mu (0: plain local training). */
  proximalMu: z.number().nonnegative().finite().default(0),
});
export type FitInstructions = z.infer<typeof FitInstructions>;

/**
 * State a strategy carries from one round to the next: scalars (step count, clip norm...) and
 * named weight sets (momentum, first and second moments...). Serialized with
 * encodeServerState / decodeServerState (server-state.ts).
 */
export interface ServerState {
  scalars: Record<string, number>;
  tensors: Record<string, WeightSet>;
}

/** The public facts about a node a strategy may use to configure it. */
export interface StrategyNode {
  id: string;
  region: string;
}

/** What a strategy may know about a round before any update arrives (all of it public). */
export interface RoundContext {
  round: number;
  /** Nodes selected for the round (the DP wrapper's fixed denominator: q x ready nodes, >= 1). */
  participants: number;
}

/** A participant that sent no update (Flower's `failures`): it could not train, or was late. */
export interface FitFailure {
  nodeId: string;
  reason: string;
}

export interface AcceptedUpdate {
  /**
   * L2 norm of the update relative to the global model as it entered the aggregate: after
   * clipping under a privacy wrapper (so <= the clip norm). For logs and audit, never the values.
   */
  deltaNorm: number;
  /** Whether a privacy wrapper scaled the update down to its clip norm. */
  clipped?: boolean;
  /**
   * For strategies that need every update (input 'every-update'): the bytes to keep for this
   * update, stored once by the coordinator and handed back to aggregateFit (resuming) in arrival order.
   */
  kept?: Uint8Array;
}

export interface FitOutcome {
  /** The next global model; undefined = "no new weights": keep the global model. */
  weights: WeightSet | undefined;
  /** The server state after this round (carried to the next one). */
  serverState: ServerState;
  /** Mechanism details for the round record and the audit (clip norm, noise std, selected...). */
  details: Record<string, number | string | boolean>;
}

/** One round's aggregation in progress. */
export interface FitAggregation {
  readonly specs: TensorSpec[];
  /** Updates accepted so far. */
  readonly count: number;
  /** Folds in one node's model; throws (AggregationError) when its tensors do not match. */
  accept(update: WeightSet, numExamples: number): AcceptedUpdate;
  /** Bytes to persist after each accept (a running sum; small for every-update strategies). */
  state(): Uint8Array;
  /** Ends the round: failures are an explicit input, as in Flower's aggregate_fit. */
  finish(failures: FitFailure[]): FitOutcome;
}

export interface EvaluateResult {
  nodeId: string;
  numExamples: number;
  /** The model kind's sufficient statistics (protocols/model-kinds/kind.ts). */
  stats: EvaluationStats;
}

export interface Strategy {
  /** The study config's name (fedavg, fedprox, ... or a wrapper's description). */
  readonly name: string;
  /**
   * 'mean-delta': the strategy consumes the (weighted) mean of the nodes' deltas, so it can sit
   * under the central-DP wrapper. 'every-update': it needs each update (median, Krum...).
   */
  readonly input: 'mean-delta' | 'every-update';
  /** The server state before round 1. */
  initialServerState(global: WeightSet): ServerState;
  /** Per-node instructions for a round's local training, from the study's training config. */
  configureFit(round: number, serverState: ServerState, nodes: StrategyNode[], training: TrainingConfig): Map<string, FitInstructions>;
  /**
   * Flower's aggregate_fit, folded as updates arrive: the round's aggregation, which takes one
   * update at a time (`accept`) and ends with `finish(failures)`. Called when the round opens
   * (a privacy wrapper draws its noise then), and with `persisted` (what state() returned after
   * the last accept and, for every-update strategies, the kept updates in arrival order) to
   * resume the round exactly after a restart.
   */
  aggregateFit(global: WeightSet, serverState: ServerState, context: RoundContext, persisted?: PersistedFit): FitAggregation;
  /** Which of the round's updaters evaluate the new model (default: all of them). */
  configureEvaluate(round: number, serverState: ServerState, updaters: StrategyNode[]): StrategyNode[];
  /**
   * Flower's aggregate_evaluate: the round's metrics from the nodes' evaluation reports, with the
   * nodes that did not report as an explicit input. The default pools the model kind's
   * sufficient statistics (exact); a strategy may weigh or select reports differently.
   */
  aggregateEvaluate(round: number, results: EvaluateResult[], failures: FitFailure[], pool: (stats: EvaluationStats[]) => PooledMetrics): PooledMetrics;
}

/** A round's aggregation as persisted: its state() bytes and the kept updates in arrival order. */
export interface PersistedFit {
  state: Uint8Array;
  kept: Uint8Array[];
}

/**
 * A strategy whose server step is a function of the mean delta alone:
 * (global, mean delta, state) -> (new global, new state). FedAvg, FedProx, FedAvgM, FedAdam,
 * FedYogi and FedAdagrad are; the central-DP wrapper hands them the noised mean delta.
 */
export interface MeanDeltaStrategy extends Strategy {
  readonly input: 'mean-delta';
  applyMeanDelta(global: WeightSet, meanDelta: WeightSet, serverState: ServerState, round: number): { weights: WeightSet; serverState: ServerState; details: Record<string, number | string | boolean> };
}

export function isMeanDeltaStrategy(s: Strategy): s is MeanDeltaStrategy {
  return s.input === 'mean-delta' && typeof (s as MeanDeltaStrategy).applyMeanDelta === 'function';
}
