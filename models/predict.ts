import { readFileSync } from 'node:fs';
import { join } from 'node:path';
// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';
import { initBackend } from './backend.ts';
import { makeMissingTest, parseNumericCell } from './cells.ts';
import type { CsvTable } from './csv-table.ts';
import { encodeTable, type DataReport } from './encode.ts';
import { DataError } from './errors.ts';
import { EXPORT_FILES, exportFolderHandler, Preprocessing } from './export-tfjs.ts';
import { predictScores } from './train.ts';
import { isNumericTarget } from '../protocols/feature-spec.ts';
import { rocAuc } from '../protocols/metrics.ts';

/**
 * Scoring with an export folder (`fedmark model export`): rows are encoded by the nodes' own
 * encoder (models/encode.ts) with the spec in preprocessing.json, run through the exported tfjs
 * model, and mapped to a score: the probability of the positive class (binary) or the prediction
 * on the target's own scale (regression, preprocessing.json's `output.link`).
 */

/** An export folder, loaded. */
export interface LoadedExport {
  preprocessing: Preprocessing;
  model: tf.LayersModel;
}

/** Reads preprocessing.json (a bad field is named) and loads model.json + weights with tfjs. */
export async function loadExport(dir: string): Promise<LoadedExport> {
  const path = join(dir, EXPORT_FILES.preprocessing);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: cannot read it as JSON (${(err as Error).message}); is ${dir} a folder written by \`fedmark model export\`?`);
  }
  const parsed = Preprocessing.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${path}: field ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  await initBackend();
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(exportFolderHandler(dir));
  } catch (err) {
    throw new Error(`${join(dir, EXPORT_FILES.modelJson)}: TensorFlow.js cannot load it: ${(err as Error).message}`);
  }
  const width = (model.inputs[0].shape as number[])[1];
  if (width !== parsed.data.inputWidth) throw new Error(`${join(dir, EXPORT_FILES.modelJson)} takes ${width} inputs but preprocessing.json encodes ${parsed.data.inputWidth}`);
  return { preprocessing: parsed.data, model };
}

/** The model output mapped to a score (identity for binary: the sigmoid is in the graph). */
export function outputToScore(output: Preprocessing['output']): (z: number) => number {
  if (output.kind === 'binary') return (z) => z;
  const { center: c, scale: s } = output;
  switch (output.link) {
    case 'identity':
      return (z) => z * s + c;
    case 'log1p': {
      const offset = Math.log1p(c);
      return (z) => Math.expm1(z + offset);
    }
    case 'log':
      return (z) => c * Math.exp(z);
  }
}

/** Scores of a table, and what encoding did to it; metrics when the table holds every label. */
export interface Scored {
  scores: Float64Array;
  report: DataReport;
  metrics?: Record<string, number | null>;
}

/**
 * Scores every row of `table`. Feature columns missing from the header are all named at once;
 * a bad cell is a DataError naming its line and column. The target column need not be there
 * (it is not an input): when it is and no label is missing, `metrics` compares the scores with it.
 */
export function scoreTable(loaded: LoadedExport, table: CsvTable): Scored {
  const spec = loaded.preprocessing.featureSpec;
  const missing = spec.features.map((f) => f.name).filter((name) => !table.header.includes(name));
  if (missing.length > 0) {
    throw new DataError('missing-column', `line 1: missing feature column${missing.length > 1 ? 's' : ''} ${missing.map((m) => JSON.stringify(m)).join(', ')} (the model reads ${spec.features.map((f) => f.name).join(', ')})`, 1, missing[0]);
  }
  const encoded = encodeTable(withPlaceholderTarget(table, loaded.preprocessing), spec);
  const outputs = predictScores(loaded.model, encoded.x, encoded.n, encoded.width);
  const toScore = outputToScore(loaded.preprocessing.output);
  const scores = Float64Array.from(outputs, toScore);
  const labels = readLabels(table, loaded.preprocessing);
  return { scores, report: encoded.report, ...(labels ? { metrics: metricsOf(loaded.preprocessing, scores, labels) } : {}) };
}

/**
 * The table with its target column (if any) replaced by a constant label, so that the nodes'
 * encoder, which needs a label on every row, encodes rows that have none (customers to score).
 */
function withPlaceholderTarget(table: CsvTable, prep: Preprocessing): CsvTable {
  const target = prep.featureSpec.target;
  const isMissing = makeMissingTest(prep.featureSpec.missingValues);
  const placeholder = isNumericTarget(target) ? (isMissing('0') ? '1' : '0') : target.positive;
  const at = table.header.indexOf(target.column);
  if (at < 0) return { header: [...table.header, target.column], rows: table.rows.map((r) => [...r, placeholder]), lineOf: table.lineOf };
  return { header: table.header, rows: table.rows.map((r) => r.map((cell, i) => (i === at ? placeholder : cell))), lineOf: table.lineOf };
}

/** The labels (1/0, or the numeric target), or undefined when the column is absent or any is missing. */
function readLabels(table: CsvTable, prep: Preprocessing): Float64Array | undefined {
  const target = prep.featureSpec.target;
  const at = table.header.indexOf(target.column);
  if (at < 0 || table.rows.length === 0) return undefined;
  const isMissing = makeMissingTest(prep.featureSpec.missingValues);
  const labels = new Float64Array(table.rows.length);
  for (let r = 0; r < table.rows.length; r++) {
    const cell = table.rows[r][at];
    if (isMissing(cell)) return undefined;
    if (isNumericTarget(target)) {
      const v = parseNumericCell(cell);
      if (Number.isNaN(v)) return undefined;
      labels[r] = v;
    } else labels[r] = cell === target.positive ? 1 : 0;
  }
  return labels;
}

const finite = (x: number) => (Number.isFinite(x) ? x : null);

/** Binary: auc, logLoss, brier; regression: rmse, mae, r2, bias (as the coordinator pools them). */
export function metricsOf(prep: Preprocessing, scores: ArrayLike<number>, labels: ArrayLike<number>): Record<string, number | null> {
  const n = scores.length;
  if (prep.output.kind === 'binary') {
    let brier = 0;
    let logLoss = 0;
    for (let i = 0; i < n; i++) {
      const p = Math.min(1 - 1e-7, Math.max(1e-7, scores[i]));
      brier += (scores[i] - labels[i]) ** 2;
      logLoss -= labels[i] > 0.5 ? Math.log(p) : Math.log(1 - p);
    }
    return { n, auc: finite(rocAuc(scores, labels)), logLoss: logLoss / n, brier: brier / n };
  }
  let sse = 0;
  let sae = 0;
  let sumError = 0;
  let sumY = 0;
  let sumY2 = 0;
  for (let i = 0; i < n; i++) {
    const e = scores[i] - labels[i];
    sse += e * e;
    sae += Math.abs(e);
    sumError += e;
    sumY += labels[i];
    sumY2 += labels[i] * labels[i];
  }
  const variance = sumY2 - (sumY * sumY) / n;
  return { n, rmse: Math.sqrt(sse / n), mae: sae / n, r2: finite(1 - sse / variance), bias: sumError / n };
}
