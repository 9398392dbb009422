/**
 * trainLocal's loop on the fused trainer (models/fused-mlp.ts) instead of TensorFlow.js, for
 * the models it covers: a stack of Dense layers with biases, ReLU / tanh / linear hidden
 * layers, and one output unit with the loss's activation (what createModel builds). Same
 * semantics as models/train.ts's trainLocal, so that swapping one for the other changes results
 * only by float rounding: the same seeded shuffle of the rows every epoch, batches as
 * consecutive slices of it (the last one smaller), the mean loss of a batch, a fresh optimizer
 * state per call, the reported loss the mean data loss over the last epoch.
 *
 * The default (issue 13: at these sizes TensorFlow.js's per-op overhead, not arithmetic, is what a
 * step costs); FEDMARK_TRAINER=tfjs forces TensorFlow.js. `fusedTrainerWanted` reads it.
 */
// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import type { TrainingConfig } from '../protocols/training-config.ts';
import type { EncodedData } from './encode.ts';
import type { OutputLoss } from './losses.ts';
import { FusedMlp, type FusedActivation, type FusedLayout } from './fused-mlp.ts';
import { runFusedTraining } from './fused-mlp-loop.ts';
import { globalsFlat, readParams, writeParams } from './fused-mlp-weights.ts';
import type { TrainOptions, TrainResult } from './train.ts';

export { TRAINERS, fusedTrainerWanted } from './trainer-choice.ts';

/** The model's layout if the fused trainer can train it with this loss, else null. */
export function fusedLayoutOf(model: tf.LayersModel, loss: OutputLoss): FusedLayout | null {
  return denseLayoutOf(model, loss.output);
}

/**
 * The layout of a stack of Dense layers with biases, ReLU / tanh / linear hidden layers and one
 * output unit whose activation is `output` (any of sigmoid / linear when undefined), else null.
 */
export function denseLayoutOf(model: tf.LayersModel, output?: 'sigmoid' | 'linear'): FusedLayout | null {
  const widths: number[] = [];
  const hidden: FusedActivation[] = [];
  const layers = model.layers;
  if (layers.length === 0) return null;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const config = layer.getConfig();
    if (layer.getClassName() !== 'Dense' || config.useBias !== true || layer.weights.length !== 2) return null;
    const [inWidth, outWidth] = layer.weights[0].shape as number[];
    if (i === 0) widths.push(inWidth);
    widths.push(outWidth);
    const activation = config.activation;
    if (i === layers.length - 1) {
      const wanted = output ?? (activation === 'sigmoid' ? 'sigmoid' : 'linear');
      if (activation !== wanted || outWidth !== 1) return null;
    } else if (activation === 'relu' || activation === 'tanh' || activation === 'linear') {
      hidden.push(activation);
    } else {
      return null;
    }
  }
  return { widths, hidden };
}

/**
 * trainLocal on the fused trainer, or null when the model is not one it covers (the caller
 * then trains with TensorFlow.js). The caller has checked the data against the model.
 */
export async function trainLocalFused(model: tf.LayersModel, data: EncodedData, config: TrainingConfig, loss: OutputLoss, options: TrainOptions = {}): Promise<TrainResult | null> {
  const layout = fusedLayoutOf(model, loss);
  if (layout === null) return null;
  const batchSize = Math.max(1, Math.min(config.batchSize, data.n));
  const net = new FusedMlp(layout, batchSize);
  readParams(model, net);
  const global = options.proximal ? () => globalsFlat(model, net, options.proximal!.global) : undefined;
  const result = await runFusedTraining(net, data, config, loss, options, global, tf.backend().epsilon());
  writeParams(net, model);
  return result;
}
