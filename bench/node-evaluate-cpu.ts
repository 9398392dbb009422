/**
 * CPU of one demo node's evaluation, part by part (issue 13): the demo's churn MLP [32, 16] on one
 * region's worth of rows (the first 404: ~75 validation rows), a new global model each round as
 * in the demo; the CPU of kind.evaluate (forward pass and statistics) and of the release step.
 * Run: node bin/run-ts.js bench/node-evaluate-cpu.ts [rounds=20]
 */
import { fileURLToPath } from 'node:url';
import { readCsvTable } from '../models/csv-table.ts';
import { inferFeatureSpec } from '../models/infer-spec.ts';
import { nodeKindFor, readKindWeights } from '../models/kinds/index.ts';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { loadTable } from '../client-node/data.ts';
import { evaluate } from '../client-node/train.ts';
import { Release } from '../client-node/release.ts';
import { StudyConfig } from '../protocols/messages.ts';

const rounds = Number(process.argv[2] ?? 20);
const csv = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));
const table = readCsvTable({ path: csv });
const spec = inferFeatureSpec(table, { target: 'churn' }); // as the demo's (cli/demo.ts)
const rows = { header: table.header, rows: table.rows.slice(0, 404), lineOf: table.lineOf };
const study = StudyConfig.parse({ name: 'bench', features: spec, model: { kind: 'mlp', hidden: [32, 16] }, training: { localEpochs: 1, learningRate: 0.01 }, rounds });
const loaded = loadTable(rows, csv, study, 0, undefined, 'study_bench');
const kind = nodeKindFor(study);
const model = kind.createModel(study, encodedWidth(study.features));
const base = readKindWeights(kind, model);
const release = Release.of(study);
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const totals = { evaluate: 0, release: 0 };
for (let r = 0; r < rounds; r++) {
  // A new global model each round (weights nudged), as the demo's nodes see.
  const global = base.map((t) => ({ ...t, values: Float32Array.from(t.values, (v, i) => v + ((i * 31 + r) % 7) * 1e-3) }));
  let t = cpu();
  const facts = evaluate(kind, model, loaded, global);
  const e = cpu() - t;
  t = cpu();
  release.evaluation(facts);
  const rel = cpu() - t;
  if (r >= 1) { totals.evaluate += e; totals.release += rel; }
}
console.log(JSON.stringify({ validationRows: loaded.validation.n, rounds, msPerRound: { evaluate: +(totals.evaluate / (rounds - 1)).toFixed(3), releaseEvaluation: +(totals.release / (rounds - 1)).toFixed(3) } }));
