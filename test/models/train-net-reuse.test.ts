import { afterEach, describe, expect, it, vi } from 'vitest';
import { createDenseModel, type DenseModel } from '../../models/dense-model.ts';
import { trainModel } from '../../models/dense-ops.ts';
import type { EncodedData } from '../../models/encode.ts';
import { FusedMlp, type FusedLayout } from '../../models/fused-mlp.ts';
import { bceLoss } from '../../models/losses.ts';
import { TrainingConfig } from '../../protocols/training-config.ts';

/**
 * trainModel keeps one FusedMlp per dense model between trainings (models/dense-ops.ts
 * takeTrainingNet): a node trains the same model every round, and a new network each time (a
 * WebAssembly memory and instance) cost ~0.5 ms of its round. A kept network must train to the
 * very numbers a new one gives: same weights, same losses, round after round, with Adam's moments,
 * FedProx's global term and SGD alike.
 */
const WIDTH = 12;

function dataOf(n: number, salt: number): EncodedData {
  const x = Float32Array.from({ length: n * WIDTH }, (_, i) => Math.sin(i * 0.37 + salt));
  const y = Float32Array.from({ length: n }, (_, i) => (Math.cos(i * 1.3 + salt) > 0 ? 1 : 0));
  return { x, y, n, width: WIDTH } as EncodedData;
}

/** A new model object with `model`'s weights: nothing kept for it, so it trains on a new network. */
function twin(model: DenseModel, hidden: number[]): DenseModel {
  const copy = createDenseModel({ kind: 'mlp', hidden }, WIDTH, 0);
  copy.params.set(model.params);
  return copy;
}

afterEach(() => vi.restoreAllMocks());

describe('trainModel reuses its network', () => {
  // [8, 4]: WebAssembly SIMD kernels; [5, 3]: widths that are not multiples of 4, plain JavaScript over an ArrayBuffer.
  for (const [name, optimizer, mu, hidden] of [['Adam', 'adam', 0, [8, 4]], ['Adam with FedProx', 'adam', 0.1, [8, 4]], ['SGD', 'sgd', 0, [8, 4]], ['Adam, JavaScript kernels', 'adam', 0, [5, 3]], ['SGD with FedProx, JavaScript kernels', 'sgd', 0.1, [5, 3]]] as const) {
    it(`trains to bit-identical weights and losses as a new network, round after round (${name})`, async () => {
      const config = TrainingConfig.parse({ batchSize: 16, learningRate: 0.05, optimizer, localEpochs: 2 });
      const kept = createDenseModel({ kind: 'mlp', hidden: [...hidden] }, WIDTH, 5);
      for (let round = 0; round < 4; round++) {
        // Each round starts from a new global model and other rows, as on a node.
        kept.params.forEach((v, i) => (kept.params[i] = v + Math.cos(i + round) * 0.01));
        const fresh = twin(kept, [...hidden]);
        const global = kept.getWeights();
        const data = dataOf(40 + round * 7, round);
        const options = { loss: bceLoss, seed: 42 + round, ...(mu > 0 ? { proximal: { mu, global } } : {}) };
        const a = await trainModel(kept, data, config, options);
        const b = await trainModel(fresh, data, config, options);
        expect(a).toEqual(b);
        expect(Array.from(kept.params)).toEqual(Array.from(fresh.params));
      }
    });
  }

  it('allocates no WebAssembly memory when the same model trains again with the same batch size', async () => {
    const config = TrainingConfig.parse({ batchSize: 16, learningRate: 0.05 });
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 3);
    await trainModel(model, dataOf(40, 0), config, { loss: bceLoss });
    const memories = vi.spyOn(WebAssembly, 'Memory');
    const before = Array.from(model.params);
    await trainModel(model, dataOf(40, 1), config, { loss: bceLoss });
    expect(memories).not.toHaveBeenCalled();
    expect(Array.from(model.params)).not.toEqual(before); // it did train
    // Another batch size needs another network.
    await trainModel(model, dataOf(40, 2), TrainingConfig.parse({ batchSize: 8, learningRate: 0.05 }), { loss: bceLoss });
    expect(memories).toHaveBeenCalledTimes(1);
  });

  it('keeps nothing of the last training between rounds: the kept network waits as zeros', async () => {
    const config = TrainingConfig.parse({ batchSize: 16, learningRate: 0.05 });
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 4);
    // The memories made, as made (a spy's own record of a constructor call is not the object).
    const Memory = WebAssembly.Memory;
    const made: WebAssembly.Memory[] = [];
    vi.spyOn(WebAssembly, 'Memory').mockImplementation(function (descriptor: WebAssembly.MemoryDescriptor) {
      const memory = new Memory(descriptor);
      made.push(memory);
      return memory;
    } as unknown as typeof WebAssembly.Memory);
    await trainModel(model, dataOf(40, 0), config, { loss: bceLoss });
    expect(made).toHaveLength(1);
    const bytes = new Uint8Array(made[0].buffer);
    expect(bytes.length).toBeGreaterThan(0);
    // Its rows, gradients, moments and weights: all gone once the training has returned.
    expect(bytes.every((b) => b === 0)).toBe(true);
    expect(Array.from(model.params).some((v) => v !== 0)).toBe(true); // the trained weights went to the model
  });

  it('keeps no network from a training that failed', async () => {
    const config = TrainingConfig.parse({ batchSize: 16, learningRate: 0.05 });
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 6);
    await trainModel(model, dataOf(40, 0), config, { loss: bceLoss });
    // Fails inside the training, with the kept network taken (a negative FedProx mu).
    await expect(trainModel(model, dataOf(40, 1), config, { loss: bceLoss, proximal: { mu: -1, global: model.getWeights() } })).rejects.toThrow(/mu must be finite and >= 0/);
    const memories = vi.spyOn(WebAssembly, 'Memory');
    await trainModel(model, dataOf(40, 2), config, { loss: bceLoss });
    expect(memories).toHaveBeenCalledTimes(1); // a new network: the failed training's was not put back
  });

  it('never lends one network to two trainings of the same model at once', async () => {
    const config = TrainingConfig.parse({ batchSize: 16, learningRate: 0.05 });
    const model = createDenseModel({ kind: 'mlp', hidden: [8, 4] }, WIDTH, 9);
    await trainModel(model, dataOf(40, 0), config, { loss: bceLoss });
    const memories = vi.spyOn(WebAssembly, 'Memory');
    // Yielding every 0 ms, the two trainings interleave; the second must get a network of its own.
    await Promise.all([trainModel(model, dataOf(400, 1), config, { loss: bceLoss, yieldEveryMs: 0 }), trainModel(model, dataOf(400, 2), config, { loss: bceLoss, yieldEveryMs: 0 })]);
    expect(memories).toHaveBeenCalledTimes(1);
  });

  for (const simd of [true, false]) {
    it(`reset() leaves every buffer as a new network's, zeros (${simd ? 'WebAssembly memory' : 'plain ArrayBuffer'})`, () => {
      const layout: FusedLayout = { widths: [WIDTH, 8, 4, 1], hidden: ['relu', 'relu'] };
      const used = new FusedMlp(layout, 16, { simd });
      const data = dataOf(16, 3);
      used.params.forEach((_, i) => (used.params[i] = Math.sin(i)));
      used.moment1.fill(0.5);
      used.moment2.fill(0.25);
      used.globalParams.fill(1);
      used.lossAndGradient(data.x, data.y, 16, bceLoss);
      used.forward(data.x, 16);
      used.reset();
      const fresh = new FusedMlp(layout, 16, { simd });
      expect(used.kernels !== null).toBe(simd);
      const bytes = (net: FusedMlp) => Array.from(new Uint8Array(net.params.buffer));
      expect(bytes(used)).toEqual(bytes(fresh));
      expect(bytes(used).every((b) => b === 0)).toBe(true);
      // The last forward pass's outputs, kept beside the memory: zeros too.
      const scores = (net: FusedMlp) => Array.from((net as unknown as { scores: Float32Array }).scores);
      expect(scores(used)).toEqual(scores(fresh));
      expect(Array.from(used.forward(new Float32Array(16 * WIDTH), 16))).toEqual(Array.from(fresh.forward(new Float32Array(16 * WIDTH), 16)));
    });
  }
});
