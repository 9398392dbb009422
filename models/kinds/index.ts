import type { StudyConfig } from '../../protocols/messages.ts';
import { binaryKind } from './binary.ts';
import type { NodeModelKind } from './kind.ts';
import type * as tf from '../tf.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { getWeights, modelSpecsOf, setWeights } from '../model-factory.ts';
import { modelKind } from '../../protocols/model-kinds/kind.ts';
import { specsOf, type TensorSpec } from '../../protocols/tensors.ts';
import { regressionKind } from './regression.ts';
import { forecastKind } from './forecast.ts';
import { recommendKind } from './recommend.ts';

export type { NodeModelKind, TrainArgs, KindTrainResult } from './kind.ts';

/** The node half of the study's model kind (study.task). */
export function nodeKindFor(study: StudyConfig): NodeModelKind {
  if (study.task.kind === 'recommend') return recommendKind(study);
  if (study.task.kind === 'forecast') return forecastKind(study);
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

/**
 * The tensors a global model of the study holds: the kind's shared ones (every tensor of a dense
 * kind; recommendation's item factors and biases, never its node-local user factors).
 */
export function sharedKindSpecs(study: StudyConfig, kind: NodeModelKind, model: tf.LayersModel): TensorSpec[] {
  return kind.getWeights ? modelKind(study.task.kind).sharedTensors(specsOf(kind.getWeights(model))) : modelSpecsOf(model);
}
