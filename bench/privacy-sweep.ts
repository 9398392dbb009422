/**
 * The tuning behind the DP-SGD presets (protocols/privacy/dp-presets.ts): runs the configurations
 * given as JSON lines on stdin (or the built-in list) through bench/privacy-utility.ts and prints
 * one JSON row per configuration. `node bin/run-ts.js bench/privacy-sweep.ts < attempts.jsonl`.
 * Each line: { "model": "logreg"|"mlp", "epsilon": 3, "rounds": 20, "expectedBatch": 32,
 * "epochsPerRound": 1, "clipNorm": 1, "learningRate": 0.5, "accountant": "pld", "repeats": 1 }; for the MLP
 * also "hidden": [32, 16] and "activation": "relu" | "tanh" (ReLU when absent).
 */
import { initBackend } from '../models/index.ts';
import { churnFederation, runPrivacyUtility } from './privacy-utility.ts';

await initBackend('wasm');
const feds = new Map<string, ReturnType<typeof churnFederation>>();
const input = await new Promise<string>((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
});
for (const line of input.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
  const a = JSON.parse(line);
  const key = (a.exclude ?? []).join(',');
  if (!feds.has(key)) feds.set(key, churnFederation(10, a.exclude ?? []));
  const fed = feds.get(key)!;
  const model = a.model === 'mlp' ? { kind: 'mlp' as const, hidden: a.hidden ?? [32, 16], ...(a.activation ? { activation: a.activation as 'relu' | 'tanh' } : {}) } : { kind: 'logreg' as const };
  const row =
    a.epsilon === null || a.epsilon === undefined
      ? await runPrivacyUtility(fed, { mechanism: 'none', model, strategy: a.strategy, rounds: a.rounds ?? 20, training: a.training ?? {} }, 1)
      : await runPrivacyUtility(fed, { mechanism: 'dp-sgd', model, strategy: a.strategy, rounds: a.rounds, dpSgd: { rounds: a.rounds, expectedBatch: a.expectedBatch, epochsPerRound: a.epochsPerRound, clipNorm: a.clipNorm, learningRate: a.learningRate, accountant: a.accountant ?? 'pld', epsilon: a.epsilon } }, a.repeats ?? 1);
  const out = { ...a, z: row.noiseMultiplier, q: row.samplingRate, steps: row.stepsPerRound, spent: row.epsilonSpent, auc: Number(row.testAuc.toFixed(4)), std: Number(row.testAucStd.toFixed(4)), s: Number(row.seconds.toFixed(1)) };
  process.stdout.write(JSON.stringify(out) + '\n');
}
