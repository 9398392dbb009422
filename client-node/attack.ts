import { DEFAULT_HISTOGRAM_BINS } from '../protocols/metrics.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { EvaluatedFacts } from './release.ts';
import type { Trained } from './train.ts';

/**
 * A node turned attacker, FOR DEMOS AND TESTS ONLY (`fedmark node --attack NAME`, the demo's
 * `--malicious N --attack NAME`, `npm run bench -- --only attacks`). Each attack rewrites what an
 * honest node computed, after honest training and before the release step, so that the hook in
 * node-runner.ts is the only difference between an attacker and an honest node: it signs, seals
 * and sends through the same code, and sees the coordinator's answers as an honest node would.
 *
 * The attacks are the ones issue 11 reproduced against live processes:
 *   scale            global + SCALE_FACTOR x (trained - global), with an honest count: an
 *                    "oversized update" that moves a FedAvg model by ~100x its share
 *   sign-flip        global - (trained - global): the honest norm, the direction reversed (what a
 *                    norm bound cannot see; only the robust strategies can)
 *   count-inflation  numExamples INFLATED_COUNT with the output layer negated: under plain
 *                    FedAvg the count is the weight, so the global model becomes this one
 *   fake-eval        an evaluation report the node never computed: a perfectly separating
 *                    histogram over FAKE_EVALUATION_ROWS rows, so the federated validation AUC
 *                    reads ~1 whatever the model does
 */
export const ATTACK_NAMES = ['scale', 'sign-flip', 'count-inflation', 'fake-eval'] as const;
export type AttackName = (typeof ATTACK_NAMES)[number];

/** The oversized update of the issue: -1000 x the honest delta. */
export const SCALE_FACTOR = -1000;
/**
 * The count claimed by count-inflation: 2e9 is what the issue measured, below 2^31 so that it
 * passes today's schema and integer columns (the protocol's numExamples has no upper bound in
 * its schema; past 2^31 the old coordinator answered 500, which would hide the attack's effect).
 */
export const INFLATED_COUNT = 2_000_000_000;
/** Rows the fake evaluation claims, half positive and half negative: far beyond any node's validation split. */
export const FAKE_EVALUATION_ROWS = 2_000_000;

/** An update as the attacker would send it; fake-eval sends honest updates. */
export function attackUpdate(attack: AttackName, trained: Trained, global: WeightSet): Trained {
  switch (attack) {
    case 'scale':
      return { ...trained, weights: alongDelta(trained.weights, global, SCALE_FACTOR) };
    case 'sign-flip':
      return { ...trained, weights: alongDelta(trained.weights, global, -1) };
    case 'count-inflation':
      return { ...trained, weights: negateOutputLayer(trained.weights), facts: { ...trained.facts, numExamples: INFLATED_COUNT } };
    case 'fake-eval':
      return trained;
  }
}

/** An evaluation as the attacker would report it; only fake-eval lies here. */
export function attackEvaluation(attack: AttackName, honest: EvaluatedFacts): EvaluatedFacts {
  if (attack !== 'fake-eval') return honest;
  if (honest.stats.kind !== 'binary') {
    // A perfect regression report: zero error over many rows (the same lie, in the kind's terms).
    const n = FAKE_EVALUATION_ROWS;
    return { numExamples: n, loss: 0, stats: { kind: 'regression', n, sumY: 0, sumY2: n, sumError: 0, sse: 0, sae: 0, baselineSae: n } };
  }
  // Every negative in the lowest score bin, every positive in the highest: AUC 1 on this
  // report, and so many rows that the honest nodes' reports barely move the pooled figure.
  // Consistent with itself (the coordinator checks bins and that the histogram covers
  // numExamples): only a bound on the node's validation rows can catch it.
  const bins = DEFAULT_HISTOGRAM_BINS;
  const half = FAKE_EVALUATION_ROWS / 2;
  const positives = new Array<number>(bins).fill(0);
  const negatives = new Array<number>(bins).fill(0);
  positives[bins - 1] = half;
  negatives[0] = half;
  return { numExamples: FAKE_EVALUATION_ROWS, loss: 0, stats: { kind: 'binary', histogram: { bins, positives, negatives }, brierSum: 0, logLossSum: 0 } };
}

/** global + factor x (trained - global), tensor by tensor (matched by name). */
export function alongDelta(trained: WeightSet, global: WeightSet, factor: number): WeightSet {
  const byName = new Map(global.map((t) => [t.name, t]));
  return trained.map((t) => {
    const g = byName.get(t.name);
    if (!g || g.values.length !== t.values.length) throw new Error(`attack: the global model has no tensor ${t.name} of ${t.values.length} values`);
    const values = new Float32Array(t.values.length);
    for (let i = 0; i < values.length; i++) values[i] = g.values[i] + factor * (t.values[i] - g.values[i]);
    return { name: t.name, shape: [...t.shape], values };
  });
}

/**
 * The output layer (the highest-numbered dense layer, kernel and bias) negated: the model's
 * logit changes sign, so its ranking of customers is reversed (test AUC becomes 1 - AUC).
 */
export function negateOutputLayer(weights: WeightSet): WeightSet {
  const layerOf = (name: string) => Number(/^dense_(\d+)\//.exec(name)?.[1] ?? -1);
  const output = Math.max(...weights.map((t) => layerOf(t.name)));
  if (output < 0) throw new Error('attack: no dense_N/ tensor to negate');
  return weights.map((t) => (layerOf(t.name) === output ? { name: t.name, shape: [...t.shape], values: Float32Array.from(t.values, (v) => -v) } : t));
}
