import { afterEach, describe, expect, it, vi } from 'vitest';
import { createDenseModel } from '../../models/dense-model.ts';
import { predictModel } from '../../models/dense-ops.ts';
import { FusedMlp } from '../../models/fused-mlp.ts';
import { forwardScores } from '../../models/dense-ops.ts';

/**
 * predictModel keeps one FusedMlp per dense model (models/dense-ops.ts predictionNet): a node
 * evaluates the same rows every round, and a new network each time (a WebAssembly memory and
 * instance) was most of its evaluation CPU. The scores must be the very numbers a new network gives.
 */
const WIDTH = 12;
const rowsOf = (n: number, salt: number) => Float32Array.from({ length: n * WIDTH }, (_, i) => Math.sin(i * 0.37 + salt));

function freshScores(model: ReturnType<typeof createDenseModel>, x: Float32Array, n: number): Float32Array {
  const net = new FusedMlp(model.layout, Math.max(1, n));
  net.params.set(model.params);
  return forwardScores(net, x, n, WIDTH, model.output === 'sigmoid');
}

afterEach(() => vi.restoreAllMocks());

describe('predictModel reuses its network', () => {
  it('gives bit-identical scores to a new network across changed weights and row counts', () => {
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 7);
    for (const [round, n] of [[0, 71], [1, 71], [2, 30], [3, 71], [4, 1]] as const) {
      // A new global model each round: the kept network must not keep the old weights.
      model.params.forEach((v, i) => (model.params[i] = v + Math.cos(i + round) * 0.01));
      const x = rowsOf(n, round);
      const scores = predictModel(model, x, n, WIDTH);
      expect(Array.from(scores)).toEqual(Array.from(freshScores(model, x, n)));
    }
  });

  it('allocates no WebAssembly memory when the same model predicts the same number of rows again', () => {
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 3);
    const x = rowsOf(71, 0);
    predictModel(model, x, 71, WIDTH);
    const memories = vi.spyOn(WebAssembly, 'Memory');
    const first = predictModel(model, x, 71, WIDTH);
    model.params[0] += 0.5;
    const second = predictModel(model, x, 71, WIDTH);
    expect(memories).not.toHaveBeenCalled();
    memories.mockRestore();
    expect(Array.from(second)).not.toEqual(Array.from(first)); // the new weights were used
    expect(Array.from(second)).toEqual(Array.from(freshScores(model, x, 71)));
  });
});
