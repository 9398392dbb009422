import { z } from 'zod';
import { AggregationError, decodeAccumulatorState, encodeAccumulatorState, WeightedMeanAccumulator } from '../aggregation/fedavg.ts';
import { clipToNorm, describeSpecMismatch, l2Norm, specsOf, subtract, TensorError, type TensorSpec, type WeightSet } from '../tensors.ts';
import type { TrainingConfig } from '../training-config.ts';
import {
  isMeanDeltaStrategy,
  type AcceptedUpdate,
  type EvaluateResult,
  type FitAggregation,
  type FitFailure,
  type FitInstructions,
  type FitOutcome,
  type MeanDeltaStrategy,
  type PersistedFit,
  type RoundContext,
  type ServerState,
  type Strategy,
  type StrategyNode,
} from '../strategies/strategy.ts';
import { GaussianNoise } from './gaussian-noise.ts';
import type { EvaluationStats, PooledMetrics } from '../model-kinds/kind.ts';

/**
 * Client-level (central) differential privacy at the coordinator, as a wrapper around any
 * mean-delta strategy (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad): each node's update (its model minus the global model) is clipped to L2 norm C, the
 * clipped updates are summed with equal weight, Gaussian noise N(0, (z C)^2) is added to the sum,
 * and the sum is divided by the number of nodes selected for the round, fixed before any update
 * arrives. Adding or removing one node changes the sum by at most C, so this is the Gaussian
 * mechanism with noise multiplier z (McMahan, Ramage, Talwar, Zhang 2018, "Learning
 * Differentially Private Recurrent Language Models", DP-FedAvg with fixed denominator).
 *
 * The noised mean delta is then handed to the inner strategy's applyMeanDelta, so the server
 * optimizer (momentum, Adam moments...) only ever sees the DP release: whatever it computes from
 * it is post-processing and costs no privacy (DP-FedAdam etc. as in Reddi et al. 2021 / Andrew
 * et al. 2021). Strategies that need every update (median, trimmed mean, Krum) cannot sit under
 * this wrapper; the constructor refuses them.
 *
 * Equal weights are on purpose: weighting by each node's example count would let one node's
 * influence exceed C.
 *
 * Adaptive clipping follows Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private
 * Learning with Adaptive Clipping": each round sums b_i - 1/2 over the nodes (b_i = 1 when the
 * update is at or under the clip norm; the shift makes the sum's sensitivity 1/2), adds
 * N(0, sigma_b^2), and moves C geometrically toward the target quantile:
 * C <- C * exp(-eta (b - gamma)). The count is a second Gaussian query on the same nodes. The
 * update noise uses z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2), which by their Theorem 1 makes the
 * pair one Gaussian mechanism of multiplier z, but only if the count query has sensitivity 1/2,
 * i.e. only if the number of contributors k is secret. fedmark publishes k (the round's
 * `mechanism.nodes`, the audit log's updates), and sum(b_i - 1/2) + k/2 = sum(b_i): whoever knows
 * k holds the unshifted count, of sensitivity 1. The ledger therefore charges
 * accountedNoiseMultiplier(): (z_delta^-2 + sigma_b^-2)^(-1/2), the same theorem with sensitivity 1
 * (at z = 2.85, sigma_b = 2, 20 rounds of q = 1: 1.794, epsilon 13.16 by PLD at delta 1e-5, where
 * charging z printed 7.44). The noise actually drawn is unchanged.
 */
export const ClippingConfig = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('fixed'), norm: z.number().positive().finite() }),
  z.object({
    kind: z.literal('adaptive'),
    initialNorm: z.number().positive().finite(),
    targetQuantile: z.number().min(0).max(1).default(0.5),
    learningRate: z.number().positive().max(10).default(0.2),
    /** Std of the noise on the count of unclipped updates; the paper suggests expected nodes / 20. */
    countNoiseStd: z.number().positive().finite(),
  }),
]);
export type ClippingConfig = z.infer<typeof ClippingConfig>;

export const ClientLevelDpConfig = z.object({
  /** z: the noise multiplier the accountant uses (noise std / sensitivity). */
  noiseMultiplier: z.number().nonnegative().finite(),
  clipping: ClippingConfig,
});
export type ClientLevelDpConfig = z.infer<typeof ClientLevelDpConfig>;

export class PrivacyConfigError extends Error {
  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PrivacyConfigError';
  }
}

/** Noise multiplier actually applied to the update sum (smaller than z under adaptive clipping). */
export function updateNoiseMultiplier(config: ClientLevelDpConfig): number {
  const zTotal = config.noiseMultiplier;
  if (config.clipping.kind === 'fixed' || zTotal === 0) return zTotal;
  const countTerm = 1 / (2 * config.clipping.countNoiseStd) ** 2;
  const inv = zTotal ** -2 - countTerm;
  if (inv <= 0) {
    throw new PrivacyConfigError(
      `adaptive clipping: noise multiplier ${zTotal} is too large for count noise std ${config.clipping.countNoiseStd}; need noiseMultiplier < 2 * countNoiseStd = ${2 * config.clipping.countNoiseStd}`,
    );
  }
  return 1 / Math.sqrt(inv);
}

/**
 * The noise multiplier the accountant must charge for one round: the update query (noise
 * z_delta C, sensitivity C) and the unclipped-count query (noise sigma_b, sensitivity 1 because the
 * contributor count is published, see the class comment) compose, as Gaussian mechanisms do, into
 * one of multiplier (z_delta^-2 + sigma_b^-2)^(-1/2) (Andrew et al. 2021, Theorem 1, with
 * sensitivity 1 for the count instead of 1/2). Fixed clipping releases no count: z itself.
 */
export function accountedNoiseMultiplier(config: ClientLevelDpConfig): number {
  if (config.clipping.kind === 'fixed' || config.noiseMultiplier === 0) return config.noiseMultiplier;
  const zDelta = updateNoiseMultiplier(config);
  return 1 / Math.sqrt(zDelta ** -2 + config.clipping.countNoiseStd ** -2);
}

export function initialClipNorm(config: ClientLevelDpConfig): number {
  return config.clipping.kind === 'fixed' ? config.clipping.norm : config.clipping.initialNorm;
}


/** Server-state scalar holding the clip norm of the next round (adaptive clipping moves it). */
export const DP_CLIP_NORM = 'dp.clipNorm';
/** The wrapper's server-state keys start with this; everything else belongs to the inner strategy. */
const DP_PREFIX = 'dp.';

/** The inner strategy's part of the server state (the wrapper's "dp." keys removed). */
function innerState(state: ServerState): ServerState {
  const scalars: Record<string, number> = {};
  for (const [k, v] of Object.entries(state.scalars)) if (!k.startsWith(DP_PREFIX)) scalars[k] = v;
  const tensors: ServerState['tensors'] = {};
  for (const [k, v] of Object.entries(state.tensors)) if (!k.startsWith(DP_PREFIX)) tensors[k] = v;
  return { scalars, tensors };
}

function withClipNorm(inner: ServerState, clipNorm: number): ServerState {
  for (const k of [...Object.keys(inner.scalars), ...Object.keys(inner.tensors)]) {
    if (k.startsWith(DP_PREFIX)) throw new PrivacyConfigError(`the inner strategy's server state uses the key "${k}", reserved for the DP wrapper`);
  }
  return { scalars: { ...inner.scalars, [DP_CLIP_NORM]: clipNorm }, tensors: { ...inner.tensors } };
}

/**
 * Where the noise lives. Both Gaussian draws (on the update sum and, with adaptive clipping, on
 * the unclipped count) are folded into the round's running state when the round BEGINS, before
 * any update arrives, so every persisted or returned state is already noised: after the first
 * arrival the stored sum is N(0, (z_delta C)^2) + one clipped delta, never the bare delta.
 * Aggregation then only divides by the fixed denominator. The distribution of the published
 * model is the same as adding the noise at the end (the noise is independent of the updates and
 * C is fixed when the round opens).
 *
 * What this does not hide: two snapshots of the same round's state differ by exactly the
 * updates that arrived between them (the noise is drawn once per round). Whoever can read the
 * database at two moments of one round (the operator) can subtract them. That is the trust the
 * operator already holds (it receives every decrypted update); auditors and analysts never get
 * the accumulator through the API.
 *
 * The running sum is a WeightedMeanAccumulator (float64) holding the noise vector as one term of
 * weight 1 and each clipped delta with weight 1; at finish its raw sum is divided by the fixed
 * denominator m = context.participants and the result, the noised mean delta, goes to the inner
 * strategy's applyMeanDelta. The clip norm C of a round is the server state's "dp.clipNorm"
 * (the config's initial norm before round 1); the round's header records the C its noise was
 * drawn with, and the outcome's server state carries the next C.
 */
export class ClientLevelDpStrategy implements Strategy {
  readonly name: string;
  /** Consumes deltas, but is not itself a MeanDeltaStrategy: it cannot be wrapped twice. */
  readonly input = 'mean-delta' as const;
  private readonly zDelta: number;

  constructor(
    private readonly inner: MeanDeltaStrategy,
    private readonly config: ClientLevelDpConfig,
    private readonly noise: GaussianNoise = new GaussianNoise(),
  ) {
    if (!isMeanDeltaStrategy(inner)) {
      throw new PrivacyConfigError(`central DP cannot wrap ${(inner as Strategy)?.name ?? String(inner)}: the DP wrapper clips, sums and noises the mean delta, and that strategy needs every update`);
    }
    ClientLevelDpConfig.parse(config);
    this.zDelta = updateNoiseMultiplier(config);
    this.name = `client-level-dp(${inner.name}, z=${config.noiseMultiplier}, ${config.clipping.kind} clipping)`;
  }

  initialServerState(global: WeightSet): ServerState {
    return withClipNorm(this.inner.initialServerState(global), initialClipNorm(this.config));
  }

  /** The clip norm a round opened on `serverState` uses. */
  clipNormOf(serverState: ServerState): number {
    const c = serverState.scalars[DP_CLIP_NORM];
    if (c === undefined) return initialClipNorm(this.config);
    if (typeof c !== 'number' || !Number.isFinite(c) || c <= 0) throw new PrivacyConfigError(`server state ${DP_CLIP_NORM} must be a finite number > 0, got ${String(c)}`);
    return c;
  }

  configureFit(round: number, serverState: ServerState, nodes: StrategyNode[], training: TrainingConfig): Map<string, FitInstructions> {
    return this.inner.configureFit(round, innerState(serverState), nodes, training);
  }

  configureEvaluate(round: number, serverState: ServerState, updaters: StrategyNode[]): StrategyNode[] {
    return this.inner.configureEvaluate(round, innerState(serverState), updaters);
  }

  aggregateFit(global: WeightSet, serverState: ServerState, context: RoundContext, persisted?: PersistedFit): FitAggregation {
    return persisted ? this.resume(global, serverState, persisted.state, context) : this.begin(global, serverState, context);
  }

  aggregateEvaluate(round: number, results: EvaluateResult[], failures: FitFailure[], pool: (stats: EvaluationStats[]) => PooledMetrics): PooledMetrics {
    return this.inner.aggregateEvaluate(round, results, failures, pool);
  }

  private begin(global: WeightSet, serverState: ServerState, context: RoundContext): FitAggregation {
    const clipNorm = this.clipNormOf(serverState);
    const acc = new WeightedMeanAccumulator(specsOf(global));
    const state: DpRoundState = { v: 2, clipNorm, accepted: 0, noisyAtOrBelowClip: 0 };
    this.addNoise(global, acc, state);
    return new DpFit(this, global, serverState, context, acc, state);
  }

  private resume(global: WeightSet, serverState: ServerState, state: Uint8Array, context: RoundContext): FitAggregation {
    const { header, inner: innerBytes } = decodeClientLevelDpState(state);
    const acc = WeightedMeanAccumulator.fromState(decodeAccumulatorState(innerBytes));
    if (header.v === 2) return new DpFit(this, global, serverState, context, acc, header);
    // A state written before the noise moved to begin(): it holds un-noised sums. Noise it now,
    // so the aggregate still gets exactly one draw of each noise.
    const upgraded: DpRoundState = { v: 2, clipNorm: header.clipNorm, accepted: acc.count, noisyAtOrBelowClip: header.atOrBelowClip };
    this.addNoise(global, acc, upgraded);
    return new DpFit(this, global, serverState, context, acc, upgraded);
  }

  /** The two Gaussian draws of the round (see the class comment), into the state it starts from. */
  private addNoise(global: WeightSet, acc: WeightedMeanAccumulator, state: DpRoundState) {
    const std = this.zDelta * state.clipNorm;
    const noise: WeightSet = global.map((g) => {
      const values = new Float64Array(g.values.length);
      this.noise.addTo(values, std);
      return { name: g.name, shape: [...g.shape], values };
    });
    acc.add(noise, 1);
    if (this.config.clipping.kind === 'adaptive') state.noisyAtOrBelowClip += this.noise.next(this.config.clipping.countNoiseStd);
  }

  /** @internal */
  finishRound(global: WeightSet, serverState: ServerState, context: RoundContext, acc: WeightedMeanAccumulator, state: DpRoundState, failures: FitFailure[]): FitOutcome {
    const k = state.accepted;
    const m = context.participants;
    const C = state.clipNorm;
    const details: Record<string, number | string | boolean> = { mechanism: 'client-level-gaussian', clipNorm: C, noiseMultiplier: this.config.noiseMultiplier, updateNoiseStd: this.zDelta * C, nodes: k, denominator: m };
    let nextClip = C;
    if (this.config.clipping.kind === 'adaptive') {
      const { targetQuantile, learningRate } = this.config.clipping;
      // Andrew et al. 2021, Algorithm 1: each node contributes b_i - 1/2 (sensitivity 1/2, which
      // is what the (2 sigma_b)^-2 term of the noise split assumes, as in TF Privacy's quantile
      // estimator); the count noise N(0, sigma_b^2) is already in noisyAtOrBelowClip.
      const noisyFraction = (state.noisyAtOrBelowClip - k / 2) / m + 0.5;
      nextClip = C * Math.exp(-learningRate * (noisyFraction - targetQuantile));
      details.noisyUnclippedFraction = noisyFraction;
    }
    details.nextClipNorm = nextClip;
    const innerBefore = innerState(serverState);
    // No update: no new model and the inner strategy's state is untouched. The clip norm still
    // moves, as before the strategies existed: the noised count was released with the round.
    if (k === 0) return { weights: undefined, serverState: withClipNorm(innerBefore, nextClip), details };
    // The noised sum (noise + k clipped deltas, all of weight 1) over the fixed denominator m.
    const sums = new Map(acc.sum().map((t) => [t.name, t] as const));
    const meanDelta: WeightSet = global.map((g) => {
      const s = sums.get(g.name)!;
      const v = s.values;
      for (let i = 0; i < v.length; i++) v[i] /= m;
      return s;
    });
    const step = this.inner.applyMeanDelta(global, meanDelta, innerBefore, context.round);
    return { weights: step.weights, serverState: withClipNorm(step.serverState, nextClip), details: { ...step.details, ...details } };
  }
}

/** Persisted per-round state of the wrapper (all of it already noised or public). */
interface DpRoundState {
  v: 2;
  clipNorm: number;
  /** Updates folded in so far. */
  accepted: number;
  /** Count of updates at or under the clip norm, plus the count noise (adaptive clipping). */
  noisyAtOrBelowClip: number;
}
interface LegacyDpRoundState {
  v?: undefined;
  clipNorm: number;
  atOrBelowClip: number;
}

/**
 * Splits a persisted wrapper state into its JSON header and the running sum's FMA1 bytes
 * ([uint32 LE header length][header JSON][FMA1 accumulator state]). Exported for audits and tests.
 */
export function decodeClientLevelDpState(state: Uint8Array): { header: DpRoundState | LegacyDpRoundState; inner: Uint8Array } {
  if (!(state instanceof Uint8Array) || state.length < 4) throw new PrivacyConfigError(`client-level DP state is truncated: ${state?.length} bytes`);
  const headerLength = new DataView(state.buffer, state.byteOffset, 4).getUint32(0, true);
  if (4 + headerLength > state.length) throw new PrivacyConfigError(`client-level DP state is truncated: header of ${headerLength} bytes in ${state.length}`);
  let header: DpRoundState | LegacyDpRoundState;
  try {
    header = JSON.parse(new TextDecoder().decode(state.subarray(4, 4 + headerLength))) as DpRoundState | LegacyDpRoundState;
  } catch (err) {
    throw new PrivacyConfigError(`client-level DP state header is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (header === null || typeof header !== 'object' || typeof header.clipNorm !== 'number' || !(header.clipNorm > 0) || !Number.isFinite(header.clipNorm)) {
    throw new PrivacyConfigError('client-level DP state header has no valid clipNorm');
  }
  if (header.v === 2 ? !Number.isSafeInteger(header.accepted) || header.accepted < 0 || !Number.isFinite(header.noisyAtOrBelowClip) : !Number.isFinite((header as LegacyDpRoundState).atOrBelowClip)) {
    throw new PrivacyConfigError('client-level DP state header is malformed');
  }
  return { header, inner: state.subarray(4 + headerLength) };
}

class DpFit implements FitAggregation {
  constructor(
    private readonly strategy: ClientLevelDpStrategy,
    private readonly global: WeightSet,
    private readonly serverState: ServerState,
    private readonly context: RoundContext,
    private readonly acc: WeightedMeanAccumulator,
    private readonly round: DpRoundState,
  ) {
    const mismatch = describeSpecMismatch(specsOf(global), acc.specs);
    if (mismatch !== null) throw new AggregationError(`round state does not match the global model: ${mismatch}`);
  }

  get specs(): TensorSpec[] {
    return specsOf(this.global);
  }

  get count() {
    return this.round.accepted;
  }

  accept(update: WeightSet, _numExamples: number): AcceptedUpdate {
    let clipped: WeightSet;
    let norm: number;
    try {
      ({ clipped, norm } = clipToNorm(subtract(update, this.global), this.round.clipNorm));
    } catch (err) {
      if (err instanceof TensorError) throw new AggregationError(`update: ${err.message}`, { cause: err });
      throw err;
    }
    // The running sum holds the clipped deltas themselves (not global + delta), so rounding is
    // relative to the delta's scale, which is bounded by C.
    // Equal weight for every node: see the class comment.
    this.acc.add(clipped, 1);
    if (norm <= this.round.clipNorm) this.round.noisyAtOrBelowClip++;
    this.round.accepted++;
    // The norm of what entered the sum (<= C), never the raw norm: the audit records the clipped
    // norm, and the raw norm would be a per-node release outside the mechanism.
    return { deltaNorm: l2Norm(clipped), clipped: norm > this.round.clipNorm };
  }

  state(): Uint8Array {
    const header = new TextEncoder().encode(JSON.stringify(this.round));
    const inner = encodeAccumulatorState(this.acc.toState());
    const out = new Uint8Array(4 + header.length + inner.length);
    new DataView(out.buffer).setUint32(0, header.length, true);
    out.set(header, 4);
    out.set(inner, 4 + header.length);
    return out;
  }

  finish(failures: FitFailure[]): FitOutcome {
    return this.strategy.finishRound(this.global, this.serverState, this.context, this.acc, this.round, failures);
  }
}
