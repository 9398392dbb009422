/**
 * The churn demo's federation, exported for another framework (bench/compare-flower.ts runs
 * Flower on it): the same rows per node, the same held-out test rows, the same encoded features,
 * the same round-0 model and training configuration as `fedmark demo` with its defaults.
 *
 * The split repeats runDemo's steps for the shipped churn data (cli/demo.ts, step 1: the
 * stratified 80/20 test split, the spec inferred from the training rows, partitionByColumn by
 * state into 10 regions); test/bench/compare-flower.test.ts checks it against the CSV files a
 * real `fedmark demo` run writes, so a change there that is not made here fails that test.
 * Each node's rows are then encoded and split into train/validation by client-node/data.ts's
 * own loadData, as the node process does. One difference is unavoidable: the node keys its
 * validation split by the study id the coordinator assigns at run time, unknown here, so the
 * export keys it by the study name (studyKey's fallback): the same fraction (20%) and the same
 * mechanism, other rows.
 *
 *   node bin/run-ts.js bench/export-demo-split.ts OUT_DIR     (writes OUT_DIR/meta.json and *.f32)
 */
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodedWidth, type FeatureSpec } from '../protocols/feature-spec.ts';
import { StudyConfig } from '../protocols/messages.ts';
import { initialWeights, modelTensorSpecs } from '../protocols/model-spec.ts';
import { encodeTable, inferFeatureSpec, readCsvTable, splitRows, subset, writeCsvTable, type CsvTable } from '../models/index.ts';
import { loadData } from '../client-node/data.ts';
import { partitionByColumn, type Partition } from '../cli/partition.ts';

export const SHIPPED_CHURN = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));

/** The demo's defaults (cli/demo.ts) for the shipped churn data. */
export const DEMO_DEFAULTS = { target: 'churn', partitionBy: 'state', nodes: 10, rounds: 20, seed: 42, localEpochs: 1 } as const;

export interface DemoSplit {
  table: CsvTable;
  spec: FeatureSpec;
  trainIdx: number[];
  testIdx: number[];
  partitions: Partition[];
  /** The study the demo creates (name, model MLP 32-16, training defaults), parsed. */
  study: StudyConfig;
}

/** runDemo's step 1 for the shipped churn data with the demo's defaults (see the file comment). */
export function demoSplit(dataPath = SHIPPED_CHURN): DemoSplit {
  const { target, partitionBy, nodes, rounds, seed, localEpochs } = DEMO_DEFAULTS;
  const table = readCsvTable({ path: dataPath });
  const infer = (rows: CsvTable): FeatureSpec => inferFeatureSpec(rows, { target, exclude: [] });
  const labels = encodeTable(table, infer(table)).y;
  const [trainIdx, testIdx] = splitRows(table.rows.length, [0.8, 0.2], seed, labels);
  const spec = infer({ ...table, rows: trainIdx.map((i) => table.rows[i]), lineOf: (i: number) => table.lineOf(trainIdx[i]) });
  const col = table.header.indexOf(partitionBy);
  const partitions = partitionByColumn(table.rows.map((r) => r[col]), trainIdx, nodes).filter((p) => p.rows.length > 0);
  const study = StudyConfig.parse({
    name: `demo: ${target} from ${dataPath.split('/').pop()}`,
    task: { kind: 'binary' },
    model: { kind: 'mlp', hidden: [32, 16] },
    strategy: { name: 'fedavg' },
    features: spec,
    training: { localEpochs, seed },
    rounds,
    minNodesPerRound: Math.max(2, Math.ceil(partitions.length / 2)),
    minNodesToStart: partitions.length,
    seed,
  });
  return { table, spec, trainIdx, testIdx, partitions, study };
}

export interface ExportedNode {
  name: string;
  values: string[];
  /** Rows the demo gives this node (its data.csv). */
  rows: number;
  trainRows: number;
  validationRows: number;
  x: string;
  y: string;
}

export interface ExportMeta {
  width: number;
  /** Layer widths, input to output: [width, 32, 16, 1]. */
  layers: number[];
  training: StudyConfig['training'];
  rounds: number;
  seed: number;
  nodes: ExportedNode[];
  test: { rows: number; x: string; y: string };
  /** The round-0 model (protocols/model-spec.ts initialWeights), float32 in tensor order; kernels [in, out]. */
  initial: { file: string; tensors: Array<{ name: string; shape: number[] }> };
}

/**
 * Writes the split into `outDir`: per node its CSV rows (nodes/NAME/data.csv, as the demo writes
 * them) and its encoded training rows (float32, row-major); the encoded test rows; the round-0
 * weights; meta.json describing all of it.
 */
export function exportDemoSplit(outDir: string, split: DemoSplit = demoSplit()): ExportMeta {
  const { table, spec, testIdx, partitions, study } = split;
  mkdirSync(outDir, { recursive: true });
  const f32 = (name: string, values: Float32Array) => {
    writeFileSync(join(outDir, name), Buffer.from(values.buffer, values.byteOffset, values.byteLength));
    return name;
  };
  const nodes: ExportedNode[] = partitions.map((p) => {
    const dir = join(outDir, 'nodes', p.name);
    mkdirSync(dir, { recursive: true });
    const csv = join(dir, 'data.csv');
    writeCsvTable(csv, table.header, p.rows.map((i) => table.rows[i]));
    // What the node process does with its data.csv: encode with the study's spec, split off validation.
    const data = loadData(csv, study, statSync(csv).mtimeMs);
    return { name: p.name, values: p.values, rows: p.rows.length, trainRows: data.train.n, validationRows: data.validation.n, x: f32(`${p.name}.x.f32`, data.train.x), y: f32(`${p.name}.y.f32`, data.train.y) };
  });
  writeCsvTable(join(outDir, 'test.csv'), table.header, testIdx.map((i) => table.rows[i]));
  const test = subset(encodeTable(table, spec), testIdx);
  const width = encodedWidth(spec);
  if (study.model.kind !== 'mlp') throw new Error('exportDemoSplit: the demo model is an MLP');
  const specs = modelTensorSpecs(study.model, width);
  const weights = initialWeights(specs, study.seed);
  const flat = new Float32Array(weights.reduce((n, w) => n + w.values.length, 0));
  let offset = 0;
  for (const w of weights) {
    flat.set(w.values, offset);
    offset += w.values.length;
  }
  const meta: ExportMeta = {
    width,
    layers: [width, ...study.model.hidden, 1],
    training: study.training,
    rounds: study.rounds,
    seed: study.seed,
    nodes,
    test: { rows: test.n, x: f32('test.x.f32', test.x), y: f32('test.y.f32', test.y) },
    initial: { file: f32('initial.f32', flat), tensors: specs.map((s) => ({ name: s.name, shape: [...s.shape] })) },
  };
  writeFileSync(join(outDir, 'meta.json'), JSON.stringify(meta, null, 2));
  return meta;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2];
  if (!out) {
    process.stderr.write('usage: node bin/run-ts.js bench/export-demo-split.ts OUT_DIR\n');
    process.exit(2);
  }
  const meta = exportDemoSplit(resolve(out));
  process.stdout.write(JSON.stringify({ out: resolve(out), width: meta.width, nodes: meta.nodes.map((n) => [n.name, n.rows, n.trainRows]), testRows: meta.test.rows }) + '\n');
}
