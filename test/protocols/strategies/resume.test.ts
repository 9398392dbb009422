import { describe, expect, it } from 'vitest';
import { ClientLevelDpStrategy } from '../../../protocols/privacy/client-level-dp.ts';
import { StrategyConfig } from '../../../protocols/strategies/config.ts';
import { FedAdam } from '../../../protocols/strategies/fedadam.ts';
import { FedAvgM } from '../../../protocols/strategies/fedavgm.ts';
import { strategyFromConfig } from '../../../protocols/strategies/index.ts';
import { decodeServerState, encodeServerState } from '../../../protocols/strategies/server-state.ts';
import type { FitOutcome, ServerState, Strategy } from '../../../protocols/strategies/strategy.ts';
import { encodeWeights } from '../../../protocols/weights-codec.ts';
import { model2, ScriptedNoise, seeded } from './helpers.ts';

const global = model2([0.5, -0.25, 1, 2], [0.125]);
const updates = Array.from({ length: 7 }, (_, j) => {
  const r = seeded(100 + j, 5);
  const w = model2([0.5 + r[0] / 10, -0.25 + r[1] / 10, 1 + r[2] / 10, 2 + r[3] / 10], [0.125 + r[4] / 10]);
  // Every other update arrives as float64 values that float32 cannot hold: kept frames are float32,
  // so what a strategy holds in memory must be the float32 values too, or a resume would differ.
  if (j % 2 === 1) for (const t of w) t.values = Float64Array.from(t.values, (x, i) => x + (i + 1) * 1e-12);
  return { w, n: 10 + 7 * j };
});

type Make = () => Strategy;
const strategies: [string, Make][] = [
  ...StrategyConfig.options.map((o) => {
    const config = StrategyConfig.parse({ name: o.shape.name.value, ...(o.shape.name.value === 'krum' ? { byzantine: 2, select: 2 } : o.shape.name.value === 'trimmed-mean' ? { trimFraction: 0.2 } : {}) });
    return [config.name, () => strategyFromConfig(config)] as [string, Make];
  }),
  ['dp(fedavgm, fixed)', () => new ClientLevelDpStrategy(new FedAvgM({ serverLearningRate: 1, momentum: 0.9 }), { noiseMultiplier: 1.1, clipping: { kind: 'fixed', norm: 0.05 } }, new ScriptedNoise())],
  ['dp(fedadam, adaptive)', () => new ClientLevelDpStrategy(new FedAdam({ serverLearningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 }), { noiseMultiplier: 1, clipping: { kind: 'adaptive', initialNorm: 0.1, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 3 } }, new ScriptedNoise())],
];

const bytesOf = (o: FitOutcome) => ({ weights: o.weights && encodeWeights(o.weights, 'float32'), state: encodeServerState(o.serverState), details: o.details });

describe('aggregateFit resumed from state() + kept equals an uninterrupted run, bit for bit', () => {
  for (const [name, make] of strategies) {
    it(name, () => {
      // Two rounds, so strategies with server state (momentum, moments, clip norm) carry a non-trivial one into round 2.
      let straightState: ServerState | undefined;
      let resumedState: ServerState | undefined;
      for (const round of [1, 2]) {
        const ctx = { round, participants: 7 };
        const straight = make();
        const s0 = straightState ?? straight.initialServerState(global);
        const fitA = straight.aggregateFit(global, s0, ctx);
        for (const u of updates) fitA.accept(u.w, u.n);
        const a = fitA.finish([{ nodeId: 'x', reason: 'late' }]);

        // Interrupted after every prefix length: persist, "restart" (fresh strategy object, state through bytes), continue.
        for (let cut = 0; cut <= updates.length; cut++) {
          const first = make();
          const r0 = resumedState ?? first.initialServerState(global);
          const fitB = first.aggregateFit(global, r0, ctx);
          const kept: Uint8Array[] = [];
          for (const u of updates.slice(0, cut)) {
            const k = fitB.accept(u.w, u.n).kept;
            if (k) kept.push(k.slice());
          }
          const persisted = fitB.state().slice();
          const restarted = make();
          const fitC = restarted.aggregateFit(global, decodeServerState(encodeServerState(r0)), ctx, { state: persisted, kept });
          expect(fitC.count).toBe(cut);
          for (const u of updates.slice(cut)) fitC.accept(u.w, u.n);
          const b = fitC.finish([{ nodeId: 'x', reason: 'late' }]);
          expect(bytesOf(b)).toEqual(bytesOf(a));
          if (cut === updates.length) resumedState = decodeServerState(encodeServerState(b.serverState));
        }
        expect(a.weights).toBeDefined();
        straightState = a.serverState;
      }
    });
  }
});
