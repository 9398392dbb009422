import { z } from 'zod';
import type { AcceptedUpdate, RoundAggregation, RoundContext, RoundOutcome, Strategy } from '../strategy.ts';
import { clipToNorm, subtract, type TensorSpec, type WeightSet } from '../tensors.ts';
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
    return new DpRound(this, global, context, this.inner.begin(global, context), { clipNorm: context.clipNorm ?? initialClipNorm(this.config), atOrBelowClip: 0 });
  }

  resume(global: WeightSet, state: Uint8Array, context: RoundContext): RoundAggregation {
    const headerLength = new DataView(state.buffer, state.byteOffset, 4).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(state.subarray(4, 4 + headerLength))) as DpRoundState;
    return new DpRound(this, global, context, this.inner.resume(global, state.subarray(4 + headerLength), context), header);
  }

  /** @internal */
  finishRound(global: WeightSet, context: RoundContext, inner: RoundAggregation, state: DpRoundState): RoundOutcome {
    const k = inner.count;
    const m = context.participants;
    const C = state.clipNorm;
    const details: Record<string, number | string | boolean> = { mechanism: 'client-level-gaussian', clipNorm: C, noiseMultiplier: this.config.noiseMultiplier, updateNoiseStd: this.zDelta * C, nodes: k, denominator: m };
    const meanOfClipped = inner.finish().weights;
    let nextClip = C;
    if (this.config.clipping.kind === 'adaptive') {
      const { targetQuantile, learningRate, countNoiseStd } = this.config.clipping;
      // Each node contributes b_i - 1/2 (sensitivity 1/2, which is what the (2 sigma_b)^-2 term of
      // the noise split assumes, as in TF Privacy's quantile estimator); the 1/2 is added back.
      const noisyFraction = (state.atOrBelowClip - k / 2 + this.noise.next(countNoiseStd)) / m + 0.5;
      nextClip = C * Math.exp(-learningRate * (noisyFraction - targetQuantile));
      details.noisyUnclippedFraction = noisyFraction;
    }
    details.nextClipNorm = nextClip;
    if (!meanOfClipped || k === 0) return { weights: undefined, details };
    // The inner strategy averaged clipped deltas with equal weights: their sum is k times that mean.
    const next: WeightSet = global.map((g, t) => {
      const mean = meanOfClipped[t].values;
      const out = new Float64Array(g.values.length);
      for (let i = 0; i < out.length; i++) out[i] = k * mean[i];
      this.noise.addTo(out, this.zDelta * C);
      const values = new Float32Array(out.length);
      for (let i = 0; i < out.length; i++) values[i] = g.values[i] + out[i] / m;
      return { name: g.name, shape: [...g.shape], values };
    });
    return { weights: next, details };
  }
}

interface DpRoundState {
  clipNorm: number;
  atOrBelowClip: number;
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
    return this.inner.count;
  }

  accept(update: WeightSet, _numExamples: number): AcceptedUpdate {
    const delta = subtract(update, this.global);
    const { clipped, norm } = clipToNorm(delta, this.round.clipNorm);
    if (norm <= this.round.clipNorm) this.round.atOrBelowClip++;
    // The inner strategy averages the clipped deltas themselves (not global + delta), so float32
    // rounding in its output is relative to the delta's scale, which is bounded by C.
    // Equal weight for every node: see the class comment.
    this.inner.accept(clipped, 1);
    return { deltaNorm: norm, clipped: norm > this.round.clipNorm };
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
