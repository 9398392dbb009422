import type { StudyConfig } from '../../protocols/messages.ts';
import { binaryKind } from './binary.ts';
import type { NodeModelKind } from './kind.ts';
import type * as tf from '../tf.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { getWeights, setWeights } from '../model-factory.ts';
import { regressionKind } from './regression.ts';

export type { NodeModelKind, TrainArgs, KindTrainResult } from './kind.ts';

/** The node half of the study's model kind (study.task). */
export function nodeKindFor(study: StudyConfig): NodeModelKind {
  return study.task.kind === 'binary' ? binaryKind : regressionKind(study);
}

/** Loads weights through the kind (a kind's own model object, or a tf.LayersModel by default). */
export function loadKindWeights(kind: NodeModelKind, model: tf.LayersModel, weights: WeightSet): void {
  if (kind.setWeights) kind.setWeights(model, weights);
  else setWeights(model, weights);
}

/** The model's weights through the kind, in protocol order. */
export function readKindWeights(kind: NodeModelKind, model: tf.LayersModel): WeightSet {
  return kind.getWeights ? kind.getWeights(model) : getWeights(model);
}
