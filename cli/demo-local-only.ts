import type { StudyConfig } from '../protocols/messages.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { EncodedData } from '../models/encode.ts';
import { readKindWeights, type NodeModelKind } from '../models/kinds/index.ts';

/**
 * A region's local-only model, the demos' baseline: the study's kind trained on the region's rows
 * alone for `epochs` epochs from the study's round-0 weights (what each round's node training does,
 * run once with the federation's whole budget of epochs), at the study's learning rate unless
 * `learningRate` gives the local models their own best one (the forecast demo's).
 */
export async function trainAlone(kind: NodeModelKind, study: StudyConfig, width: number, data: EncodedData, epochs: number, learningRate = study.training.learningRate): Promise<WeightSet> {
  const model = kind.createModel(study, width);
  try {
    const global = readKindWeights(kind, model);
    const { batchSize } = study.training;
    await kind.train(model, data, { study, instructions: { localEpochs: epochs, learningRate, batchSize, proximalMu: 0 }, global, seed: study.training.seed });
    return readKindWeights(kind, model);
  } finally {
    model.dispose();
  }
}
