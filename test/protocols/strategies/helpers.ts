import { GaussianNoise } from '../../../protocols/privacy/gaussian-noise.ts';
import type { FitOutcome, ServerState, Strategy } from '../../../protocols/strategies/strategy.ts';
import type { WeightSet } from '../../../protocols/tensors.ts';
import { TrainingConfig } from '../../../protocols/training-config.ts';

/** A one-tensor model. */
export const model = (values: number[], name = 'w'): WeightSet => [{ name, shape: [values.length], values: Float32Array.from(values) }];
/** A two-tensor model ('w' and 'b'). */
export const model2 = (w: number[], b: number[]): WeightSet => [
  { name: 'w', shape: [w.length], values: Float32Array.from(w) },
  { name: 'b', shape: [b.length], values: Float32Array.from(b) },
];
export const flat = (ws: WeightSet | undefined): number[] => (ws ?? []).flatMap((t) => Array.from(t.values));
export const training = TrainingConfig.parse({});
export const ctx = (participants: number, round = 1) => ({ round, participants });

/** One full round: begin, accept every update with its count, finish. */
export function runRound(strategy: Strategy, global: WeightSet, updates: { w: WeightSet; n?: number }[], serverState?: ServerState, participants = updates.length, round = 1): FitOutcome {
  const fit = strategy.aggregateFit(global, serverState ?? strategy.initialServerState(global), ctx(Math.max(1, participants), round));
  for (const u of updates) fit.accept(u.w, u.n ?? 1);
  return fit.finish([]);
}

/**
 * Deterministic "Gaussian" noise for tests: the i-th draw is std x script[i mod length]
 * (script defaults to a fixed pseudo-random sequence from a seed).
 */
export class ScriptedNoise extends GaussianNoise {
  private i = 0;
  constructor(private readonly script: number[] = seeded(1, 4096)) {
    super();
  }
  override next(std: number): number {
    const z = this.script[this.i % this.script.length];
    this.i++;
    return z * std;
  }
}

/** Reproducible values in (-2, 2) from a seed (mulberry32). */
export function seeded(seed: number, n: number): number[] {
  let a = seed >>> 0;
  return Array.from({ length: n }, () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 4 - 2;
  });
}
