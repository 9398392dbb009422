import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StudyConfig, type StudyConfigInput } from '../protocols/messages.ts';
import { dpSgdPlanWithEvaluation } from '../protocols/privacy/dp-presets.ts';
import { StudyPrivacy } from '../protocols/privacy/study-privacy.ts';
import { poolRecommend, recommendStats, recommendStudyFeatures, type ItemVocabulary, type RecommendStats } from '../protocols/model-kinds/recommend.ts';
import { encodeWeights } from '../protocols/weights-codec.ts';
import { readCsvTable, writeCsvTable, type CsvTable } from '../models/csv-table.ts';
import type { CsvDelimiter } from '../models/csv-table.ts';
import { hasItem, heldOutRanks, initialUserFactors, rankOf, trainBpr } from '../models/mf.ts';
import { createRecommendModel, type RecommendData } from '../models/kinds/recommend.ts';
import { loadRecommendTable } from '../client-node/data-recommend.ts';
import { recommendDataOf } from '../models/kinds/recommend.ts';
import { auditLine, fmt, prepareDemoOut, runFederation } from './demo-federation.ts';

/**
 * The recommend demo (`npm start -- --task recommend`): interactions partitioned by region, one
 * node per region, federated BPR matrix factorization (item factors shared, user factors kept on
 * each node), and the final table: the global model (as the nodes evaluated it: the last round's
 * pooled recall@k / NDCG@k), the popularity baseline (items ranked by their count in every node's
 * training interactions), each local-only model (BPR on one node's users alone for the same number
 * of epochs, evaluated on that node's users only) and their mean, and the personalized model
 * (fedmark node --personalize: the final round's pooled personalized metrics) when present.
 */

export interface RecommendDemoOptions {
  data?: string;
  /** PostgreSQL for the demo's coordinator (`--database-url`); the embedded PGlite when absent. */
  databaseUrl?: string;
  user?: string;
  item?: string;
  partitionBy?: string;
  nodes?: number;
  rounds?: number;
  localEpochs?: number;
  out?: string;
  seed?: number;
  json?: boolean;
  progress?: NodeJS.WritableStream;
  /** false: nodes run without --personalize (no personalized row). */
  personalize?: boolean;
  delimiter?: CsvDelimiter;
  /** false: no local-only models (--no-local-baseline). */
  localBaseline?: boolean;
  /** User-level DP-SGD on every node (recommendDemoPrivacy), with noised per-user evaluation. */
  dpSgd?: boolean;
  /** Target user-level epsilon per node over the study, training and evaluations (default 3). */
  dpSgdEpsilon?: number;
  delta?: number;
  /** Flags of the other demos, refused here (recommendDemoFlagProblem). */
  epsilon?: number;
  model?: string;
  target?: string;
  strategy?: unknown;
}

/** A demo flag that does not apply to --task recommend, with why (checked before anything runs). */
export function recommendDemoFlagProblem(options: RecommendDemoOptions): string | undefined {
  if (options.epsilon !== undefined) return `--epsilon: the recommend demo runs user-level DP with --dp-sgd (a study with privacy.central runs through \`fedmark study create\`); --epsilon does not apply to --task recommend`;
  if (options.model !== undefined) return `--model: a recommend study's model is matrix factorization (16 factors); --model does not apply to --task recommend`;
  if (options.target !== undefined) return `--target: --task recommend reads --user and --item (the item is what is predicted); --target does not apply`;
  return undefined;
}

export interface RecommendDemoResult {
  task: 'recommend';
  studyId: string;
  nodes: number;
  rounds: number;
  k: number;
  globalRecallAtK: number | null;
  globalNdcgAtK: number | null;
  popularityRecallAtK: number | null;
  popularityNdcgAtK: number | null;
  meanLocalOnlyRecallAtK: number | null;
  meanLocalOnlyNdcgAtK: number | null;
  localOnly: Array<{ node: string; users: number; recallAtK: number | null; ndcgAtK: number | null }>;
  personalizedRecallAtK: number | null;
  personalizedNdcgAtK: number | null;
  /** --dp-sgd: user-level epsilon per node (training and noised evaluations), planned and spent (DP-SGD part, the nodes' reports). */
  privacy: { unit: 'user'; targetEpsilon: number; plannedEpsilon: number; delta: number; noiseMultiplier: number; samplingRate: number; evaluationNoiseMultiplier: number; dpSgdEpsilonSpentMax: number | null } | null;
  modelDir: string;
  seconds: number;
  auditVerified: boolean;
}

const SHIPPED = fileURLToPath(new URL('../data/interactions.csv', import.meta.url));
const DEFAULTS = { user: 'customer', item: 'sku', partitionBy: 'region', rounds: 10, localEpochs: 3, factors: 16, learningRate: 0.05, k: 10 };

interface Part {
  name: string;
  rows: string[][];
}

/** Checks the flags against the data and splits it by the partition column (one node per value). */
export function planRecommendDemo(options: RecommendDemoOptions): { table: CsvTable; user: string; item: string; timestamp?: string; parts: Part[]; items: ItemVocabulary } {
  const data = options.data ?? SHIPPED;
  const table = readCsvTable({ path: data }, options.delimiter ? { delimiter: options.delimiter } : {});
  const user = options.user ?? DEFAULTS.user;
  const item = options.item ?? DEFAULTS.item;
  const partitionBy = options.partitionBy ?? (options.nodes === undefined ? DEFAULTS.partitionBy : undefined);
  for (const [flag, column] of [['--user', user], ['--item', item], ['--partition-by', partitionBy]] as const) {
    if (column !== undefined && !table.header.includes(column)) throw new Error(`${flag}: column "${column}" is not in ${data} (columns: ${table.header.join(', ')})`);
  }
  const timestamp = ['ts', 'timestamp', 'date'].find((c) => table.header.includes(c));
  const parts = partitionBy !== undefined ? byColumn(table, table.header.indexOf(partitionBy)) : byUserHash(table, table.header.indexOf(user), options.nodes ?? 4);
  if (parts.length < 2) throw new Error(`--partition-by ${partitionBy}: the data has ${parts.length} value(s); a federation needs at least 2 nodes`);
  // The study owner's catalogue: every item in the data (declared vocabulary), or hashed when huge.
  const col = table.header.indexOf(item);
  const distinct = [...new Set(table.rows.map((r) => (r[col] ?? '').trim()))].filter((v) => v !== '').sort();
  const items: ItemVocabulary = distinct.length <= 20_000 ? { vocabulary: distinct } : { hashBuckets: 8192 };
  return { table, user, item, ...(timestamp ? { timestamp } : {}), parts, items };
}

function byColumn(table: CsvTable, col: number): Part[] {
  const groups = new Map<string, string[][]>();
  for (const row of table.rows) {
    const v = (row[col] ?? '').trim() || 'missing';
    if (!groups.has(v)) groups.set(v, []);
    groups.get(v)!.push(row);
  }
  return [...groups.entries()].map(([name, rows]) => ({ name: name.replace(/[^A-Za-z0-9_-]/g, '_'), rows }));
}

/** Without --partition-by: users (all their rows together) spread over N nodes by a hash of the id. */
function byUserHash(table: CsvTable, col: number, nodes: number): Part[] {
  const parts: Part[] = Array.from({ length: nodes }, (_, i) => ({ name: `node-${i + 1}`, rows: [] }));
  for (const row of table.rows) {
    let h = 2166136261;
    for (const ch of row[col] ?? '') h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
    parts[(h >>> 0) % nodes].rows.push(row);
  }
  return parts.filter((p) => p.rows.length > 0);
}

export function recommendStudyConfig(plan: ReturnType<typeof planRecommendDemo>, options: RecommendDemoOptions): StudyConfigInput {
  const task = { kind: 'recommend' as const, user: plan.user, item: plan.item, ...(plan.timestamp ? { timestamp: plan.timestamp } : {}), items: plan.items, factors: DEFAULTS.factors, k: DEFAULTS.k };
  return {
    name: 'recommend-demo',
    task,
    model: { kind: 'linear' },
    ...(options.strategy !== undefined ? { strategy: options.strategy as StudyConfigInput['strategy'] } : {}),
    features: recommendStudyFeatures(task),
    rounds: options.rounds ?? DEFAULTS.rounds,
    minNodesPerRound: plan.parts.length,
    // validationFraction is not a split here (leave-last-out is), but the coordinator bounds a node's
    // evaluated count by that share of its declared rows: every evaluated user has >= 2 rows, so
    // users <= rows / 2, within the bound at 0.5 whatever the CSV (at 0.2, users with 2-4 rows each
    // would be refused).
    training: { localEpochs: options.localEpochs ?? DEFAULTS.localEpochs, learningRate: DEFAULTS.learningRate, seed: options.seed ?? 42, validationFraction: 0.5 },
    // The default bounds hold: the shipped demo's largest item-factor delta is 16.1 (audit
    // update.received deltaNorm, 10 rounds x 4 nodes), under DEFAULT_MAX_UPDATE_NORM (20).
    seed: options.seed ?? 42,
  };
}

/**
 * --dp-sgd: user-level DP-SGD (models/mf.ts trainBprUserDp) on every node and noised per-user
 * evaluations (protocols/privacy/noised-recommend.ts), calibrated together to the target epsilon
 * per node as the node's ledger composes them (dpSgdPlanWithEvaluation: a quarter to the
 * evaluations). The preset: half of a node's USERS sampled a step, 2 expected epochs a round, a
 * user's whole gradient clipped to 1, the smallest node's expected batch as the public denominator.
 */
export function recommendDemoPrivacy(options: RecommendDemoOptions, rounds: number, nodeUsers: number[]): { privacy: StudyPrivacy; plannedEpsilon: number } | undefined {
  if (!options.dpSgd) return undefined;
  const delta = options.delta ?? 1e-5;
  const epsilon = options.dpSgdEpsilon ?? 3;
  const plan = dpSgdPlanWithEvaluation({ rounds, samplingRate: 0.5, epochsPerRound: 2, clipNorm: 1, learningRate: DP_LEARNING_RATE, accountant: 'rdp' }, { epsilon, delta, rounds, nodeRows: nodeUsers });
  const privacy = StudyPrivacy.parse({ accountant: 'rdp', delta, dpSgd: plan.dpSgd, evaluation: { bins: 20, noiseMultiplier: plan.evaluation.noiseMultiplier } });
  return { privacy, plannedEpsilon: plan.epsilonSpent };
}

/** DP-SGD's step on the mean clipped user gradient (each user's whole BPR loss): larger than plain BPR's per-triple 0.05. */
const DP_LEARNING_RATE = 2;

/** Distinct users of each part (the unit of user-level DP). */
function usersPerPart(plan: ReturnType<typeof planRecommendDemo>): number[] {
  const col = plan.table.header.indexOf(plan.user);
  return plan.parts.map((p) => new Set(p.rows.map((r) => r[col])).size);
}

/** Each node's interactions, split exactly as the node splits them (the node's own loader). */
function nodeData(plan: ReturnType<typeof planRecommendDemo>, config: StudyConfig): RecommendData[] {
  return plan.parts.map((p) => recommendDataOf(loadRecommendTable({ header: plan.table.header, rows: p.rows, lineOf: (i) => i + 2 }, p.name, config, 0).train));
}

/** Popularity: items ranked by their count in every node's training interactions (the same ranking for everyone). */
export function popularityStats(parts: RecommendData[], numItems: number, k: number): RecommendStats {
  const counts = new Float64Array(numItems);
  for (const p of parts) for (let i = 0; i < p.interactions.items.length; i++) counts[p.interactions.items[i]] += p.interactions.weights[i];
  const ranks: number[] = [];
  for (const p of parts) {
    for (let u = 0; u < p.users.length; u++) if (p.heldOut[u] >= 0) ranks.push(rankOf(counts, p.heldOut[u], (j) => hasItem(p.interactions, u, j)));
  }
  return recommendStats(ranks, k);
}

/** A local-only model: BPR on one node's users alone, rounds x localEpochs epochs, evaluated on that node's users. */
export function localOnlyStats(config: StudyConfig, data: RecommendData): RecommendStats {
  const m = createRecommendModel(config);
  if (config.task.kind !== 'recommend') throw new Error('not a recommend study');
  m.userFactors = initialUserFactors(data.users.length, m.factors, config.seed);
  const epochs = config.rounds * config.training.localEpochs;
  trainBpr(m, data.interactions, { epochs, learningRate: config.training.learningRate, regularization: config.task.regularization, seed: config.training.seed });
  return recommendStats(heldOutRanks(m, data.interactions, data.heldOut), config.task.k);
}

export async function runRecommendDemo(options: RecommendDemoOptions = {}): Promise<RecommendDemoResult> {
  const started = performance.now();
  const say = (line: string) => (options.progress ?? (options.json ? process.stderr : process.stdout)).write(`${line}\n`);
  const problem = recommendDemoFlagProblem(options);
  if (problem) throw new Error(problem);
  const plan = planRecommendDemo(options);
  const dp = recommendDemoPrivacy(options, options.rounds ?? DEFAULTS.rounds, usersPerPart(plan));
  const input: StudyConfigInput = { ...recommendStudyConfig(plan, options), ...(dp ? { privacy: dp.privacy } : {}) };
  const config = StudyConfig.parse(input);
  if (config.task.kind !== 'recommend') throw new Error('not a recommend study');
  const k = config.task.k;
  const outDir = prepareDemoOut(options.out);
  const columns = [plan.user, plan.item, ...(plan.timestamp ? [plan.timestamp] : [])].map((c) => plan.table.header.indexOf(c));
  const header = columns.map((c) => plan.table.header[c]);
  for (const p of plan.parts) {
    mkdirSync(join(outDir, 'nodes', p.name), { recursive: true });
    writeCsvTable(join(outDir, 'nodes', p.name, 'data.csv'), header, p.rows.map((r) => columns.map((c) => r[c] ?? '')));
  }
  const fed = await runFederation<{ validationRecallAtK: number | null }>({
    studyConfig: input,
    outDir,
    databaseUrl: options.databaseUrl,
    say,
    // Under DP the personalized evaluation would be one more noised release on the ledger: off.
    nodeFlags: options.personalize === false || dp ? [] : ['--personalize'],
    nodes: plan.parts.map((p) => ({ name: p.name, dataFile: join(outDir, 'nodes', p.name, 'data.csv'), rows: p.rows.length, values: [p.name] })),
    intro: [
      `  ${config.rounds} rounds of BPR matrix factorization (${config.task.factors} factors, ${'vocabulary' in config.task.items ? `${config.task.items.vocabulary.length} items` : `${config.task.items.hashBuckets} item buckets`}); user factors stay on each node`,
      ...(dp ? [`  user-level DP-SGD on every node: noise multiplier ${dp.privacy.dpSgd!.noiseMultiplier.toFixed(3)}, users sampled at ${dp.privacy.dpSgd!.samplingRate}, clip ${dp.privacy.dpSgd!.clipNorm}; noised evaluation z ${dp.privacy.evaluation!.noiseMultiplier.toFixed(2)}; epsilon ${dp.plannedEpsilon.toFixed(2)} per node (delta ${dp.privacy.delta})`] : []),
    ],
    roundMetrics: (m) => ({ text: `federated val recall@${k} ${fmt(m?.recallAtK)}  NDCG@${k} ${fmt(m?.ndcgAtK)}`, fields: { validationRecallAtK: m?.recallAtK ?? null } }),
  });
  const last = (fed.lastRound ?? {}) as { validationMetrics?: Record<string, number | null> | null; personalizedMetrics?: Record<string, number | null> | null };
  const parts = nodeData(plan, config);
  const numItems = createRecommendModel(config).numItems;
  const popularity = poolRecommend([popularityStats(parts, numItems, k)]);
  const localOnly = options.localBaseline === false ? [] : plan.parts.map((p, i) => ({ node: p.name, ...pick(poolRecommend([localOnlyStats(config, parts[i])])) }));
  const mean = (f: (l: (typeof localOnly)[number]) => number | null) => (localOnly.length > 0 && localOnly.every((l) => f(l) !== null) ? localOnly.reduce((s, l) => s + f(l)!, 0) / localOnly.length : null);
  const modelDir = join(outDir, 'model');
  mkdirSync(modelDir, { recursive: true });
  writeFileSync(join(modelDir, 'model.fmw'), encodeWeights(fed.weights));
  writeFileSync(join(modelDir, 'study.json'), JSON.stringify(fed.status.config, null, 2));
  const result: RecommendDemoResult = {
    task: 'recommend',
    studyId: fed.studyId,
    nodes: plan.parts.length,
    rounds: config.rounds,
    k,
    globalRecallAtK: last.validationMetrics?.recallAtK ?? null,
    globalNdcgAtK: last.validationMetrics?.ndcgAtK ?? null,
    popularityRecallAtK: popularity.recallAtK,
    popularityNdcgAtK: popularity.ndcgAtK,
    meanLocalOnlyRecallAtK: mean((l) => l.recallAtK),
    meanLocalOnlyNdcgAtK: mean((l) => l.ndcgAtK),
    localOnly,
    personalizedRecallAtK: last.personalizedMetrics?.recallAtK ?? null,
    personalizedNdcgAtK: last.personalizedMetrics?.ndcgAtK ?? null,
    privacy: dp
      ? {
          unit: 'user',
          targetEpsilon: options.dpSgdEpsilon ?? 3,
          plannedEpsilon: dp.plannedEpsilon,
          delta: dp.privacy.delta,
          noiseMultiplier: dp.privacy.dpSgd!.noiseMultiplier,
          samplingRate: dp.privacy.dpSgd!.samplingRate,
          evaluationNoiseMultiplier: dp.privacy.evaluation!.noiseMultiplier,
          dpSgdEpsilonSpentMax: fed.privacyReport ? Math.max(0, ...fed.privacyReport.nodes.map((n) => n.dpSgd?.epsilonTotal ?? 0)) : null,
        }
      : null,
    modelDir: resolve(modelDir),
    seconds: Math.round((performance.now() - started) / 100) / 10,
    auditVerified: fed.audit.ok,
  };
  printTable(result, say);
  say(`model for \`fedmark recommend --model ${result.modelDir} --user-history FILE\` written (item factors + study config)`);
  say(auditLine(fed.audit));
  writeFileSync(join(outDir, 'summary.json'), JSON.stringify(result, null, 2));
  if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return result;
}

const pick = (m: Record<string, number | null>) => ({ users: m.users ?? 0, recallAtK: m.recallAtK, ndcgAtK: m.ndcgAtK });

function printTable(r: RecommendDemoResult, say: (line: string) => void): void {
  const row = (name: string, recall: number | null, ndcg: number | null, note = '') => say(`  ${name.padEnd(28)} ${fmt(recall).padStart(10)} ${fmt(ndcg).padStart(10)}  ${note}`);
  say('');
  say(`  ${'model'.padEnd(28)} ${`recall@${r.k}`.padStart(10)} ${`NDCG@${r.k}`.padStart(10)}`);
  row(r.privacy ? 'global (federated, DP)' : 'global (federated)', r.globalRecallAtK, r.globalNdcgAtK, r.privacy ? `noised per-user counts; user-level epsilon ${r.privacy.plannedEpsilon.toFixed(2)} per node` : "every node's held-out items");
  row('popularity baseline', r.popularityRecallAtK, r.popularityNdcgAtK, 'item counts of all training interactions');
  for (const l of r.localOnly) row(`local-only ${l.node}`, l.recallAtK, l.ndcgAtK, `trained and evaluated on ${l.node}'s ${l.users} users only`);
  row('mean local-only', r.meanLocalOnlyRecallAtK, r.meanLocalOnlyNdcgAtK);
  if (r.personalizedRecallAtK !== null) row('personalized (fine-tuned)', r.personalizedRecallAtK, r.personalizedNdcgAtK, 'each node fine-tunes the global model');
  say('');
}
