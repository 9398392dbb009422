/**
 * TensorFlow.js's side of the models, reached without importing it: model-factory.ts, train.ts
 * and dp-sgd.ts (which import TensorFlow.js statically) register their functions here when they
 * are evaluated, and loadTensorFlow() imports them on first need. The node's default path
 * (dense-model.ts, dense-ops.ts) only ever calls loadTensorFlow() for DP-SGD, FEDMARK_TRAINER=tfjs
 * or a TensorFlow.js model, so importing the node does not load TensorFlow.js (issue 13).
 */
import type * as Factory from './model-factory.ts';
import type * as Train from './train.ts';
import type * as DpSgd from './dp-sgd.ts';
import { initDeferredBackend } from './backend.ts';

export interface TfjsSide {
  createModel: typeof Factory.createModel;
  getWeights: typeof Factory.getWeights;
  setWeights: typeof Factory.setWeights;
  modelSpecsOf: typeof Factory.modelSpecsOf;
  trainLocal: typeof Train.trainLocal;
  predictScores: typeof Train.predictScores;
  trainDpSgd: typeof DpSgd.trainDpSgd;
}

const side: Partial<TfjsSide> = {};

/** Called by the modules of TensorFlow.js's side as they are evaluated. */
export function provideTfjs(part: Partial<TfjsSide>): void {
  Object.assign(side, part);
}

/** One function of TensorFlow.js's side; throws when its module is not loaded (await loadTensorFlow()). */
export function tfjsSide<K extends keyof TfjsSide>(name: K): TfjsSide[K] {
  const f = side[name];
  if (f === undefined) throw new Error(`TensorFlow.js is not loaded in this process (${name}): await loadTensorFlow() first (models/tfjs-side.ts)`);
  return f;
}

/**
 * Loads TensorFlow.js and its side of the models, and starts the backend initBackend deferred
 * (models/backend.ts) if it did. Resolves with the side's functions.
 */
export async function loadTensorFlow(): Promise<TfjsSide> {
  await Promise.all([import('./model-factory.ts'), import('./train.ts'), import('./dp-sgd.ts')]);
  await initDeferredBackend();
  return side as TfjsSide;
}
