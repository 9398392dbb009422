import { z } from 'zod';
import type { TensorSpec } from './tensors.ts';
import { mulberry32 } from './random.ts';

/**
 * The model architecture a study trains: a stack of dense layers ending in one output unit.
 * The output activation is the task's (protocols/model-kinds/kind.ts): sigmoid for binary
 * classification; identity for regression (mse, huber, log1p fit the transformed, standardized
 * target; tweedie's network outputs log mu). `logreg` and `linear` are the same single dense
 * layer (the names say which task it is usually meant for); `mlp` adds hidden layers (ReLU, or tanh).
 */
export const ModelSpec = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('logreg') }),
  z.object({ kind: z.literal('linear') }),
  z.object({
    kind: z.literal('mlp'),
    hidden: z.array(z.number().int().positive().max(4096)).min(1).max(8).default([32, 16]),
    /**
     * The hidden layers' activation, ReLU when absent (absent rather than defaulted, so existing
     * studies' configurations stay byte for byte the same). `tanh` (Papernot et al. 2021, tempered
     * sigmoids) trains better under DP-SGD: see models/activations.ts.
     */
    activation: z.enum(['relu', 'tanh']).optional(),
  }),
]);
export type ModelSpec = z.infer<typeof ModelSpec>;

/**
 * Tensor names and shapes of a model, in a fixed order. The coordinator (which never loads
 * TensorFlow) and the nodes (which do) agree on weights through this list alone.
 */
export function modelTensorSpecs(model: ModelSpec, inputWidth: number): TensorSpec[] {
  const widths = model.kind === 'mlp' ? [inputWidth, ...model.hidden, 1] : [inputWidth, 1];
  const specs: TensorSpec[] = [];
  for (let layer = 0; layer < widths.length - 1; layer++) {
    specs.push({ name: `dense_${layer}/kernel`, shape: [widths[layer], widths[layer + 1]] });
    specs.push({ name: `dense_${layer}/bias`, shape: [widths[layer + 1]] });
  }
  return specs;
}

/**
 * Deterministic initial weights: Glorot-uniform kernels (Glorot & Bengio 2010), zero biases.
 * Seeded so that a study's round-0 model is reproducible from its configuration alone.
 */
export function initialWeights(specs: TensorSpec[], seed: number) {
  const next = mulberry32(seed);
  return specs.map((spec) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    if (spec.shape.length === 2) {
      const limit = Math.sqrt(6 / (spec.shape[0] + spec.shape[1]));
      for (let i = 0; i < size; i++) values[i] = (next() * 2 - 1) * limit;
    }
    return { name: spec.name, shape: [...spec.shape], values };
  });
}

/** The output unit's activation for a task: sigmoid (binary) or identity (regression). */
export function outputActivation(task: { kind: string }): 'sigmoid' | 'linear' {
  return task.kind === 'binary' ? 'sigmoid' : 'linear';
}
