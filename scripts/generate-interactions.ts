/**
 * Generates data/interactions.csv: synthetic implicit-feedback purchases for the recommend kind
 * (issue 9 section 2). One row per purchase: customer, sku, region, ts (ISO date). No real person
 * or product is in it.
 *
 *   node bin/run-ts.js scripts/generate-interactions.ts [--seed S] [--users N] [--out PATH]
 *
 * Defaults: seed 9, 2,400 customers, out data/interactions.csv. Fully deterministic: one mulberry32
 * stream (protocols/random.ts) drawn in a fixed order, so the same options give a byte-identical
 * file (test/data/recommend-interactions.test.ts regenerates and compares).
 *
 * Structure (on purpose; data/README.md has the measured figures):
 * - 600 SKUs in 12 taste clusters of 50 (sku-0001..0050 cluster 0, ...). Within a cluster, item
 *   popularity is Zipf (exponent 1.1, a random permutation per cluster), so a few items carry most
 *   purchases: the long tail.
 * - 4 regions of unequal size (north 35%, south 30%, east 20%, west 15% of customers). Each region
 *   has its own taste mix over the clusters (a Dirichlet-like draw with 4 favoured clusters), so a
 *   region alone sees some clusters rarely: what it cannot learn alone, other regions can teach.
 * - A customer has 1 or 2 taste clusters drawn from the region's mix; 8 to about 40 purchases
 *   (8 + geometric, mean 14). Each purchase: with probability 0.2 a repeat of one of the customer's
 *   earlier items; else with 0.08 one of 6 items popular only in the customer's region (regional
 *   SKUs, drawn from the region's own list); else with 0.8 an item of one of the customer's
 *   clusters (Zipf); else an item from the whole catalogue by global popularity (Zipf over all).
 * - Timestamps: a customer's purchases are days apart (1 + geometric, mean 9), starting on a day in
 *   2025; rows are sorted by customer, then date.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../protocols/random.ts';

export interface InteractionOptions {
  seed: number;
  users: number;
}

export const DEFAULT_INTERACTIONS: InteractionOptions = { seed: 9, users: 2400 };
const CLUSTERS = 12;
const PER_CLUSTER = 50;
const ITEMS = CLUSTERS * PER_CLUSTER;
const REGIONS = [
  { name: 'north', share: 0.35 },
  { name: 'south', share: 0.3 },
  { name: 'east', share: 0.2 },
  { name: 'west', share: 0.15 },
];
const REGIONAL_ITEMS = 6;

const sku = (i: number) => `sku-${String(i + 1).padStart(4, '0')}`;

/** Cumulative Zipf weights 1 / rank^s over n ranks (for sampling by binary search). */
function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let r = 0; r < n; r++) cdf[r] = total += 1 / (r + 1) ** s;
  for (let r = 0; r < n; r++) cdf[r] /= total;
  return cdf;
}

function drawCdf(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function permutation(n: number, random: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

const geometric = (mean: number, random: () => number) => Math.floor(Math.log(1 - random()) / Math.log(1 - 1 / (mean + 1)));

/** The CSV text (header and rows, '\n' line ends). */
export function generateInteractions(options: InteractionOptions = DEFAULT_INTERACTIONS): string {
  const random = mulberry32(options.seed);
  const clusterZipf = zipfCdf(PER_CLUSTER, 1.1);
  const clusterOrder = Array.from({ length: CLUSTERS }, () => permutation(PER_CLUSTER, random));
  const globalZipf = zipfCdf(ITEMS, 1.0);
  const globalOrder = permutation(ITEMS, random);
  // Each region: a taste mix over clusters (4 favoured clusters weigh 6x) and its own regional SKUs.
  const taken = new Set<number>();
  const regions = REGIONS.map((region) => {
    const favoured = new Set(permutation(CLUSTERS, random).slice(0, 4));
    const weights = Array.from({ length: CLUSTERS }, (_, c) => (favoured.has(c) ? 6 : 1) * (0.5 + random()));
    const mix = zipfLikeCdf(weights);
    const local: number[] = [];
    while (local.length < REGIONAL_ITEMS) {
      const item = Math.floor(random() * ITEMS);
      if (!taken.has(item)) taken.add(item), local.push(item);
    }
    return { ...region, mix, local };
  });
  const regionCdf = zipfLikeCdf(REGIONS.map((r) => r.share));
  const lines = ['customer,sku,region,ts'];
  const start = Date.UTC(2025, 0, 1);
  for (let c = 0; c < options.users; c++) {
    const region = regions[drawCdf(regionCdf, random())];
    const tastes = [drawCdf(region.mix, random())];
    if (random() < 0.5) tastes.push(drawCdf(region.mix, random()));
    const purchases = 8 + geometric(6, random);
    let day = Math.floor(random() * 200);
    const bought: number[] = [];
    for (let k = 0; k < purchases; k++) {
      const item = nextItem(random, bought, region.local, tastes, clusterOrder, clusterZipf, globalOrder, globalZipf);
      bought.push(item);
      lines.push(`c${String(c + 1).padStart(5, '0')},${sku(item)},${region.name},${new Date(start + day * 86_400_000).toISOString().slice(0, 10)}`);
      day += 1 + geometric(8, random);
    }
  }
  return `${lines.join('\n')}\n`;
}

function nextItem(random: () => number, bought: number[], local: number[], tastes: number[], clusterOrder: number[][], clusterZipf: Float64Array, globalOrder: number[], globalZipf: Float64Array): number {
  if (bought.length > 0 && random() < 0.2) return bought[Math.floor(random() * bought.length)];
  if (random() < 0.08) return local[Math.floor(random() * local.length)];
  if (random() < 0.8) {
    const cluster = tastes[Math.floor(random() * tastes.length)];
    return cluster * PER_CLUSTER + clusterOrder[cluster][drawCdf(clusterZipf, random())];
  }
  return globalOrder[drawCdf(globalZipf, random())];
}

function zipfLikeCdf(weights: number[]): Float64Array {
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf = new Float64Array(weights.length);
  let acc = 0;
  weights.forEach((w, i) => (cdf[i] = acc += w / total));
  cdf[cdf.length - 1] = 1;
  return cdf;
}

/** The SKU vocabulary the data uses (the study's declared items, in row order). */
export function interactionItems(): string[] {
  return Array.from({ length: ITEMS }, (_, i) => sku(i));
}

function main(argv: string[]) {
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const seed = Number(arg('--seed') ?? DEFAULT_INTERACTIONS.seed);
  const users = Number(arg('--users') ?? DEFAULT_INTERACTIONS.users);
  if (!Number.isInteger(seed) || seed < 0) throw new Error('--seed must be a non-negative integer');
  if (!Number.isInteger(users) || users < 1) throw new Error('--users must be a positive integer');
  const out = arg('--out') ?? fileURLToPath(new URL('../data/interactions.csv', import.meta.url));
  const text = generateInteractions({ seed, users });
  writeFileSync(out, text);
  process.stderr.write(`${out}: ${text.split('\n').length - 2} interactions of ${users} customers (seed ${seed})\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main(process.argv.slice(2));
