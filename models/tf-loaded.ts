/**
 * Whether TensorFlow.js is loaded in this process, without loading it: models/tf.ts (the one
 * static import of @tensorflow/tfjs) records itself here when it is evaluated. The node's default
 * path (the fused trainer, models/dense-model.ts) never loads TensorFlow.js (issue 13: importing
 * it cost a node ~0.4 CPU-s at start-up, its wasm backend more); backend.ts and the
 * model-kind dispatch (dense-ops.ts) read this to know whether it is there.
 */
import type * as Tf from './tf.ts';

let loaded: typeof Tf | undefined;

/** Called once, by models/tf.ts. */
export function noteTensorFlow(module: typeof Tf): void {
  loaded = module;
}

export function tensorFlowLoaded(): boolean {
  return loaded !== undefined;
}

/** The loaded TensorFlow.js module; throws when nothing loaded it (await loadTensorFlow() first: tfjs-side.ts). */
export function loadedTensorFlow(): typeof Tf {
  if (loaded === undefined) throw new Error('TensorFlow.js is not loaded in this process (await loadTensorFlow() from models/tfjs-side.ts first)');
  return loaded;
}
