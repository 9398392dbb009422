/**
 * Moving weights between a TensorFlow.js dense stack and a FusedMlp's flat parameter array
 * (protocol order: dense_0/kernel, dense_0/bias, dense_1/kernel, ...).
 */
import * as tf from './tf.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { FusedMlp } from './fused-mlp.ts';

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

/** A WeightSet (by name, protocol names) flattened into net's layout; checks names and shapes. */
export function flattenWeights(net: FusedMlp, weights: WeightSet, what: string): Float32Array {
  const byName = new Map(weights.map((t) => [t.name, t] as const));
  const flat = new Float32Array(net.params.length);
  for (let l = 0; l < net.layers; l++) {
    const shapes: Array<[string, number[], number]> = [
      [`dense_${l}/kernel`, [net.widths[l], net.widths[l + 1]], net.kernelOffsets[l]],
      [`dense_${l}/bias`, [net.widths[l + 1]], net.biasOffsets[l]],
    ];
    for (const [name, shape, offset] of shapes) {
      const t = byName.get(name);
      if (t === undefined) throw new RangeError(`${what}: the global model has no tensor "${name}"`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new RangeError(`${what}: tensor "${name}" is [${t.shape.join(', ')}] in the global model, [${shape.join(', ')}] in the local one`);
      }
      flat.set(t.values, offset);
    }
  }
  return flat;
}

/** FedProx's global model in net's layout (the messages of train.ts's globalTensors). */
export function globalsFlat(model: tf.LayersModel, net: FusedMlp, global: WeightSet): Float32Array {
  checkShapes(model, net);
  return flattenWeights(net, global, 'proximal term');
}
