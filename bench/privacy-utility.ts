/**
 * Privacy vs utility on the shipped churn data: the federation simulated in one process (same
 * strategies, same training code as the real nodes, no HTTP) so that seven configurations x 20
 * rounds fit in a benchmark run. Test AUC on the same held-out split as the demo.
 */
import { fileURLToPath } from 'node:url';
import { FedAvg } from '../protocols/strategies/fedavg.ts';
import { encodedWidth } from '../protocols/feature-spec.ts';
import { initialWeights, modelTensorSpecs, type ModelSpec } from '../protocols/model-spec.ts';
import { ClientLevelDpStrategy } from '../protocols/privacy/client-level-dp.ts';
import { calibrateSigma } from '../protocols/privacy/index.ts';
import type { DpSgdConfig } from '../protocols/privacy/study-privacy.ts';
import type { Strategy } from '../protocols/strategies/strategy.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { createModel, encodeTable, evaluateModel, getWeights, inferFeatureSpec, readCsvTable, setWeights, splitRows, subset, trainLocal } from '../models/index.ts';
import { trainDpSgd } from '../models/dp-sgd.ts';
import { partitionByColumn } from '../cli/partition.ts';

const DATA = fileURLToPath(new URL('../data/mlc_churn.csv', import.meta.url));

export interface PrivacyUtilityRow {
  mechanism: 'none' | 'central' | 'dp-sgd';
  epsilon: number | null;
  delta: number;
  nodes: number;
  rounds: number;
  noiseMultiplier: number | null;
  testAuc: number;
  seconds: number;
}

export async function privacyUtility(options: { rounds?: number; regions?: number; epsilons?: number[]; delta?: number; model?: ModelSpec } = {}): Promise<PrivacyUtilityRow[]> {
  const rounds = options.rounds ?? 20;
  const regions = options.regions ?? 10;
  const delta = options.delta ?? 1e-5;
  const epsilons = options.epsilons ?? [1, 3, 8];
  const modelSpec: ModelSpec = options.model ?? { kind: 'mlp', hidden: [32, 16] };
  const table = readCsvTable({ path: DATA });
  const spec = inferFeatureSpec(table, { target: 'churn' });
  const all = encodeTable(table, spec);
  const [trainIdx, testIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
  const test = subset(all, testIdx);
  const stateCol = table.header.indexOf('state');
  const parts = partitionByColumn(table.rows.map((r) => r[stateCol]), trainIdx, regions).map((p) => subset(all, p.rows));
  const width = encodedWidth(spec);
  const training = TrainingConfig.parse({});
  const model = createModel(modelSpec, width, 42);

  async function run(strategy: Strategy, dpSgd?: DpSgdConfig): Promise<number> {
    let global: WeightSet = initialWeights(modelTensorSpecs(modelSpec, width), 42);
    let serverState = strategy.initialServerState(global);
    for (let r = 1; r <= rounds; r++) {
      const round = strategy.aggregateFit(global, serverState, { round: r, participants: parts.length });
      for (const data of parts) {
        setWeights(model, global);
        if (dpSgd) await trainDpSgd(model, data, dpSgd);
        else await trainLocal(model, data, training, { seed: 42 + r });
        round.accept(getWeights(model), data.n);
      }
      const outcome = round.finish([]);
      global = outcome.weights ?? global;
      serverState = outcome.serverState;
    }
    setWeights(model, global);
    return evaluateModel(model, test).auc;
  }

  const rows: PrivacyUtilityRow[] = [];
  const time = async (row: Omit<PrivacyUtilityRow, 'testAuc' | 'seconds'>, fn: () => Promise<number>) => {
    const t = performance.now();
    const testAuc = await fn();
    rows.push({ ...row, testAuc, seconds: (performance.now() - t) / 1000 });
    process.stderr.write(`  privacy-utility: ${row.mechanism} eps=${row.epsilon ?? '-'} AUC ${testAuc.toFixed(4)}\n`);
  };
  await time({ mechanism: 'none', epsilon: null, delta, nodes: parts.length, rounds, noiseMultiplier: null }, () => run(new FedAvg()));
  for (const epsilon of epsilons) {
    // Central: every node every round (q = 1), clip 0.5, noise calibrated to the study budget.
    const z = calibrateSigma({ q: 1, steps: rounds, delta, epsilon });
    await time({ mechanism: 'central', epsilon, delta, nodes: parts.length, rounds, noiseMultiplier: z }, () =>
      run(new ClientLevelDpStrategy(new FedAvg(), { noiseMultiplier: z, clipping: { kind: 'fixed', norm: 0.5 } })),
    );
  }
  for (const epsilon of epsilons) {
    // DP-SGD: expected batch 32 on the smallest node, one expected epoch a round.
    const smallest = Math.min(...parts.map((p) => p.n));
    const q = Math.min(1, 32 / smallest);
    const stepsPerRound = Math.round(1 / q);
    const z = calibrateSigma({ q, steps: rounds * stepsPerRound, delta, epsilon });
    await time({ mechanism: 'dp-sgd', epsilon, delta, nodes: parts.length, rounds, noiseMultiplier: z }, () =>
      run(new FedAvg(), { noiseMultiplier: z, clipNorm: 1, samplingRate: q, stepsPerRound, learningRate: 0.5 }),
    );
  }
  model.dispose();
  return rows;
}
