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

/**
 * The model's outputs for `n` rows of `x` (checked by the caller): sigmoid(z) for a sigmoid
 * output unit, z for a linear one; null when the fused network does not cover the model.
 */
export function predictScoresFused(model: tf.LayersModel, x: Float32Array, n: number, width: number, blockRows: number): Float32Array | null {
  const layout = denseLayoutOf(model);
  if (layout === null || layout.widths[0] !== width) return null;
  const sigmoid = model.layers[model.layers.length - 1].getConfig().activation === 'sigmoid';
  const scores = new Float32Array(n);
  if (n === 0) return scores;
  const net = new FusedMlp(layout, Math.min(n, blockRows));
  readParams(model, net);
  for (let start = 0; start < n; start += net.maxRows) {
    const rows = Math.min(net.maxRows, n - start);
    const z = net.forward(x.subarray(start * width, (start + rows) * width), rows);
    if (!sigmoid) scores.set(z, start);
    else for (let i = 0; i < rows; i++) scores[start + i] = 1 / (1 + Math.exp(-z[i]));
  }
  return scores;
}
