/**
 * Moving weights between a TensorFlow.js dense stack and a FusedMlp's flat parameter array
 * (protocol order: dense_0/kernel, dense_0/bias, dense_1/kernel, ...).
 */
// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { FusedMlp } from './fused-mlp.ts';
import { flattenWeights } from './fused-mlp-loop.ts';

export { flattenWeights };

function checkShapes(model: tf.LayersModel, net: FusedMlp): void {
  if (model.layers.length !== net.layers) throw new RangeError(`fused trainer: the model has ${model.layers.length} layers, the fused network ${net.layers}`);
  model.layers.forEach((layer, l) => {
    const [kernel, bias] = layer.weights;
    const [k, n] = kernel.shape as number[];
    if (k !== net.widths[l] || n !== net.widths[l + 1] || bias.shape[0] !== n) {
      throw new RangeError(`fused trainer: layer ${l} is [${k}, ${n}], the fused network's [${net.widths[l]}, ${net.widths[l + 1]}]`);
    }
  });
}

/** Copies the model's weights into net.params. */
export function readParams(model: tf.LayersModel, net: FusedMlp): void {
  checkShapes(model, net);
  model.layers.forEach((layer, l) => {
    const [kernel, bias] = layer.weights;
    net.params.set(kernel.read().dataSync() as Float32Array, net.kernelOffsets[l]);
    net.params.set(bias.read().dataSync() as Float32Array, net.biasOffsets[l]);
  });
}

/**
 * Writes net.params into the model's variables (copies: the cpu backend would keep the array
 * it is given). No finiteness check, as TensorFlow.js's own training would not make one.
 */
export function writeParams(net: FusedMlp, model: tf.LayersModel): void {
  checkShapes(model, net);
  tf.tidy(() => {
    model.layers.forEach((layer, l) => {
      const [k, n] = [net.widths[l], net.widths[l + 1]];
      const kernel = net.params.slice(net.kernelOffsets[l], net.kernelOffsets[l] + k * n);
      const bias = net.params.slice(net.biasOffsets[l], net.biasOffsets[l] + n);
      layer.setWeights([tf.tensor2d(kernel, [k, n], 'float32'), tf.tensor1d(bias, 'float32')]);
    });
  });
}

/** FedProx's global model in net's layout (the messages of train.ts's globalTensors). */
export function globalsFlat(model: tf.LayersModel, net: FusedMlp, global: WeightSet): Float32Array {
  checkShapes(model, net);
  return flattenWeights(net, global, 'proximal term');
}
