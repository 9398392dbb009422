import type { StudyConfig } from '../../protocols/messages.ts';
import { binaryKind } from './binary.ts';
import type { NodeModelKind } from './kind.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { modelSpecs, readWeights, writeWeights, type KindModel } from '../dense-ops.ts';
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

/** Loads weights through the kind (a kind's own model object, or a dense or TensorFlow.js model by default). */
export function loadKindWeights(kind: NodeModelKind, model: KindModel, weights: WeightSet): void {
  if (kind.setWeights) kind.setWeights(model, weights);
  else writeWeights(model, weights);
}

/** The model's weights through the kind, in protocol order. */
export function readKindWeights(kind: NodeModelKind, model: KindModel): WeightSet {
  return kind.getWeights ? kind.getWeights(model) : readWeights(model);
}

/**
 * The tensors a global model of the study holds: the kind's shared ones (every tensor of a dense
 * kind; recommendation's item factors and biases, never its node-local user factors).
 */
export function sharedKindSpecs(study: StudyConfig, kind: NodeModelKind, model: KindModel): TensorSpec[] {
  return kind.getWeights ? modelKind(study.task.kind).sharedTensors(specsOf(kind.getWeights(model))) : modelSpecs(model);
}
