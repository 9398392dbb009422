/**
 * The data and model layer of a node: CSV in, encoded rows, a TensorFlow.js model, local training
 * and evaluation, weights in and out in the protocol's named-tensor form.
 *
 * Importing this module loads TensorFlow.js (model-factory.ts and train.ts import it statically):
 * tools and tests want that. The node's own code imports the modules it needs
 * directly (backend.ts, infer-spec.ts, encode.ts, csv-table.ts, errors.ts, kinds/), so that a node
 * on the fused trainer never loads it (issue 13; test/models/tfjs-lazy.test.ts).
 */
export { readCsvTable, writeCsvTable, formatCsv, type CsvTable } from './csv-table.ts';
export { DataError, SpecError } from './errors.ts';
export {
  inferFeatureSpec,
  readFeatureSpecFile,
  writeFeatureSpecFile,
  describeZodError,
  DEFAULT_MAX_CATEGORIES,
  type InferOptions,
} from './infer-spec.ts';
export { encodeTable, splitRows, subset, type DataReport, type EncodedData } from './encode.ts';
export { initBackend, currentBackend, type BackendName } from './backend.ts';
export { createModel, getWeights, setWeights, modelSpecsOf, DEFAULT_MODEL_SEED } from './model-factory.ts';
export { bceLoss, mseLoss, huberLoss, tweedieLoss, type OutputLoss } from './losses.ts';
export { nodeKindFor, type NodeModelKind, type TrainArgs, type KindTrainResult } from './kinds/index.ts';
export {
  trainLocal,
  evaluateModel,
  predictScores,
  logLoss,
  lossFunction,
  type TrainResult,
  type TrainOptions,
  type EvaluationResult,
  type Proximal,
} from './train.ts';
