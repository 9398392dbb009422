import { describe, expect, it } from 'vitest';
import { ClientLevelDpStrategy, DP_CLIP_NORM, PrivacyConfigError, updateNoiseMultiplier } from '../../../protocols/privacy/client-level-dp.ts';
import { FedAdam } from '../../../protocols/strategies/fedadam.ts';
import { Krum } from '../../../protocols/strategies/krum.ts';
import { Median } from '../../../protocols/strategies/median.ts';
import { TrimmedMean } from '../../../protocols/strategies/trimmed-mean.ts';
import type { MeanDeltaStrategy } from '../../../protocols/strategies/strategy.ts';
import type { WeightSet } from '../../../protocols/tensors.ts';
import { flat, model2, ScriptedNoise, training } from './helpers.ts';

const adam = () => new FedAdam({ serverLearningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
const global = model2([0.5, -0.5, 1], [0.25]);
// Deltas: a = [0.3, 0, -0.4 | 0] (norm 0.5, under C = 1), b = [0, 3, 0 | 4] (norm 5, clipped to [0, 0.6, 0 | 0.8]).
const a = model2([0.8, -0.5, 0.6], [0.25]);
const b = model2([0.5, 2.5, 1], [4.25]);
// The same by hand from the float32 values the nodes actually send (0.8 - 0.5 is not exactly 0.3 there).
const da = flat(a).map((x, i) => x - flat(global)[i]);
const db = flat(b).map((x, i) => x - flat(global)[i]);
const nb = Math.hypot(...db);
const clippedSum = da.map((x, i) => x + db[i] / nb);
expect(Math.hypot(...da)).toBeLessThan(1);
expect(clippedSum.map((x) => Number(x.toFixed(6)))).toEqual([0.3, 0.6, -0.4, 0.8]);
const m = 4; // fixed denominator: participants, not arrivals

/** A mean delta as float64 (as the wrapper hands it over), shaped like the model. */
const delta64 = (d: number[]): WeightSet => [
  { name: 'w', shape: [3], values: Float64Array.from(d.slice(0, 3)) },
  { name: 'b', shape: [1], values: Float64Array.from(d.slice(3)) },
];

function expectClose(got: number[], want: number[], tol = 1e-6) {
  expect(got.length).toBe(want.length);
  got.forEach((x, i) => expect(Math.abs(x - want[i])).toBeLessThanOrEqual(tol));
}

function wrappedRound(dp: ClientLevelDpStrategy) {
  const state = dp.initialServerState(global);
  const fit = dp.aggregateFit(global, state, { round: 1, participants: m });
  expect(fit.accept(a, 1000).clipped).toBe(false);
  expect(fit.accept(b, 1).clipped).toBe(true);
  return fit.finish([]);
}

describe('central DP over FedAdam: FedAdam.applyMeanDelta on the noised mean delta', () => {
  it('noise multiplier 0: the mean delta is (clipped a + clipped b) / participants, equal weights', () => {
    const out = wrappedRound(new ClientLevelDpStrategy(adam(), { noiseMultiplier: 0, clipping: { kind: 'fixed', norm: 1 } }));
    const meanDelta = clippedSum.map((x) => x / m);
    const want = adam().applyMeanDelta(global, delta64(meanDelta), adam().initialServerState(global), 1);
    expectClose(flat(out.weights), flat(want.weights));
    expectClose(flat(out.serverState.tensors.m), flat(want.serverState.tensors.m), 1e-12);
    expectClose(flat(out.serverState.tensors.v), flat(want.serverState.tensors.v), 1e-12);
    expect(out.serverState.scalars[DP_CLIP_NORM]).toBe(1);
    expect(out.details).toMatchObject({ mechanism: 'client-level-gaussian', clipNorm: 1, noiseMultiplier: 0, updateNoiseStd: 0, nodes: 2, denominator: m, nextClipNorm: 1, strategy: 'fedadam' });
  });

  it('with noise (a scripted Gaussian stub): the mean delta is (noise + clipped a + clipped b) / participants', () => {
    const script = [0.5, -1, 2, 0.25];
    const z = 0.8;
    const C = 1;
    const out = wrappedRound(new ClientLevelDpStrategy(adam(), { noiseMultiplier: z, clipping: { kind: 'fixed', norm: C } }, new ScriptedNoise(script)));
    // The stub's i-th draw is std x script[i]; std = z C (fixed clipping: z_delta = z).
    const meanDelta = clippedSum.map((x, i) => (x + z * C * script[i]) / m);
    const want = adam().applyMeanDelta(global, delta64(meanDelta), adam().initialServerState(global), 1);
    expectClose(flat(out.weights), flat(want.weights));
    expectClose(flat(out.serverState.tensors.v), flat(want.serverState.tensors.v), 1e-12);
    expect(out.details.updateNoiseStd).toBeCloseTo(z * C, 12);
  });

  it('adaptive clipping: the clip norm lives in the server state and the inner state is carried beside it', () => {
    const config = { noiseMultiplier: 1, clipping: { kind: 'adaptive' as const, initialNorm: 1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 2 } };
    const script = [0.5, -1, 2, 0.25, 0.3];
    const dp = new ClientLevelDpStrategy(adam(), config, new ScriptedNoise(script));
    const out = wrappedRound(dp);
    const zDelta = updateNoiseMultiplier(config);
    // Noise: 4 coordinates, then the count draw 0.3 x sigma_b. One of two updates unclipped.
    const noisyFraction = (1 + 0.3 * 2 - 2 / 2) / m + 0.5;
    const next = Math.exp(-0.2 * (noisyFraction - 0.5));
    expect(out.details.noisyUnclippedFraction).toBeCloseTo(noisyFraction, 12);
    expect(out.serverState.scalars[DP_CLIP_NORM]).toBeCloseTo(next, 12);
    const meanDelta = clippedSum.map((x, i) => (x + zDelta * script[i]) / m);
    expectClose(flat(out.weights), flat(adam().applyMeanDelta(global, delta64(meanDelta), adam().initialServerState(global), 1).weights));
    // Round 2 opens with that clip norm and with the inner FedAdam moments of round 1.
    const fit2 = dp.aggregateFit(out.weights!, out.serverState, { round: 2, participants: m });
    fit2.accept(out.weights!, 1);
    const out2 = fit2.finish([]);
    expect(out2.details.clipNorm).toBeCloseTo(next, 12);
    expect(Object.keys(out2.serverState.tensors).sort()).toEqual(['m', 'v']);
    // No update at all: no model, inner state unchanged; the clip norm still follows the noised count.
    const empty = dp.aggregateFit(global, out.serverState, { round: 3, participants: m }).finish([]);
    expect(empty.weights).toBeUndefined();
    expect(empty.serverState.tensors).toEqual(out.serverState.tensors);
  });

  it('configureFit and configureEvaluate are the inner strategy\'s', () => {
    const dp = new ClientLevelDpStrategy(adam(), { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } });
    const nodes = [{ id: 'a', region: 'eu' }];
    expect(dp.configureFit(1, dp.initialServerState(global), nodes, training).get('a')).toEqual({ localEpochs: 1, learningRate: 0.01, batchSize: 32, proximalMu: 0 });
    expect(dp.configureEvaluate(1, dp.initialServerState(global), nodes)).toEqual(nodes);
  });

  it('refuses to wrap a strategy that needs every update, or itself', () => {
    const config = { noiseMultiplier: 1, clipping: { kind: 'fixed' as const, norm: 1 } };
    for (const inner of [new Median(), new TrimmedMean(0.1), new Krum(1, 1)]) {
      expect(() => new ClientLevelDpStrategy(inner as unknown as MeanDeltaStrategy, config)).toThrow(PrivacyConfigError);
    }
    const once = new ClientLevelDpStrategy(adam(), config);
    expect(() => new ClientLevelDpStrategy(once as unknown as MeanDeltaStrategy, config)).toThrow(PrivacyConfigError);
  });
});
