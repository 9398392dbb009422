import { randomBytes } from 'node:crypto';
import { GaussianNoise } from '../protocols/privacy/gaussian-noise.ts';
import { mulberry32 } from '../protocols/random.ts';

/**
 * Matrix factorization for implicit feedback, trained with BPR (Rendle, Freudenthaler, Gantner,
 * Schmidt-Thieme 2009, "BPR: Bayesian Personalized Ranking from Implicit Feedback"): for a user u,
 * an item i the user interacted with and a sampled item j they did not, maximize
 * ln sigma(x_uij), x_uij = (b_i + p_u . q_i) - (b_j + p_u . q_j), with L2 regularization lambda.
 * An observed pair's summed weight w (repeat purchases, quantities) scales its term by the
 * confidence c = 1 + ln(w) (the log confidence of Hu, Koren, Volinsky 2008, "Collaborative
 * Filtering for Implicit Feedback Datasets"), so a repeat counts more without dominating.
 *
 * Hand-written on typed arrays, not TensorFlow.js: every SGD step touches three rows of d floats,
 * and TF.js pays a fixed per-op dispatch cost (tens of microseconds on wasm) that would make one
 * epoch of 50k sparse steps take minutes instead of milliseconds.
 */

/** The factors: item rows shared with the study, user rows node-local. */
export interface MfModel {
  numItems: number;
  factors: number;
  /** [numItems x factors], row-major. */
  itemFactors: Float32Array;
  /** [numItems]. */
  itemBias: Float32Array;
  /** [numUsers x factors], row-major: one row per local user (the data's user index). */
  userFactors: Float32Array;
}

/**
 * A node's interactions, CSR by user: user u's distinct items are items[offsets[u] .. offsets[u+1]),
 * sorted ascending, with their summed weights.
 */
export interface Interactions {
  numUsers: number;
  numItems: number;
  offsets: Int32Array;
  items: Int32Array;
  weights: Float32Array;
}

export interface BprOptions {
  epochs: number;
  learningRate: number;
  regularization: number;
  seed: number;
  /** Update only the user rows (fold-in against fixed items). */
  usersOnly?: boolean;
  /** FedProx: (mu / 2) |q - q_global|^2 on the shared tensors. */
  proximal?: { mu: number; itemFactors: Float32Array; itemBias: Float32Array };
}

/** Interactions from parallel arrays (user, item, weight); repeats of a pair sum their weights. */
export function buildInteractions(numUsers: number, numItems: number, users: ArrayLike<number>, items: ArrayLike<number>, weights?: ArrayLike<number>): Interactions {
  const perUser: Array<Map<number, number>> = Array.from({ length: numUsers }, () => new Map());
  for (let r = 0; r < users.length; r++) {
    const m = perUser[users[r]];
    m.set(items[r], (m.get(items[r]) ?? 0) + (weights ? weights[r] : 1));
  }
  const offsets = new Int32Array(numUsers + 1);
  perUser.forEach((m, u) => (offsets[u + 1] = offsets[u] + m.size));
  const outItems = new Int32Array(offsets[numUsers]);
  const outWeights = new Float32Array(offsets[numUsers]);
  perUser.forEach((m, u) => {
    [...m.keys()].sort((a, b) => a - b).forEach((item, k) => {
      outItems[offsets[u] + k] = item;
      outWeights[offsets[u] + k] = m.get(item)!;
    });
  });
  return { numUsers, numItems, offsets, items: outItems, weights: outWeights };
}

/** Does user u have item i (binary search in the user's sorted row)? */
export function hasItem(data: Interactions, u: number, item: number): boolean {
  let lo = data.offsets[u];
  let hi = data.offsets[u + 1] - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = data.items[mid];
    if (v === item) return true;
    if (v < item) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** A uniformly drawn item the user has not interacted with (-1 when they have every item). */
export function sampleNegative(data: Interactions, u: number, random: () => number): number {
  const seen = data.offsets[u + 1] - data.offsets[u];
  if (seen >= data.numItems) return -1;
  for (;;) {
    const j = Math.floor(random() * data.numItems);
    if (!hasItem(data, u, j)) return j;
  }
}

export const confidence = (w: number) => 1 + Math.log(Math.max(1, w));
const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const softplus = (x: number) => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));

/** x_uij = b_i - b_j + p_u . (q_i - q_j). */
export function bprMargin(m: MfModel, u: number, i: number, j: number): number {
  const d = m.factors;
  let x = m.itemBias[i] - m.itemBias[j];
  for (let f = 0; f < d; f++) x += m.userFactors[u * d + f] * (m.itemFactors[i * d + f] - m.itemFactors[j * d + f]);
  return x;
}

/**
 * One triple's loss: c softplus(-x_uij) + (lambda / 2)(|p_u|^2 + |q_i|^2 + |q_j|^2 + b_i^2 + b_j^2)
 * (softplus(-x) = -ln sigma(x)).
 */
export function bprTripleLoss(m: MfModel, u: number, i: number, j: number, c: number, lambda: number): number {
  const d = m.factors;
  let reg = m.itemBias[i] ** 2 + m.itemBias[j] ** 2;
  for (let f = 0; f < d; f++) reg += m.userFactors[u * d + f] ** 2 + m.itemFactors[i * d + f] ** 2 + m.itemFactors[j * d + f] ** 2;
  return c * softplus(-bprMargin(m, u, i, j)) + (lambda / 2) * reg;
}

/** Gradient of bprTripleLoss: d/dp_u, d/dq_i, d/dq_j (d floats each), d/db_i, d/db_j. */
export interface TripleGradient {
  user: Float64Array;
  itemI: Float64Array;
  itemJ: Float64Array;
  biasI: number;
  biasJ: number;
  loss: number;
}

export function bprTripleGradient(m: MfModel, u: number, i: number, j: number, c: number, lambda: number): TripleGradient {
  const d = m.factors;
  const x = bprMargin(m, u, i, j);
  // d softplus(-x) / dx = -sigma(-x)
  const g = -c * sigmoid(-x);
  const user = new Float64Array(d);
  const itemI = new Float64Array(d);
  const itemJ = new Float64Array(d);
  for (let f = 0; f < d; f++) {
    const p = m.userFactors[u * d + f];
    const qi = m.itemFactors[i * d + f];
    const qj = m.itemFactors[j * d + f];
    user[f] = g * (qi - qj) + lambda * p;
    itemI[f] = g * p + lambda * qi;
    itemJ[f] = -g * p + lambda * qj;
  }
  return { user, itemI, itemJ, biasI: g + lambda * m.itemBias[i], biasJ: -g + lambda * m.itemBias[j], loss: bprTripleLoss(m, u, i, j, c, lambda) };
}

/**
 * Plain (non-private) BPR-SGD: `epochs` passes, each visiting every observed (user, item) pair
 * once in a seeded random order with one uniformly sampled negative. Returns the mean triple loss
 * of the last epoch.
 */
export function trainBpr(m: MfModel, data: Interactions, o: BprOptions): { loss: number; steps: number } {
  const random = mulberry32(o.seed);
  const pairs = data.items.length;
  const order = new Int32Array(pairs);
  const pairUser = new Int32Array(pairs);
  for (let u = 0; u < data.numUsers; u++) pairUser.fill(u, data.offsets[u], data.offsets[u + 1]);
  let loss = 0;
  let steps = 0;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    for (let k = 0; k < pairs; k++) order[k] = k;
    for (let k = pairs - 1; k > 0; k--) {
      const r = Math.floor(random() * (k + 1));
      const t = order[k];
      order[k] = order[r];
      order[r] = t;
    }
    loss = 0;
    for (let k = 0; k < pairs; k++) {
      const pair = order[k];
      const u = pairUser[pair];
      const j = sampleNegative(data, u, random);
      if (j < 0) continue;
      loss += sgdStep(m, u, data.items[pair], j, confidence(data.weights[pair]), o);
      steps++;
    }
    loss = pairs > 0 ? loss / pairs : 0;
  }
  return { loss, steps };
}

/**
 * Fold-in, one user at a time: `epochs` passes over user u's own items (seeded shuffle, one
 * uniformly sampled negative each) updating user u's row only, the items fixed. Each user has
 * their own random stream, seeded by seedOf(u) (the kind seeds it from the user's id), so a
 * user's row is a function of their own interactions and the items alone: adding or removing
 * one user changes no other user's row, which the user-level DP evaluation relies on
 * (protocols/privacy/noised-recommend.ts). trainBpr with usersOnly shares one stream and one
 * shuffle across users, so one user's presence would shift every other user's draws.
 */
export function foldInUsers(m: MfModel, data: Interactions, o: { epochs: number; learningRate: number; regularization: number }, seedOf: (u: number) => number): { loss: number; steps: number } {
  const step: BprOptions = { ...o, seed: 0, usersOnly: true };
  let loss = 0;
  let steps = 0;
  const order: number[] = [];
  for (let u = 0; u < data.numUsers; u++) {
    const random = mulberry32(seedOf(u));
    const start = data.offsets[u];
    const count = data.offsets[u + 1] - start;
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      order.length = 0;
      for (let k = 0; k < count; k++) order.push(start + k);
      for (let k = count - 1; k > 0; k--) {
        const r = Math.floor(random() * (k + 1));
        [order[k], order[r]] = [order[r], order[k]];
      }
      for (const pair of order) {
        const j = sampleNegative(data, u, random);
        if (j < 0) continue;
        const l = sgdStep(m, u, data.items[pair], j, confidence(data.weights[pair]), step);
        if (epoch === o.epochs - 1) loss += l;
        steps++;
      }
    }
  }
  return { loss: data.items.length > 0 ? loss / data.items.length : 0, steps };
}

/**
 * One SGD step on one triple (the gradient of bprTripleGradient, computed in place: no allocation
 * in the hot loop); returns the triple's loss before the step.
 */
function sgdStep(m: MfModel, u: number, i: number, j: number, c: number, o: BprOptions): number {
  const d = m.factors;
  const U = m.userFactors;
  const Q = m.itemFactors;
  const lambda = o.regularization;
  const lr = o.learningRate;
  const pu = u * d;
  const qi = i * d;
  const qj = j * d;
  let x = m.itemBias[i] - m.itemBias[j];
  let reg = m.itemBias[i] ** 2 + m.itemBias[j] ** 2;
  for (let f = 0; f < d; f++) {
    x += U[pu + f] * (Q[qi + f] - Q[qj + f]);
    reg += U[pu + f] ** 2 + Q[qi + f] ** 2 + Q[qj + f] ** 2;
  }
  const loss = c * softplus(-x) + (lambda / 2) * reg;
  const g = -c * sigmoid(-x);
  const mu = o.usersOnly ? 0 : (o.proximal?.mu ?? 0);
  for (let f = 0; f < d; f++) {
    const p = U[pu + f];
    const a = Q[qi + f];
    const b = Q[qj + f];
    U[pu + f] = p - lr * (g * (a - b) + lambda * p);
    if (o.usersOnly) continue;
    Q[qi + f] = a - lr * (g * p + lambda * a + (mu > 0 ? mu * (a - o.proximal!.itemFactors[qi + f]) : 0));
    Q[qj + f] = b - lr * (-g * p + lambda * b + (mu > 0 ? mu * (b - o.proximal!.itemFactors[qj + f]) : 0));
  }
  if (o.usersOnly) return loss;
  const bi = m.itemBias[i];
  const bj = m.itemBias[j];
  m.itemBias[i] = bi - lr * (g + lambda * bi + (mu > 0 ? mu * (bi - o.proximal!.itemBias[i]) : 0));
  m.itemBias[j] = bj - lr * (-g + lambda * bj + (mu > 0 ? mu * (bj - o.proximal!.itemBias[j]) : 0));
  return loss;
}

/**
 * Scores of every item for user vector p: b_j + p . q_j.
 */
export function scoreItems(m: MfModel, p: ArrayLike<number>, out = new Float64Array(m.numItems)): Float64Array {
  const d = m.factors;
  for (let j = 0; j < m.numItems; j++) {
    let s = m.itemBias[j];
    for (let f = 0; f < d; f++) s += p[f] * m.itemFactors[j * d + f];
    out[j] = s;
  }
  return out;
}

/**
 * The 1-based rank of `target` among the items the user did not train on (their training items
 * are excluded; the target is not one of them). Ties count against the target (a constant model
 * ranks nothing first), so an untrained model cannot score hits by tie order.
 */
export function rankOf(scores: ArrayLike<number>, target: number, exclude: (item: number) => boolean): number {
  const s = scores[target];
  let rank = 1;
  for (let j = 0; j < scores.length; j++) {
    if (j === target || exclude(j)) continue;
    if (scores[j] >= s) rank++;
  }
  return rank;
}

/** Per-user ranks of held-out items (heldOut[u] < 0: the user has none, skipped). */
export function heldOutRanks(m: MfModel, data: Interactions, heldOut: Int32Array): number[] {
  const ranks: number[] = [];
  const scores = new Float64Array(m.numItems);
  for (let u = 0; u < data.numUsers; u++) {
    if (heldOut[u] < 0) continue;
    scoreItems(m, m.userFactors.subarray(u * m.factors, (u + 1) * m.factors), scores);
    ranks.push(rankOf(scores, heldOut[u], (j) => hasItem(data, u, j)));
  }
  return ranks;
}

/** Random user rows, N(0, 0.1^2)-like uniforms, seeded (the users' starting point before fold-in). */
export function initialUserFactors(numUsers: number, factors: number, seed: number): Float32Array {
  const random = mulberry32(seed ^ 0x5bd1e995);
  const out = new Float32Array(numUsers * factors);
  for (let i = 0; i < out.length; i++) out[i] = (random() * 2 - 1) * 0.1;
  return out;
}

export interface UserDpSgd {
  noiseMultiplier: number;
  clipNorm: number;
  samplingRate: number;
  steps: number;
  learningRate: number;
  /** The public denominator of each step's noised sum (never the sampled count). */
  expectedBatchSize: number;
  regularization: number;
}

/**
 * One sampled user's gradient of their whole BPR loss (every observed item, one sampled negative
 * each) on the SHARED tensors, sparse by item row: item -> [d factor grads..., bias grad]. The
 * user's own row is updated in place (it never leaves the node). Returns the triple-loss sum.
 */
export function userSharedGradient(m: MfModel, data: Interactions, u: number, lambda: number, random: () => number, userLr: number): { rows: Map<number, Float64Array>; loss: number } {
  const d = m.factors;
  const rows = new Map<number, Float64Array>();
  const row = (item: number) => {
    let r = rows.get(item);
    if (!r) rows.set(item, (r = new Float64Array(d + 1)));
    return r;
  };
  const userGrad = new Float64Array(d);
  let loss = 0;
  for (let k = data.offsets[u]; k < data.offsets[u + 1]; k++) {
    const i = data.items[k];
    const j = sampleNegative(data, u, random);
    if (j < 0) continue;
    const g = bprTripleGradient(m, u, i, j, confidence(data.weights[k]), lambda);
    loss += g.loss;
    const ri = row(i);
    const rj = row(j);
    for (let f = 0; f < d; f++) {
      ri[f] += g.itemI[f];
      rj[f] += g.itemJ[f];
      userGrad[f] += g.user[f];
    }
    ri[d] += g.biasI;
    rj[d] += g.biasJ;
  }
  for (let f = 0; f < d; f++) m.userFactors[u * d + f] -= userLr * userGrad[f];
  return { rows, loss };
}

/** L2 norm of a sparse gradient (every row, factors and bias). */
export function sparseNorm(rows: Map<number, Float64Array>): number {
  let s = 0;
  for (const r of rows.values()) for (let k = 0; k < r.length; k++) s += r[k] * r[k];
  return Math.sqrt(s);
}

/** Adds min(1, C / |g|) g into the dense sum [items x (d + 1)]; returns whether it was clipped. */
export function addClipped(sum: Float64Array, rows: Map<number, Float64Array>, clipNorm: number, width: number): boolean {
  const norm = sparseNorm(rows);
  const scale = norm > clipNorm ? clipNorm / norm : 1;
  for (const [item, r] of rows) for (let k = 0; k < width; k++) sum[item * width + k] += scale * r[k];
  return scale < 1;
}

/**
 * USER-level DP-SGD on the shared tensors (Abadi et al. 2016 with users as the unit; McMahan,
 * Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent Language Models"): each
 * step Poisson-samples users with rate q (OS CSPRNG), takes each sampled user's gradient of their
 * whole loss (all their interactions) on item factors and biases, clips it to L2 norm C as a whole,
 * sums, adds discrete Gaussian noise of std z C to every coordinate of every item row (touched or
 * not: which rows a user touched is data too), divides by the public expected batch size and steps.
 * Adding or removing one user changes the sum by at most C: the node's ledger charges (q, z, steps)
 * exactly as record-level DP-SGD, with the user as the unit. User rows are updated by plain SGD:
 * they stay on the node and each depends on its own user's data alone.
 */
export function trainBprUserDp(m: MfModel, data: Interactions, dp: UserDpSgd, noise: GaussianNoise = new GaussianNoise(), uniforms: (n: number) => Float64Array = secureUniforms): { loss: number; steps: number; clippedFraction: number; sampledUsers: number } {
  const width = m.factors + 1;
  const dimension = m.numItems * width;
  const std = dp.noiseMultiplier * dp.clipNorm;
  const step = GaussianNoise.gridStep(std, dp.noiseMultiplier, dimension);
  // Negatives only need to be unpredictable to nobody: a seeded source is enough (the sampling of users is secret).
  const random = mulberry32(uniforms(1)[0] * 2 ** 32);
  let loss = 0;
  let sampled = 0;
  let clipped = 0;
  for (let s = 0; s < dp.steps; s++) {
    const sum = new Float64Array(dimension);
    const draw = uniforms(data.numUsers);
    for (let u = 0; u < data.numUsers; u++) {
      if (draw[u] >= dp.samplingRate) continue;
      const g = userSharedGradient(m, data, u, dp.regularization, random, dp.learningRate);
      loss += g.loss;
      sampled++;
      if (addClipped(sum, g.rows, dp.clipNorm, width)) clipped++;
    }
    noise.privatize(sum, step);
    const scale = dp.learningRate / dp.expectedBatchSize;
    for (let item = 0; item < m.numItems; item++) {
      for (let f = 0; f < m.factors; f++) m.itemFactors[item * m.factors + f] -= scale * sum[item * width + f];
      m.itemBias[item] -= scale * sum[item * width + m.factors];
    }
  }
  return { loss: sampled > 0 ? loss / sampled : 0, steps: dp.steps, clippedFraction: sampled > 0 ? clipped / sampled : 0, sampledUsers: sampled };
}

function secureUniforms(n: number): Float64Array {
  const bytes = randomBytes(Math.max(1, n) * 4);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes.readUInt32LE(i * 4) / 4294967296;
  return out;
}
