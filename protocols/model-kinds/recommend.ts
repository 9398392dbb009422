import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { TensorSpec } from '../tensors.ts';

/**
 * Recommendation (issue 9 section 2), the pure half: the study's task, the tensors (item factors
 * and biases shared; user factors node-local), the item vocabulary, and the ranking metrics pooled
 * from counts. The node's half (matrix factorization on typed arrays) is models/kinds/recommend.ts.
 */

/**
 * The study's item vocabulary: declared (the item ids, in order: item i is row i of the factors),
 * or hashed into a fixed number of buckets (itemBucket: SHA-256, stated below). It belongs to the
 * study, never to one node's data: every node maps its items to the same rows.
 */
export const ItemVocabulary = z.union([
  z.strictObject({ vocabulary: z.array(z.string().min(1).max(200)).min(2).max(200_000).refine((v) => new Set(v).size === v.length, { message: 'items.vocabulary lists an item twice' }) }),
  z.strictObject({ hashBuckets: z.number().int().min(2).max(1_000_000) }),
]);
export type ItemVocabulary = z.infer<typeof ItemVocabulary>;

const column = z.string().min(1).max(200);

/** task: { kind: 'recommend', ... } (README, "Recommendation"). */
export const RecommendTask = z.strictObject({
  kind: z.literal('recommend'),
  /** The column holding the user id (never leaves the node; user factors are node-local). */
  user: column,
  /** The column holding the item id, mapped to the study's items. */
  item: column,
  /** Optional implicit-feedback weight (quantity, spend): repeats and weights add confidence. */
  weight: column.optional(),
  /** Optional time column (ISO date or number): the held-out interaction is each user's latest. */
  timestamp: column.optional(),
  items: ItemVocabulary,
  /** Latent dimension d of the factors. */
  factors: z.number().int().min(1).max(256).default(16),
  /** Cutoff of recall@k and NDCG@k. */
  k: z.number().int().min(1).max(1000).default(10),
  /** L2 regularization of the BPR objective (Rendle et al. 2009, lambda). */
  regularization: z.number().nonnegative().max(10).default(0.01),
  /** BPR fold-in epochs of the user vectors against each received global model (users only). */
  foldInEpochs: z.number().int().min(0).max(100).default(5),
});
export type RecommendTask = z.infer<typeof RecommendTask>;

/** The study's shared tensors: item factors [items, d] and item biases [items]. */
export const ITEM_FACTORS = 'item_factors';
export const ITEM_BIAS = 'item_bias';
/** Trained and kept on the node: one row per local user. Never sent, never aggregated. */
export const USER_FACTORS = 'user_factors';
export const RECOMMEND_NODE_LOCAL_TENSORS: readonly string[] = [USER_FACTORS];

export function numItems(task: Pick<RecommendTask, 'items'>): number {
  return 'vocabulary' in task.items ? task.items.vocabulary.length : task.items.hashBuckets;
}

/** The tensors the coordinator knows (and initializes): the shared ones only; user factors have a node-local shape. */
export function recommendTensorSpecs(task: RecommendTask): TensorSpec[] {
  const items = numItems(task);
  return [
    { name: ITEM_FACTORS, shape: [items, task.factors] },
    { name: ITEM_BIAS, shape: [items] },
  ];
}

/** Every tensor except the node-local ones (user factors). */
export function recommendSharedTensors(specs: TensorSpec[]): TensorSpec[] {
  return specs.filter((s) => !RECOMMEND_NODE_LOCAL_TENSORS.includes(s.name));
}

/**
 * The item's row: its index in a declared vocabulary (-1: not in it, the row is skipped and
 * counted), or its hash bucket: the first 4 bytes of SHA-256("fedmark/item/v1\0" + id), read
 * big-endian, modulo hashBuckets. Ids are trimmed first.
 */
export function itemIndexer(items: ItemVocabulary): (id: string) => number {
  if ('vocabulary' in items) {
    const index = new Map(items.vocabulary.map((v, i) => [v, i] as const));
    return (id) => index.get(id.trim()) ?? -1;
  }
  const buckets = items.hashBuckets;
  return (id) => createHash('sha256').update(`fedmark/item/v1\0${id.trim()}`).digest().readUInt32BE(0) % buckets;
}

/** An item row's display name: the vocabulary's id, or `bucket:<i>` for hashed items. */
export function itemName(items: ItemVocabulary, index: number): string {
  return 'vocabulary' in items ? items.vocabulary[index] : `bucket:${index}`;
}

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/**
 * A node's ranking statistics on its held-out interactions (one per user with a held-out item):
 * users evaluated, hits (held-out item ranked in the top k among the items the user did not
 * train on), and the sum over hits of 1 / log2(rank + 1) (rank 1-based). With one relevant item
 * per user the ideal DCG is 1, so NDCG@k = ndcgSum / users and recall@k = hits / users
 * (He et al. 2017, "Neural Collaborative Filtering", leave-one-out protocol). Counts pool exactly.
 */
export const RecommendStats = z
  .strictObject({ kind: z.literal('recommend'), k: z.number().int().min(1).max(1000), users: count, hits: count, ndcgSum: z.number().finite().nonnegative() })
  .refine((s) => s.hits <= s.users && s.ndcgSum <= s.hits + 1e-9, { message: 'hits must be <= users and ndcgSum <= hits' });
export type RecommendStats = z.infer<typeof RecommendStats>;

/** One user's contribution: the held-out item's 1-based rank among the candidates. */
export function rankContribution(rank: number, k: number): { hit: number; ndcg: number } {
  return rank >= 1 && rank <= k ? { hit: 1, ndcg: 1 / Math.log2(rank + 1) } : { hit: 0, ndcg: 0 };
}

/** Ranks (1-based) of each user's held-out item -> the node's statistics. */
export function recommendStats(ranks: ArrayLike<number>, k: number): RecommendStats {
  let hits = 0;
  let ndcgSum = 0;
  for (let u = 0; u < ranks.length; u++) {
    const c = rankContribution(ranks[u], k);
    hits += c.hit;
    ndcgSum += c.ndcg;
  }
  return { kind: 'recommend', k, users: ranks.length, hits, ndcgSum };
}

/** recall@k = sum hits / sum users, NDCG@k = sum ndcgSum / sum users over every node's report. */
export function poolRecommend(reports: RecommendStats[]): Record<string, number | null> {
  const k = reports[0]?.k ?? null;
  if (reports.some((r) => r.k !== k)) throw new Error('cannot pool recommend reports of different k');
  const users = reports.reduce((s, r) => s + r.users, 0);
  const hits = reports.reduce((s, r) => s + r.hits, 0);
  const ndcg = reports.reduce((s, r) => s + r.ndcgSum, 0);
  return { recallAtK: users > 0 ? hits / users : null, ndcgAtK: users > 0 ? ndcg / users : null, k, users, n: users };
}

/**
 * What a recommend study's other fields must be (StudyConfig refines with these: a 400 naming the
 * field at creation). StudyConfig requires `model` and `features`; a recommend study's model is
 * matrix factorization fixed by the task (factors, items), so `model` must be `{ kind: 'linear' }`
 * (a score linear in the item factors given the user vector; no dense network is built), and its
 * feature spec names the columns it reads: the target is the item column, the features are the
 * user column (and the weight / timestamp columns, when given), whatever their encodings (they are
 * not one-hot encoded: recommendStudyFeatures builds the canonical spec).
 */
export function recommendStudyProblems(study: {
  task: { kind: string };
  model: { kind: string };
  features: { target: { column: string }; features: Array<{ name: string }> };
}): Array<{ path: Array<string | number>; message: string }> {
  if (study.task.kind !== 'recommend') return [];
  const task = study.task as RecommendTask;
  const problems: Array<{ path: Array<string | number>; message: string }> = [];
  if (study.model.kind !== 'linear') problems.push({ path: ['model', 'kind'], message: `a recommend study's model is matrix factorization (task.factors, task.items); set model to { kind: "linear" } (got "${study.model.kind}")` });
  if (study.features.target.column !== task.item) problems.push({ path: ['features', 'target', 'column'], message: `a recommend study's features.target.column must be its item column task.item "${task.item}" (got "${study.features.target.column}")` });
  const allowed = new Set([task.user, task.weight, task.timestamp].filter((c): c is string => c !== undefined));
  study.features.features.forEach((f, i) => {
    if (!allowed.has(f.name)) problems.push({ path: ['features', 'features', i, 'name'], message: `a recommend study reads only its user, weight and timestamp columns (${[...allowed].join(', ')}); feature "${f.name}" is none of them` });
  });
  if (!study.features.features.some((f) => f.name === task.user)) problems.push({ path: ['features', 'features'], message: `a recommend study's features must name its user column task.user "${task.user}"` });
  // Under DP (privacy.dpSgd and/or privacy.central) a recommend study runs: DP-SGD is USER-level
  // (models/mf.ts trainBprUserDp: samplingRate samples users, a user's whole gradient is clipped),
  // central DP clips and noises each node's shared item tensors, and evaluations are the noised
  // user-level sums of protocols/privacy/noised-recommend.ts.
  return problems;
}

/** The canonical feature spec of a recommend task (what `study init` and the demo write). */
export function recommendStudyFeatures(task: Pick<RecommendTask, 'user' | 'item'>) {
  return { version: 1 as const, target: { column: task.item, positive: '*' }, features: [{ name: task.user, kind: 'categorical' as const, categories: ['*'] }], missingValues: ['NA'] };
}
