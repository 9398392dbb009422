import type { WeightSet } from '../../protocols/tensors.ts';

/**
 * The simulated nodes' deterministic pseudo-updates, and the FedAvg they must aggregate to.
 *
 * Node i in round r sends u = g + a(i, r) P + b(i, r) Q, with g the global model it received,
 * P and Q two fixed patterns over the flattened parameters (|P|, |Q| <= 1) and a, b of the order
 * of 1e-3 (so the delta's L2 norm stays well under the study's default bound of 20 at 1M
 * parameters: no clipping). Counts differ a lot between nodes, so an unweighted mean, a dropped
 * update or a wrong count is far outside the tolerance. The expected FedAvg is accumulated from
 * the exact float32 values sent: sum_i n_i u_i / sum_i n_i (McMahan et al. 2017, "Communication-
 * Efficient Learning of Deep Networks from Decentralized Data", Algorithm 1).
 */

export interface Patterns {
  p: Float32Array;
  q: Float32Array;
}

export function makePatterns(parameters: number): Patterns {
  const p = new Float32Array(parameters);
  const q = new Float32Array(parameters);
  for (let j = 0; j < parameters; j++) {
    p[j] = Math.sin(j * 0.37 + 1);
    q[j] = Math.cos(j * 1.13);
  }
  return { p, q };
}

/** The coefficients of node i in round r: deterministic, several distinct values. */
export function coefficients(node: number, round: number): { a: number; b: number } {
  return { a: 1e-3 * (((node * 3 + round) % 7) - 3) / 3, b: 1e-3 * (((node * 5 + 2 * round) % 11) - 5) / 5 };
}

/** The training-row count node i claims (its FedAvg weight): spread over a factor of ~10. */
export function examplesOf(node: number): number {
  return 100 + 97 * ((node * 7) % 10);
}

/** u = g + a P + b Q, tensor by tensor, in float32 (what the node sends). */
export function pseudoUpdate(global: WeightSet, patterns: Patterns, node: number, round: number): WeightSet {
  const { a, b } = coefficients(node, round);
  let offset = 0;
  return global.map((t) => {
    const values = new Float32Array(t.values.length);
    const g = t.values;
    // A plain loop over contiguous typed arrays: 1M parameters x 100 nodes a round.
    for (let j = 0; j < values.length; j++) values[j] = g[j] + a * patterns.p[offset + j] + b * patterns.q[offset + j];
    offset += values.length;
    return { name: t.name, shape: [...t.shape], values };
  });
}

/** The expected FedAvg of one round: a float64 running sum of n_i u_i over the updates sent. */
export class ExpectedMean {
  private readonly sum: Float64Array;
  weight = 0;
  updates = 0;

  constructor(parameters: number) {
    this.sum = new Float64Array(parameters);
  }

  add(update: WeightSet, numExamples: number) {
    let offset = 0;
    for (const t of update) {
      const v = t.values;
      for (let j = 0; j < v.length; j++) this.sum[offset + j] += numExamples * v[j];
      offset += v.length;
    }
    this.weight += numExamples;
    this.updates++;
  }

  /**
   * How far a published model is from sum / weight: the largest absolute error, the largest error
   * in float32 units in the last place of the expected value, and how many values are off by more
   * than 4 such units plus 1e-9 (the model is published in float32, so an exact FedAvg is within
   * about 1 unit; a dropped update, a wrong weight or an unweighted mean is off by thousands).
   */
  compare(model: WeightSet): { maxAbsError: number; maxUlpError: number; violations: number } {
    let offset = 0;
    let maxAbsError = 0;
    let maxUlpError = 0;
    let violations = 0;
    for (const t of model) {
      const v = t.values;
      for (let j = 0; j < v.length; j++) {
        const expected = this.sum[offset + j] / this.weight;
        const error = Math.abs(v[j] - expected);
        const ulp = Math.abs(expected) * 2 ** -23;
        if (error > maxAbsError) maxAbsError = error;
        if (Math.abs(expected) > 1e-6 && error / ulp > maxUlpError) maxUlpError = error / ulp;
        if (!(error <= 4 * ulp + 1e-9)) violations++;
      }
      offset += v.length;
    }
    return { maxAbsError, maxUlpError, violations };
  }
}
