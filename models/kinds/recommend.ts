import { createHash } from 'node:crypto';
import type { KindModel } from '../dense-ops.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { initialWeights } from '../../protocols/model-spec.ts';
import { ITEM_BIAS, ITEM_FACTORS, numItems, recommendStats, recommendTensorSpecs, USER_FACTORS, type RecommendStats, type RecommendTask } from '../../protocols/model-kinds/recommend.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { EncodedData } from '../encode.ts';
import { foldInUsers, heldOutRanks, initialUserFactors, trainBpr, trainBprUserDp, type Interactions, type MfModel } from '../mf.ts';
import { dpSgdStepsPerRound } from '../../protocols/privacy/study-privacy.ts';
import type { EvaluationNoise, KindTrainResult, NodeModelKind, TrainArgs } from './kind.ts';
import { noisedRecommendEvaluation, type NoisedRecommendStats } from '../../protocols/privacy/noised-recommend.ts';

/**
 * The recommend kind, the node's half: matrix factorization trained with BPR (models/mf.ts). The
 * model object is an MfModel (not a TensorFlow model): item factors and biases are the study's
 * shared tensors; user factors are node-local, one row per local user, and never leave the node
 * (the release step keeps only the kind's shared tensors: protocols/model-kinds/recommend.ts).
 *
 * User factors are re-solved by fold-in each time a global model arrives: BPR epochs on the user
 * rows alone against the fixed global items (task.foldInEpochs), warm-started from the rows this
 * node process holds in memory from the last round (seeded random rows after a restart). They are
 * not written to disk: fold-in recovers them from the data and the global items.
 */

/** A node's interactions for the recommend kind: what data-recommend.ts reads. */
export interface RecommendData {
  /** Local user ids, index = user row (stay on the node). */
  users: string[];
  /** Training interactions (the held-out item of each user excluded). */
  interactions: Interactions;
  /** Per user: the held-out item (the latest interaction's item), or -1 (fewer than 2 distinct items). */
  heldOut: Int32Array;
}

/** EncodedData of a recommend study: no dense rows (x is empty), the interactions beside. */
export type RecommendEncoded = EncodedData & { recommend: RecommendData };

export function recommendDataOf(data: EncodedData): RecommendData {
  const r = (data as Partial<RecommendEncoded>).recommend;
  if (!r) throw new Error('the recommend kind needs interactions (client-node/data-recommend.ts), not encoded rows');
  return r;
}

/** The node's model object: the factors and the user ids its user rows belong to. */
export interface RecommendModel extends MfModel {
  task: RecommendTask;
  seed: number;
  userIds: string[];
}

export function taskOf(study: StudyConfig): RecommendTask {
  if (study.task.kind !== 'recommend') throw new Error(`recommendKind: study "${study.name}" has task.kind "${study.task.kind}"`);
  return study.task;
}

/** A new model with the study's round-0 items (the coordinator's initialWeights, same seed) and no users yet. */
export function createRecommendModel(study: StudyConfig): RecommendModel {
  const task = taskOf(study);
  const [factors, bias] = initialWeights(recommendTensorSpecs(task), study.seed);
  return { task, seed: study.seed, numItems: numItems(task), factors: task.factors, itemFactors: Float32Array.from(factors.values), itemBias: Float32Array.from(bias.values), userFactors: new Float32Array(0), userIds: [] };
}

/** A user's starting row: seeded by the study seed and the user id (the same on every restart). */
function userSeed(seed: number, id: string): number {
  return createHash('sha256').update(`fedmark/user/v1\0${seed}\0${id}`).digest().readUInt32BE(0);
}

/** Makes the model's user rows those of `data`'s users (kept rows reused, new users seeded). */
export function alignUsers(m: RecommendModel, users: string[]): void {
  if (m.userIds.length === users.length && m.userIds.every((u, i) => u === users[i])) return;
  const d = m.factors;
  const old = new Map(m.userIds.map((u, i) => [u, i] as const));
  const next = new Float32Array(users.length * d);
  users.forEach((id, u) => {
    const at = old.get(id);
    next.set(at !== undefined ? m.userFactors.subarray(at * d, (at + 1) * d) : initialUserFactors(1, d, userSeed(m.seed, id)), u * d);
  });
  m.userFactors = next;
  m.userIds = [...users];
}

/**
 * Fold-in: BPR epochs on the user rows only, the (global) items fixed, each user with a random
 * stream of their own (seeded by `seed` and their id: models/mf.ts foldInUsers), so no user's row
 * depends on another user's data (user-level DP, protocols/privacy/noised-recommend.ts).
 */
export function foldIn(m: RecommendModel, data: RecommendData, learningRate: number, seed: number, epochs = m.task.foldInEpochs): void {
  alignUsers(m, data.users);
  if (epochs > 0) foldInUsers(m, data.interactions, { epochs, learningRate, regularization: m.task.regularization }, (u) => userSeed(seed, data.users[u]));
}

/** The model's tensors: the shared ones in protocol order, then the node-local user factors. */
export function recommendWeights(m: RecommendModel): WeightSet {
  return [
    { name: ITEM_FACTORS, shape: [m.numItems, m.factors], values: Float32Array.from(m.itemFactors) },
    { name: ITEM_BIAS, shape: [m.numItems], values: Float32Array.from(m.itemBias) },
    { name: USER_FACTORS, shape: [m.userIds.length, m.factors], values: Float32Array.from(m.userFactors) },
  ];
}

/** Loads the shared tensors; user factors in `weights` (none from the coordinator) are ignored: they are this node's own. */
export function loadRecommendWeights(m: RecommendModel, weights: WeightSet): void {
  for (const t of weights) {
    if (t.name === ITEM_FACTORS) {
      if (t.values.length !== m.itemFactors.length) throw new Error(`${ITEM_FACTORS} has ${t.values.length} values, the study's model ${m.itemFactors.length}`);
      m.itemFactors.set(t.values);
    } else if (t.name === ITEM_BIAS) {
      if (t.values.length !== m.itemBias.length) throw new Error(`${ITEM_BIAS} has ${t.values.length} values, the study's model ${m.itemBias.length}`);
      m.itemBias.set(t.values);
    }
  }
}

const asModel = (model: KindModel) => model as unknown as RecommendModel;

/** Local training: fold-in against the global items, then BPR epochs (or user-level DP-SGD). */
export function trainRecommend(m: RecommendModel, data: RecommendData, args: TrainArgs): KindTrainResult {
  const { learningRate, localEpochs } = args.instructions;
  foldIn(m, data, learningRate, args.seed ^ 0x9e37);
  const rows = data.interactions.items.length;
  if (args.dpSgd) {
    const dp = args.dpSgd;
    const r = trainBprUserDp(m, data.interactions, { noiseMultiplier: dp.noiseMultiplier, clipNorm: dp.clipNorm, samplingRate: dp.samplingRate, steps: dpSgdStepsPerRound(dp), learningRate: dp.learningRate, expectedBatchSize: dp.expectedBatchSize ?? args.study.training.batchSize, regularization: m.task.regularization });
    return { loss: r.loss, numExamples: rows, steps: r.steps, clippedFraction: r.clippedFraction };
  }
  const mu = args.instructions.proximalMu ?? 0;
  const global = mu > 0 ? { mu, itemFactors: Float32Array.from(args.global.find((t) => t.name === ITEM_FACTORS)!.values), itemBias: Float32Array.from(args.global.find((t) => t.name === ITEM_BIAS)!.values) } : undefined;
  const r = trainBpr(m, data.interactions, { epochs: localEpochs, learningRate, regularization: m.task.regularization, seed: args.seed, ...(global ? { proximal: global } : {}) });
  return { loss: r.loss, numExamples: Math.max(1, rows), steps: r.steps };
}

/**
 * recall@k / NDCG@k counts of the model on the held-out items, after fold-in of the users; under
 * DP (`dp`: the study's privacy.evaluation) the user-level noised sums (noised-recommend.ts),
 * the node's ledger charged by the caller (client-node/train.ts evaluate).
 */
export function evaluateRecommend(m: RecommendModel, data: RecommendData, learningRate: number, dp?: EvaluationNoise): RecommendStats | NoisedRecommendStats {
  foldIn(m, data, learningRate, m.seed ^ 0x51ed);
  const ranks = heldOutRanks(m, data.interactions, data.heldOut);
  return dp ? noisedRecommendEvaluation(ranks, m.task.k, dp) : recommendStats(ranks, m.task.k);
}

/** The node half of `recommend` (registered in models/kinds/index.ts). */
export function recommendKind(study: StudyConfig): NodeModelKind {
  taskOf(study);
  return {
    name: 'recommend',
    createModel: (s) => createRecommendModel(s) as unknown as KindModel,
    getWeights: (model) => recommendWeights(asModel(model)),
    setWeights: (model, weights) => loadRecommendWeights(asModel(model), weights),
    train: async (model, data, args) => trainRecommend(asModel(model), recommendDataOf(data), args),
    evaluate(model, data, dp) {
      return { loss: Number.NaN, stats: evaluateRecommend(asModel(model), recommendDataOf(data), study.training.learningRate, dp) };
    },
  };
}
