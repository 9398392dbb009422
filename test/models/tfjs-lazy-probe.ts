/**
 * Run by tfjs-lazy.test.ts in a fresh process (node bin/run-ts.js test/models/tfjs-lazy-probe.ts
 * MODE [MODULE...]): does what a node does and prints, as one JSON line, whether TensorFlow.js got
 * loaded (any @tensorflow/* module in the CommonJS cache: its bundles are CommonJS).
 *   graph MODULE...  imports the modules only
 *   train            initBackend('wasm'), a binary study's fit and evaluation through its model kind, as the node runs them
 *   dp-sgd           the same under DP-SGD
 */
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [mode, ...modules] = process.argv.slice(2);
const tfjsLoaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('@tensorflow/'));

async function fitAndEvaluate(dpSgd: boolean) {
  const { initBackend, currentBackend } = await import('../../models/backend.ts');
  const { nodeKindFor } = await import('../../models/kinds/index.ts');
  const { train, evaluate } = await import('../../client-node/train.ts');
  const { StudyConfig } = await import('../../protocols/messages.ts');
  const { NodePrivacyLedger } = await import('../../client-node/privacy-ledger.ts');
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const backend = await initBackend('wasm');
  const afterInit = tfjsLoaded();
  const features = [{ name: 'x1', kind: 'numeric', mean: 0, std: 1, fill: 0 }, { name: 'x2', kind: 'numeric', mean: 0, std: 1, fill: 0 }];
  const privacy = dpSgd ? { dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5, stepsPerRound: 2, learningRate: 0.1 } } : undefined;
  const study = StudyConfig.parse({ name: 'probe', model: { kind: 'mlp', hidden: [4] }, features: { target: { column: 'y', positive: '1' }, features }, rounds: 1, ...(privacy ? { privacy } : {}) });
  const n = 40;
  const x = Float32Array.from({ length: 2 * n }, (_, i) => Math.sin(i));
  const y = Float32Array.from({ length: n }, (_, i) => (x[2 * i] > 0 ? 1 : 0));
  const rows = { x, y, n, width: 2, report: { rows: n, missingFilled: {}, unseenCategories: {} } };
  const data = { mtimeMs: 0, train: rows, validation: rows, report: rows.report };
  const kind = nodeKindFor(study);
  const model = kind.createModel(study, 2);
  const global = (await import('../../models/dense-ops.ts')).readWeights(model);
  const task = { kind: 'fit', studyId: 's', round: 1, modelVersion: 0, modelSha256: '', config: study } as never;
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-probe-'));
  const ledger = NodePrivacyLedger.for({ data: join(dir, 'data.csv'), stateDir: dir, ledgerDir: join(dir, 'ledgers') }, 'rdp', 1e-5);
  const spend = dpSgd ? { studyId: 's', round: 1, samplingRate: 0.5, noiseMultiplier: 1, steps: 2 } : undefined;
  const silent = { info() {}, warn() {}, error() {}, debug() {} } as never;
  const trained = await train(kind, model, data as never, task, global, { ledger, spend, delta: 1e-5 }, silent);
  const evaluated = evaluate(kind, model, data as never, trained.weights);
  return { backend, afterInit, backendAfter: currentBackend() ?? null, loss: trained.facts.loss, evaluationLoss: evaluated.loss };
}

let result: Record<string, unknown> = {};
if (mode === 'graph') for (const m of modules) await import(pathToFileURL(resolve(m)).href);
else if (mode === 'train') result = await fitAndEvaluate(false);
else if (mode === 'dp-sgd') result = await fitAndEvaluate(true);
else throw new Error(`unknown mode ${mode}`);
console.log(JSON.stringify({ ...result, tfjsLoaded: tfjsLoaded() }));
