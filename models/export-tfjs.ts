import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import { initBackend } from './backend.ts';
import { createModel, setWeights } from './model-factory.ts';
import { targetMap } from './kinds/regression.ts';
import { encodedWidth, FeatureSpec, isNumericTarget, MISSING_BUCKET, OTHER_BUCKET } from '../protocols/feature-spec.ts';
import type { StudyConfig } from '../protocols/messages.ts';
import { modelTensorSpecs, outputActivation } from '../protocols/model-spec.ts';
import { forecastRegressionTask } from '../protocols/model-kinds/forecast.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { decodeWeights } from '../protocols/weights-codec.ts';

/**
 * A study's global model as a TensorFlow.js LayersModel export (issue 12): `model.json` and
 * `weights.bin` in tfjs's own format, and `preprocessing.json`, everything a scorer needs to turn
 * a CSV row into the model's input and its output into a score.
 *
 * The exported network is exactly the one the nodes train and evaluate (models/model-factory.ts):
 * it outputs the probability of the positive class (sigmoid) for a binary study, and for a
 * regression study the network's raw output z, whose link to the target's own scale (identity,
 * log1p, log) is written in preprocessing.json (`output`) and applied by `fedmark predict`
 * (models/predict.ts). The link is kept out of the graph on purpose: tfjs has no expm1 activation
 * (log1p), and folding c e^z into an exponential activation would change float32 rounding, so
 * tfjs's predict would no longer equal fedmark's own output.
 */

/** File names of an export folder. */
export const EXPORT_FILES = {
  modelJson: 'model.json',
  weights: 'weights.bin',
  preprocessing: 'preprocessing.json',
  lineage: 'lineage.json',
  /** The coordinator's signed bytes (FMW1), kept so the signature can be checked offline. */
  signedModel: 'model.fmw',
  signature: 'model.fmw.asc',
  coordinatorKey: 'coordinator-key.asc',
  /** The coordinator's signed statement binding study, version, round and config to the model (models/export-statement.ts). */
  statement: 'model-statement.json',
  statementSignature: 'model-statement.json.asc',
} as const;

const NumericColumn = z.object({ name: z.string(), kind: z.literal('numeric'), slot: z.number().int(), mean: z.number(), std: z.number(), fill: z.number() });
const CategoricalColumn = z.object({
  name: z.string(),
  kind: z.literal('categorical'),
  /** First input slot; category i goes to slot + i, then the other and missing buckets. */
  slot: z.number().int(),
  categories: z.array(z.string()),
  otherSlot: z.number().int(),
  missingSlot: z.number().int(),
});

/** How the model's output becomes a score. */
const Output = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('binary'), activation: z.literal('sigmoid'), positive: z.string(), formula: z.string() }),
  z.object({
    kind: z.literal('regression'),
    activation: z.literal('linear'),
    loss: z.enum(['mse', 'huber', 'tweedie', 'log1p']),
    link: z.enum(['identity', 'log1p', 'log']),
    center: z.number(),
    scale: z.number(),
    formula: z.string(),
  }),
]);

/** preprocessing.json: read by `fedmark predict` (zod-checked, since a user may edit it). */
export const Preprocessing = z.object({
  format: z.literal('fedmark-preprocessing'),
  version: z.literal(1),
  /** The study's feature spec as the nodes encode with it (models/encode.ts). */
  featureSpec: FeatureSpec,
  task: z.object({ kind: z.enum(['binary', 'regression', 'forecast', 'recommend']) }).passthrough(),
  inputWidth: z.number().int().positive(),
  /** Input columns in model order, with their slots of the input vector. */
  columns: z.array(z.discriminatedUnion('kind', [NumericColumn, CategoricalColumn])),
  encoding: z.array(z.string()),
  output: Output,
});
export type Preprocessing = z.infer<typeof Preprocessing>;

/** preprocessing.json for a study: the spec, the slot layout, and the output's link. */
export function preprocessingFor(config: StudyConfig): Preprocessing {
  const spec = config.features;
  let slot = 0;
  const columns = spec.features.map((f) => {
    const at = slot;
    if (f.kind === 'numeric') {
      slot += 1;
      return { name: f.name, kind: 'numeric' as const, slot: at, mean: f.mean, std: f.std, fill: f.fill };
    }
    slot += f.categories.length + 2;
    return { name: f.name, kind: 'categorical' as const, slot: at, categories: [...f.categories], otherSlot: at + f.categories.length, missingSlot: at + f.categories.length + 1 };
  });
  return {
    format: 'fedmark-preprocessing',
    version: 1,
    featureSpec: spec,
    task: { ...config.task },
    inputWidth: encodedWidth(spec),
    columns,
    encoding: [
      'input: one float32 vector per row, columns in the order of `columns`, each at its `slot`',
      `numeric: a missing cell (empty, whitespace, or one of ${JSON.stringify(spec.missingValues)}) takes \`fill\`, then (value - mean) / std`,
      `categorical: one-hot over \`categories\`, then a slot for a value not in the list (${OTHER_BUCKET}, otherSlot) and one for a missing cell (${MISSING_BUCKET}, missingSlot)`,
      'other columns of the CSV, the target included, are not read',
    ],
    output: outputFor(config),
  };
}

function outputFor(config: StudyConfig): Preprocessing['output'] {
  const target = config.features.target;
  if (config.task.kind === 'binary') {
    if (isNumericTarget(target)) throw new Error('a binary study needs a binary target (features.target.positive)');
    return { kind: 'binary', activation: 'sigmoid', positive: target.positive, formula: `score = model output = P(${target.column} = ${JSON.stringify(target.positive)})` };
  }
  // Recommend (issue 9): factors, not a network; `fedmark recommend --model` reads the demo's OUT/model (model.fmw + study.json).
  if (config.task.kind === 'recommend') throw new Error('a recommend study has no TensorFlow.js export (its model is item factors): use `fedmark recommend --model DIR` with the study\'s model.fmw and study.json');
  if (!isNumericTarget(target)) throw new Error('a regression study needs a numeric target (features.target.kind "numeric")');
  // A forecast model's output is a regression output (issue 9): same loss, link and formula.
  const task = config.task.kind === 'forecast' ? forecastRegressionTask(config.task) : config.task;
  const map = targetMap(task, target);
  const { center: c, scale: s } = target;
  const formula = {
    identity: `score = z * ${s} + ${c}`,
    log1p: `score = expm1(z + log1p(${c}))`,
    log: `score = ${c} * exp(z)`,
  }[map.transform];
  // A forecast with a per-series level forecasts expm1(z + level): `fedmark forecast` applies it.
  const levelFormula = config.task.kind === 'forecast' && config.task.level !== undefined ? 'forecast = expm1(z + level), level the "level" input before standardization (fedmark forecast applies it)' : undefined;
  return { kind: 'regression', activation: 'linear', loss: task.loss, link: map.transform, center: c, scale: s, formula: levelFormula ?? `${formula}, z the model output` };
}

/** The model's tensors as the coordinator signed them, checked against the study's shapes. */
export function decodeStudyModel(config: StudyConfig, signedBytes: Uint8Array): WeightSet {
  return decodeWeights(signedBytes, { expected: modelTensorSpecs(config.model, encodedWidth(config.features)) });
}

/** The fedmark network of a study with the given weights (the nodes' model, models/kinds). */
export async function studyNetwork(config: StudyConfig, weights: WeightSet): Promise<tf.LayersModel> {
  await initBackend();
  const net = createModel(config.model, encodedWidth(config.features), config.seed, outputActivation(config.task));
  setWeights(net, weights);
  return net;
}

/** model.json (tfjs "layers-model") and the weights file it names. */
export interface TfjsArtifacts {
  modelJson: Record<string, unknown>;
  weights: Uint8Array;
}

/** The tfjs LayersModel files of a network, as tfjs's own save writes them. */
export async function tfjsArtifacts(net: tf.LayersModel): Promise<TfjsArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined;
  await net.save(tf.io.withSaveHandler(async (artifacts) => {
    saved = artifacts;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  if (saved?.weightData === undefined || saved.weightSpecs === undefined) throw new Error('TensorFlow.js saved no weights');
  const data = tf.io.concatenateArrayBuffers(Array.isArray(saved.weightData) ? saved.weightData : [saved.weightData]);
  // tfjs names each model it builds in a process "sequential_<n>": a fixed name makes the
  // topology a function of the study alone, so verify can compare it with a rebuilt one.
  const topology = saved.modelTopology as { config?: { name?: string } };
  if (topology.config) topology.config.name = 'fedmark';
  return {
    modelJson: {
      format: 'layers-model',
      generatedBy: saved.generatedBy,
      convertedBy: 'fedmark model export',
      modelTopology: topology,
      weightsManifest: [{ paths: [`./${EXPORT_FILES.weights}`], weights: saved.weightSpecs }],
    },
    weights: new Uint8Array(data),
  };
}

/** Everything an export folder holds but the lineage, from the study and its signed model bytes. */
export async function buildTfjsExport(config: StudyConfig, signedBytes: Uint8Array): Promise<TfjsArtifacts & { preprocessing: Preprocessing }> {
  if (config.task.kind === 'recommend') outputFor(config); // throws: a recommend study has no network to export (says what to use)
  const net = await studyNetwork(config, decodeStudyModel(config, signedBytes));
  try {
    return { ...(await tfjsArtifacts(net)), preprocessing: preprocessingFor(config) };
  } finally {
    net.dispose();
  }
}

/**
 * A tfjs IO handler that loads an export folder from disk (what tfjs-node's `file://` does;
 * plain @tensorflow/tfjs has none in Node): model.json and the weight files its manifest names.
 *
 * @example
 *   const net = await tf.loadLayersModel(exportFolderHandler('out/model'));
 */
export function exportFolderHandler(dir: string, modelFile: string = EXPORT_FILES.modelJson): tf.io.IOHandler {
  return {
    async load() {
      const modelJson = JSON.parse(await readFile(join(dir, modelFile), 'utf8')) as tf.io.ModelJSON;
      const specs: tf.io.WeightsManifestEntry[] = [];
      const buffers: ArrayBuffer[] = [];
      for (const group of modelJson.weightsManifest) {
        specs.push(...group.weights);
        for (const path of group.paths) {
          const bytes = await readFile(join(dir, path));
          buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
        }
      }
      return { modelTopology: modelJson.modelTopology, weightSpecs: specs, weightData: tf.io.concatenateArrayBuffers(buffers), format: modelJson.format, generatedBy: modelJson.generatedBy, convertedBy: modelJson.convertedBy ?? undefined };
    },
  };
}

let fileRouterRegistered = false;

/** Lets `tf.loadLayersModel('file://DIR/model.json')` read an export folder with plain @tensorflow/tfjs. */
export function registerFileLoader(): void {
  if (fileRouterRegistered) return;
  fileRouterRegistered = true;
  // tfjs's routers return null for a URL they do not take (its IORouter type says IOHandler only).
  tf.io.registerLoadRouter(((url: string | string[]) => {
    const s = Array.isArray(url) ? url[0] : url;
    if (typeof s !== 'string' || !s.startsWith('file://')) return null;
    const path = decodeURIComponent(s.slice('file://'.length));
    return path.endsWith('.json') ? exportFolderHandler(dirname(path), basename(path)) : exportFolderHandler(path);
  }) as Parameters<typeof tf.io.registerLoadRouter>[0]);
}
