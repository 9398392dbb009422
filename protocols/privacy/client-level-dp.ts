import { z } from 'zod';
import type { AcceptedUpdate, RoundAggregation, RoundContext, RoundOutcome, Strategy } from '../strategy.ts';
import { clipToNorm, l2Norm, subtract, type TensorSpec, type WeightSet } from '../tensors.ts';
import { GaussianNoise } from './gaussian-noise.ts';

/**
 * Client-level (central) differential privacy at the coordinator, as a wrapper around any
 * strategy: each node's update (its model minus the global model) is clipped to L2 norm C, the
 * clipped updates are summed with equal weight, Gaussian noise N(0, (z C)^2) is added to the sum,
 * and the sum is divided by the number of nodes selected for the round, fixed before any update
 * arrives. Adding or removing one node changes the sum by at most C, so this is the Gaussian
 * mechanism with noise multiplier z (McMahan, Ramage, Talwar, Zhang 2018, "Learning
 * Differentially Private Recurrent Language Models", DP-FedAvg with fixed denominator).
 *
 * Equal weights are on purpose: weighting by each node's example count would let one node's
 * influence exceed C.
 *
 * Adaptive clipping follows Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private
 * Learning with Adaptive Clipping": each round sums b_i - 1/2 over the nodes (b_i = 1 when the
 * update is at or under the clip norm; the shift makes the sum's sensitivity 1/2), adds
 * N(0, sigma_b^2), and moves C geometrically toward the target quantile:
 * C <- C * exp(-eta (b - gamma)). The count is a second Gaussian query on the same nodes; the pair
 * composes to a single Gaussian mechanism of multiplier z when the update noise uses
 * z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (their Theorem 1), so the accountant sees z alone.
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

export class PrivacyConfigError extends Error {}

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

export function initialClipNorm(config: ClientLevelDpConfig): number {
  return config.clipping.kind === 'fixed' ? config.clipping.norm : config.clipping.initialNorm;
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
 * The inner strategy must aggregate by a weighted mean of what it is given (FedAvg does): the
 * wrapper feeds it the noise vector as one term of weight 1 and each clipped delta with weight 1,
 * and recovers the noised sum as (accepted + 1) x mean.
 */
export class ClientLevelDpStrategy implements Strategy {
  readonly name: string;
  private readonly zDelta: number;

  constructor(
    private readonly inner: Strategy,
    private readonly config: ClientLevelDpConfig,
    private readonly noise: GaussianNoise = new GaussianNoise(),
  ) {
    ClientLevelDpConfig.parse(config);
    this.zDelta = updateNoiseMultiplier(config);
    this.name = `client-level-dp(${inner.name}, z=${config.noiseMultiplier}, ${config.clipping.kind} clipping)`;
  }

  begin(global: WeightSet, context: RoundContext): RoundAggregation {
    const clipNorm = context.clipNorm ?? initialClipNorm(this.config);
    const inner = this.inner.begin(global, context);
    const state: DpRoundState = { v: 2, clipNorm, accepted: 0, noisyAtOrBelowClip: 0 };
    this.addNoise(global, inner, state);
    return new DpRound(this, global, context, inner, state);
  }

  resume(global: WeightSet, state: Uint8Array, context: RoundContext): RoundAggregation {
    const { header, inner: innerBytes } = decodeClientLevelDpState(state);
    const inner = this.inner.resume(global, innerBytes, context);
    if (header.v === 2) return new DpRound(this, global, context, inner, header);
    // A state written before the noise moved to begin(): it holds un-noised sums. Noise it now,
    // so the aggregate still gets exactly one draw of each noise.
    const upgraded: DpRoundState = { v: 2, clipNorm: header.clipNorm, accepted: inner.count, noisyAtOrBelowClip: header.atOrBelowClip };
    this.addNoise(global, inner, upgraded);
    return new DpRound(this, global, context, inner, upgraded);
  }

  /** The two Gaussian draws of the round (see the class comment), into the state it starts from. */
  private addNoise(global: WeightSet, inner: RoundAggregation, state: DpRoundState) {
    const std = this.zDelta * state.clipNorm;
    const noise: WeightSet = global.map((g) => {
      const values = new Float64Array(g.values.length);
      this.noise.addTo(values, std);
      return { name: g.name, shape: [...g.shape], values };
    });
    inner.accept(noise, 1);
    if (this.config.clipping.kind === 'adaptive') state.noisyAtOrBelowClip += this.noise.next(this.config.clipping.countNoiseStd);
  }

  /** @internal */
  finishRound(global: WeightSet, context: RoundContext, inner: RoundAggregation, state: DpRoundState): RoundOutcome {
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
    if (k === 0) return { weights: undefined, details };
    // The inner strategy holds the weighted mean of k clipped deltas and the noise vector, all of
    // weight 1: the noised sum is (k + 1) times that mean. Divide by the fixed denominator m.
    const meanOfTerms = inner.finish().weights!;
    const next: WeightSet = global.map((g, t) => {
      const mean = meanOfTerms[t].values;
      const values = new Float32Array(g.values.length);
      for (let i = 0; i < values.length; i++) values[i] = g.values[i] + ((k + 1) * mean[i]) / m;
      return { name: g.name, shape: [...g.shape], values };
    });
    return { weights: next, details };
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
 * Splits a persisted wrapper state into its JSON header and the inner strategy's bytes
 * ([uint32 LE header length][header JSON][inner state]). Exported for audits and tests.
 */
export function decodeClientLevelDpState(state: Uint8Array): { header: DpRoundState | LegacyDpRoundState; inner: Uint8Array } {
  if (state.length < 4) throw new PrivacyConfigError(`client-level DP state is truncated: ${state.length} bytes`);
  const headerLength = new DataView(state.buffer, state.byteOffset, 4).getUint32(0, true);
  if (4 + headerLength > state.length) throw new PrivacyConfigError(`client-level DP state is truncated: header of ${headerLength} bytes in ${state.length}`);
  const header = JSON.parse(new TextDecoder().decode(state.subarray(4, 4 + headerLength))) as DpRoundState | LegacyDpRoundState;
  return { header, inner: state.subarray(4 + headerLength) };
}

class DpRound implements RoundAggregation {
  constructor(
    private readonly strategy: ClientLevelDpStrategy,
    private readonly global: WeightSet,
    private readonly context: RoundContext,
    private readonly inner: RoundAggregation,
    private readonly round: DpRoundState,
  ) {}

  get specs(): TensorSpec[] {
    return this.inner.specs;
  }

  get count() {
    return this.round.accepted;
  }

  accept(update: WeightSet, _numExamples: number): AcceptedUpdate {
    const delta = subtract(update, this.global);
    const { clipped, norm } = clipToNorm(delta, this.round.clipNorm);
    // The inner strategy averages the clipped deltas themselves (not global + delta), so float32
    // rounding in its output is relative to the delta's scale, which is bounded by C.
    // Equal weight for every node: see the class comment.
    this.inner.accept(clipped, 1);
    if (norm <= this.round.clipNorm) this.round.noisyAtOrBelowClip++;
    this.round.accepted++;
    // The norm of what entered the sum (<= C), never the raw norm: the audit records the clipped
    // norm, and the raw norm would be a per-node release outside the mechanism.
    return { deltaNorm: l2Norm(clipped), clipped: norm > this.round.clipNorm };
  }

  state(): Uint8Array {
    const header = new TextEncoder().encode(JSON.stringify(this.round));
    const inner = this.inner.state();
    const out = new Uint8Array(4 + header.length + inner.length);
    new DataView(out.buffer).setUint32(0, header.length, true);
    out.set(header, 4);
    out.set(inner, 4 + header.length);
    return out;
  }

  finish(): RoundOutcome {
    return this.strategy.finishRound(this.global, this.context, this.inner, this.round);
  }
}
