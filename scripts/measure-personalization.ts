/**
 * Measures regional personalization (client-node/personalize.ts) on the shipped churn data: the
 * study's 10 nodes are groups of US states (non-IID: churn rates and plans differ by state), a
 * FedAvg global model is trained over them (the node's kind.train, example-weighted mean, in one
 * process), then every node runs the real personalize() at several --personalize-epochs, and the
 * pooled held-out AUC / log loss of the personalized models is compared with the global model's
 * on the same rows. Reproduce:
 *
 *   node bin/run-ts.js scripts/measure-personalization.ts [--rounds 10] [--model mlp] [--partition-by state]
 *
 * --partition-by COL: the nodes are the values of COL (at most 10 groups, values dealt in sorted
 * order); the column is then left out of the features.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { initBackend } from '../models/backend.ts';
import { readCsvTable } from '../models/csv-table.ts';
import { encodeTable, splitRows, subset } from '../models/encode.ts';
import { inferFeatureSpec } from '../models/infer-spec.ts';
import { loadKindWeights, nodeKindFor, readKindWeights } from '../models/kinds/index.ts';
import { StudyConfig, type Task } from '../protocols/messages.ts';
import { poolStudyEvaluation } from '../protocols/model-kinds/kind.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import type { LoadedData } from '../client-node/data.ts';
import { personalize } from '../client-node/personalize.ts';
import { Release } from '../client-node/release.ts';
import { instructionsOf } from '../client-node/task.ts';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const ROUNDS = Number(arg('rounds', '10'));
const MODEL = arg('model', 'mlp');
const PARTITION = arg('partition-by', 'state');
const NODES = 10;

function mean(sets: Array<{ weights: WeightSet; n: number }>): WeightSet {
  const total = sets.reduce((s, x) => s + x.n, 0);
  return sets[0].weights.map((t, k) => ({ ...t, values: Float32Array.from(t.values, (_, i) => sets.reduce((s, x) => s + (x.n / total) * x.weights[k].values[i], 0)) }));
}

async function main() {
  await initBackend('wasm');
  const table = readCsvTable({ path: 'data/mlc_churn.csv' });
  const features = inferFeatureSpec(table, { target: 'churn', exclude: [...new Set(['area_code', 'state', PARTITION])] });
  const study = StudyConfig.parse({ name: 'measure', model: MODEL === 'mlp' ? { kind: 'mlp', hidden: [32, 16] } : { kind: 'logreg' }, features, rounds: ROUNDS, training: { localEpochs: 1, learningRate: 0.01, batchSize: 32 } });
  const column = table.header.indexOf(PARTITION);
  const states = [...new Set(table.rows.map((r) => r[column]))].sort();
  const groups = Math.min(NODES, states.length);
  const kind = nodeKindFor(study);
  const nodes: LoadedData[] = [];
  for (let g = 0; g < groups; g++) {
    const mine = new Set(states.filter((_, i) => i % groups === g));
    const rows = table.rows.filter((r) => mine.has(r[column]));
    const all = encodeTable({ ...table, rows }, features);
    const [train, validation] = splitRows(all.n, [0.8, 0.2], 7 + g, all.y).map((ix) => subset(all, ix));
    nodes.push({ mtimeMs: 0, train, validation, report: all.report });
  }
  const model = kind.createModel(study, nodes[0].train.width);
  let global = readKindWeights(kind, model);
  for (let round = 1; round <= ROUNDS; round++) {
    const updates = [];
    for (const data of nodes) {
      loadKindWeights(kind, model, global);
      const task = { kind: 'fit', config: study } as Task;
      const r = await kind.train(model, data.train, { study, instructions: instructionsOf(task), global, seed: round });
      updates.push({ weights: readKindWeights(kind, model), n: r.numExamples });
    }
    global = mean(updates);
  }
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-measure-'));
  const log = pino({ level: 'silent' });
  const globalStats = nodes.map((d) => {
    loadKindWeights(kind, model, global);
    return kind.evaluate(model, d.validation).stats;
  });
  const g = poolStudyEvaluation(study, globalStats);
  console.log(`churn, ${groups} nodes by ${PARTITION}, ${MODEL}, ${ROUNDS} FedAvg rounds; held-out rows pooled (n ${g.n})`);
  console.log(`global        AUC ${g.auc!.toFixed(4)}  logLoss ${g.logLoss!.toFixed(4)}`);
  for (const epochs of [1, 3, 5, 10]) {
    const stats = [];
    for (const [i, data] of nodes.entries()) {
      const task = { kind: 'evaluate', studyId: `s${i}`, round: ROUNDS, modelVersion: ROUNDS, modelSha256: 'a'.repeat(64), deadline: '', config: study } as Task;
      const p = await personalize(kind, task, data, global, { personalize: true, personalizeEpochs: epochs, stateDir: dir }, Release.of(study), undefined, log);
      stats.push(p.release!.stats);
    }
    const m = poolStudyEvaluation(study, stats);
    console.log(`personalized  AUC ${m.auc!.toFixed(4)}  logLoss ${m.logLoss!.toFixed(4)}  (--personalize-epochs ${epochs})`);
  }
  rmSync(dir, { recursive: true, force: true });
}

await main();
