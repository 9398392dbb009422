/**
 * predictScores on the fused network's forward pass (models/fused-mlp.ts) for the dense stacks
 * the fused trainer covers: the node's evaluation of every round's global model, with no
 * TensorFlow.js kernel dispatch per layer (issue 13). The model's weights are read once per call;
 * rows go through in blocks of at most `blockRows`, each block in cache-sized chunks.
 */
import type * as tf from './tf.ts';
import { FusedMlp } from './fused-mlp.ts';
import { readParams } from './fused-mlp-weights.ts';
import { denseLayoutOf } from './fused-mlp-train.ts';
import { forwardScores } from './dense-ops.ts';

/**
 * The model's outputs for `n` rows of `x` (checked by the caller): sigmoid(z) for a sigmoid
 * output unit, z for a linear one; null when the fused network does not cover the model.
 */
export function predictScoresFused(model: tf.LayersModel, x: Float32Array, n: number, width: number, blockRows: number): Float32Array | null {
  const layout = denseLayoutOf(model);
  if (layout === null || layout.widths[0] !== width) return null;
  const sigmoid = model.layers[model.layers.length - 1].getConfig().activation === 'sigmoid';
  if (n === 0) return new Float32Array(0);
  const net = new FusedMlp(layout, Math.min(n, blockRows));
  readParams(model, net);
  return forwardScores(net, x, n, width, sigmoid);
}
