/**
 * Training settings for the forecast demo, compared in one process (issue 9, "the global forecast
 * beats ... the mean local-only WAPE"): the demo's plan on the shipped data (8 nodes by station,
 * horizon 14, the last 730 days), the real forecast kind and the real Strategy objects
 * (bench/strategies-bench.ts's loop), without processes or HTTP. For each setting: the global
 * model's test WAPE pooled over the nodes' held-out rows after every round, and the local-only
 * models (each node alone for rounds x local epochs, the same compute) with their mean WAPE.
 *
 *   node bin/run-ts.js scripts/forecast-settings.ts '[{"rounds":20,"localEpochs":1,"lr":0.001}]'
 */
import { encodedWidth } from '../protocols/feature-spec.ts';
import { StudyConfig } from '../protocols/messages.ts';
import { poolForecast, type ForecastStats } from '../protocols/model-kinds/forecast.ts';
import { createStrategy, StrategyConfig, type StrategyNode } from '../protocols/strategies/index.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { initBackend } from '../models/backend.ts';
import { inferForecastSpec } from '../models/forecast-features.ts';
import { forecastKind } from '../models/kinds/forecast.ts';
import { getWeights, setWeights } from '../models/model-factory.ts';
import type { EncodedData } from '../models/encode.ts';
import { loadForecastTable } from '../client-node/data-forecast.ts';
import { planForecast } from '../cli/demo-forecast.ts';

interface Setting { rounds: number; localEpochs: number; lr: number; batch?: number; hidden?: number[]; strategy?: Record<string, unknown>; localLr?: number; localEpochsTotal?: number; skipLocal?: boolean; skipFed?: boolean; personalizeLrs?: number[] }

const settings: Setting[] = JSON.parse(process.argv[2] ?? '[{"rounds":20,"localEpochs":1,"lr":0.001}]');
await initBackend('wasm');
const plan = planForecast({} as never);
const spec = inferForecastSpec(plan.table, plan.task, plan.target);
const width = encodedWidth(spec);

for (const s of settings) {
  const t0 = performance.now();
  const study = StudyConfig.parse({
    name: 'forecast settings', task: plan.task, model: s.hidden && s.hidden.length === 0 ? { kind: 'linear' } : { kind: 'mlp', hidden: s.hidden ?? [16] },
    strategy: StrategyConfig.parse(s.strategy ?? { name: 'fedavg' }), features: spec,
    training: { localEpochs: s.localEpochs, learningRate: s.lr, batchSize: s.batch ?? 64, seed: 42 },
    rounds: s.rounds, minNodesPerRound: plan.parts.length, minNodesToStart: plan.parts.length, seed: 42,
  });
  const kind = forecastKind(study);
  const nodes = plan.parts.map((p) => loadForecastTable({ header: plan.table.header, rows: p.rows.map((i) => plan.table.rows[i]), lineOf: (i) => i + 2 }, p.name, study, 0, undefined, undefined));
  const model = kind.createModel(study, width);
  const evalAll = (w: WeightSet) => nodes.map((n) => { setWeights(model, w); return kind.evaluate(model, n.validation).stats as ForecastStats; });
  const strategy = createStrategy(study);
  const ids: StrategyNode[] = nodes.map((_, i) => ({ id: `node-${i + 1}`, region: `r${i + 1}` }));
  let global: WeightSet = getWeights(model);
  let serverState = strategy.initialServerState(global);
  const byRound: string[] = [];
  for (let round = 1; round <= (s.skipFed ? 0 : study.rounds); round++) {
    const instructions = strategy.configureFit(round, serverState, ids, study.training);
    const fit = strategy.aggregateFit(global, serverState, { round, participants: ids.length });
    for (let i = 0; i < nodes.length; i++) {
      setWeights(model, global);
      await kind.train(model, nodes[i].train, { study, instructions: instructions.get(ids[i].id)!, global, seed: study.training.seed + round });
      fit.accept(getWeights(model), nodes[i].train.n);
    }
    const outcome = fit.finish([]);
    global = outcome.weights ?? global;
    serverState = outcome.serverState;
    byRound.push(poolForecast(evalAll(global)).wape!.toFixed(4));
  }
  const g = poolForecast(evalAll(global));
  // Personalization as fedmark node --personalize does it for a forecast study: 3 epochs from the global model.
  const personalized: Record<string, number | null> = {};
  for (const lr of s.personalizeLrs ?? []) {
    const stats: ForecastStats[] = [];
    for (const [i, n] of nodes.entries()) {
      setWeights(model, global);
      await kind.train(model, n.train, { study, instructions: { localEpochs: 3, learningRate: lr, batchSize: s.batch ?? 64, proximalMu: 0 }, global, seed: 42 + s.rounds + 1 + i });
      stats.push(kind.evaluate(model, n.validation).stats as ForecastStats);
    }
    personalized[String(lr)] = poolForecast(stats).wape;
  }
  let meanLocal: number | null = null;
  if (!s.skipLocal) {
    const wapes: number[] = [];
    for (const n of nodes) {
      const m = kind.createModel(study, width);
      const w0 = getWeights(m);
      await kind.train(m, n.train, { study, instructions: { localEpochs: s.localEpochsTotal ?? s.rounds * s.localEpochs, learningRate: s.localLr ?? s.lr, batchSize: s.batch ?? 64, proximalMu: 0 }, global: w0, seed: 42 });
      wapes.push(poolForecast([kind.evaluate(m, n.validation).stats as ForecastStats]).wape!);
      m.dispose();
    }
    meanLocal = wapes.reduce((a, b) => a + b, 0) / wapes.length;
  }
  model.dispose();
  process.stdout.write(JSON.stringify({ setting: s, globalWape: g.wape, naiveWape: g.naiveWape, meanLocalOnlyWape: meanLocal, personalized, byRound: byRound.join(' '), seconds: Math.round((performance.now() - t0) / 1000) }) + '\n');
}
