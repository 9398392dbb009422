/**
 * Training throughput of trainLocal on the shipped churn data, per TensorFlow.js backend.
 *
 *   npx tsx models/bench-train.ts                   # wasm and cpu, MLP [32,16], batch 32
 *   npx tsx models/bench-train.ts --backends wasm --model logreg --batch 64 --epochs 10
 *
 * Prints samples/s (training rows x epochs / seconds, after one warm-up epoch) and the test AUC
 * reached, so that a faster configuration is not mistaken for a better one.
 *
 * Per TensorFlow.js backend means TensorFlow.js's trainer: FEDMARK_TRAINER defaults to tfjs here
 * (the fused trainer, trainLocal's default, takes no backend); FEDMARK_TRAINER=fused to compare.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ModelSpec } from '../protocols/model-spec.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import { initBackend, type BackendName } from './backend.ts';
import { readCsvTable } from './csv-table.ts';
import { encodeTable, splitRows, subset } from './encode.ts';
import { inferFeatureSpec } from './infer-spec.ts';
import { createModel } from './model-factory.ts';
import { evaluateModel, trainLocal } from './train.ts';

process.env.FEDMARK_TRAINER ||= 'tfjs';

const { values } = parseArgs({
  options: {
    backends: { type: 'string', default: 'wasm,cpu' },
    model: { type: 'string', default: 'mlp' },
    hidden: { type: 'string', default: '32,16' },
    batch: { type: 'string', default: '32' },
    epochs: { type: 'string', default: '5' },
    lr: { type: 'string', default: '0.005' },
    data: { type: 'string', default: fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url)) },
  },
});

const table = readCsvTable({ path: values.data });
const spec = inferFeatureSpec(table, { target: 'churn' });
const all = encodeTable(table, spec);
const [trainIdx, testIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
const train = subset(all, trainIdx);
const test = subset(all, testIdx);
const model = ModelSpec.parse(values.model === 'logreg' ? { kind: 'logreg' } : { kind: 'mlp', hidden: values.hidden.split(',').map(Number) });
const epochs = Number(values.epochs);
const config = TrainingConfig.parse({ localEpochs: epochs, batchSize: Number(values.batch), learningRate: Number(values.lr) });

console.log(`${train.n} training rows x ${train.width} inputs, model ${JSON.stringify(model)}, batch ${config.batchSize}, ${epochs} epochs, lr ${config.learningRate}`);
for (const backend of values.backends.split(',') as BackendName[]) {
  try {
    await initBackend(backend);
  } catch (err) {
    console.log(`${backend.padEnd(10)} unavailable: ${(err as Error).message}`);
    continue;
  }
  const net = createModel(model, train.width);
  await trainLocal(net, train, { ...config, localEpochs: 1 }); // warm-up: kernels, allocations
  const started = performance.now();
  const result = await trainLocal(net, train, config);
  const seconds = (performance.now() - started) / 1000;
  const evaluation = evaluateModel(net, test);
  net.dispose();
  const rate = (train.n * epochs) / seconds;
  console.log(
    `${backend.padEnd(10)} ${Math.round(rate).toString().padStart(8)} samples/s  ` +
      `(${seconds.toFixed(2)} s, ${result.steps} steps, train loss ${result.loss.toFixed(4)}, test AUC ${evaluation.auc.toFixed(4)})`,
  );
}
