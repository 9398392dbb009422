import { describe, expect, it } from 'vitest';
import { benchScale } from '../../bench/scale-bench.ts';
import { examplesOf, ExpectedMean, makePatterns, pseudoUpdate } from '../../bench/sim/pseudo-update.ts';
import type { WeightSet } from '../../protocols/tensors.ts';

/**
 * The scale benchmark's simulation (bench/scale-bench.ts), tiny: 3 simulated nodes speaking the
 * real protocol (token enrollment, signed requests, sealed updates, verified signed models) to a
 * real `fedmark coordinator` process, 2 rounds of a ~1k-parameter MLP. Every published model must
 * equal the FedAvg of the pseudo-updates the nodes sent. No time is asserted (a benchmark); the
 * timeout is generous because a PGlite coordinator took minutes to start on a saturated machine.
 */
describe('scale simulation', () => {
  it('3 nodes x ~1k parameters x 2 rounds: every published model is the FedAvg of the updates sent', { timeout: 900_000 }, async () => {
    const result = await benchScale({ nodes: 3, parameters: 1000, rounds: 2, pollSeconds: 2, log: () => {} });
    expect(result.parameters).toBeGreaterThan(900);
    expect(result.parameters).toBeLessThan(1100);
    expect(result.rounds.map((r) => r.round)).toEqual([1, 2]);
    for (const round of result.rounds) {
      expect(round.updatesReceived).toBe(3);
      expect(round.aggregation).not.toBeNull();
      expect(round.aggregation!.updates).toBe(3);
      expect(round.aggregation!.violations).toBe(0);
      // Three sealed updates went up, and every node received the new model: in its task (Task.model), this model being small.
      expect(round.uploadedBytes).toBeGreaterThan(3 * result.parameters * 4);
      expect(round.modelsInTasks).toBeGreaterThanOrEqual(3);
      expect(round.modelDownloads).toBe(0);
      expect(round.rssMbAfter).toBeGreaterThan(0);
    }
    expect(result.aggregationExact).toBe(true);
  });

  it('the expected-FedAvg check tells the weighted mean from an unweighted one', () => {
    const parameters = 50;
    const global: WeightSet = [{ name: 'w', shape: [parameters], values: new Float32Array(parameters).map((_, i) => 0.1 * Math.sin(i)) }];
    const patterns = makePatterns(parameters);
    const expected = new ExpectedMean(parameters);
    const updates = [0, 1, 2].map((node) => pseudoUpdate(global, patterns, node, 1));
    updates.forEach((u, node) => expected.add(u, examplesOf(node)));
    const mean = (weights: number[]) => {
      const total = weights.reduce((a, b) => a + b, 0);
      const values = new Float32Array(parameters).map((_, j) => updates.reduce((s, u, k) => s + weights[k] * u[0].values[j], 0) / total);
      return [{ name: 'w', shape: [parameters], values }];
    };
    expect(expected.compare(mean([0, 1, 2].map(examplesOf))).violations).toBe(0);
    expect(expected.compare(mean([1, 1, 1])).violations).toBeGreaterThan(0);
    expect(expected.compare(global).violations).toBeGreaterThan(0);
  });
});
