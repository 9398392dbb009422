/**
 * Generates data/customer_value.csv: a synthetic but marketing-realistic regression table of
 * customer value (issue 8, §5). One row per customer; the target `spend_12m` is the customer's
 * spend over the NEXT 12 months (USD, converted from the region's currency, 2 decimals), the
 * features describe the customer up to the cut-off date. No real person is in it.
 *
 *   node bin/run-ts.js scripts/generate-customer-value.ts [--rows N] [--seed S] [--out PATH]
 *
 * Defaults: 20,000 rows, seed 7, out data/customer_value.csv in this repository.
 * Fully deterministic: every random draw comes from one mulberry32 stream (protocols/random.ts)
 * in a fixed order, numbers are written with toFixed, so the same seed and row count give a
 * byte-identical file (test/data/customer-value.test.ts holds the shipped file to that).
 * A summary of the measured structure goes to stderr (data/README.md quotes it).
 *
 * Columns: customer_id, region, country, age, tenure_months, channel, loyalty_tier,
 * orders_12m_prior, avg_order_value_prior, days_since_last_order, email_engagement,
 * discount_share, returns_rate, consent, spend_12m.
 *
 * Structure (all of it is on purpose; data/README.md gives the measured figures):
 * - Point mass at zero: a customer buys again with probability
 *   sigmoid(region intercept - 0.75 + 1.1 log1p(orders_12m_prior) - min(days_since_last_order, 900)
 *   / 280 + loyalty + 1.5 (email_engagement - 0.3) - 2 returns_rate), so about 42% of customers
 *   spend nothing: about 20% of those who ordered in the last 90 days, nearly 90% of the lapsed
 *   ones (no order in the prior 12 months).
 * - Buyers: log spend = log(region base) + log(avg_order_value_prior) + log1p(orders) - 0.4
 *   - region recency decay x min(days, 730) / 365 + loyalty + 0.7 (engagement - 0.35)
 *   + region-specific channel effect + region-specific discount slope x (discount_share - 0.2)
 *   - 0.8 returns_rate + log-normal noise (sigma 0.55, mean 1); 2% of buyers get a Pareto
 *   (alpha 1.5, capped at 30x) multiplier on top: the "whales". So spend is frequency x order
 *   value, decays with recency, and has a heavy right tail: the top 1% of customers carry about
 *   a quarter of all spend.
 * - Regional differences: 10 regions of unequal size over EU, US and CN with different base
 *   spend levels, zero rates (intercepts), channel mixes and channel effects (app pays in CN,
 *   store in us-south / us-central, web in the EU), discount slopes (discounts lift spend in CN
 *   and us-south, mark bargain hunters in eu-north / eu-central) and recency decay. A model
 *   trained on one region alone therefore differs from the global one (the discount slope on
 *   buyers' log spend is -2.6 to -3.6 in eu-central / eu-north, +2.4 to +3 in cn-east / cn-south,
 *   about +0.4 pooled), and the small regions (eu-north, cn-north, us-central) have few rows to
 *   learn from alone.
 * - Features are correlated the way marketing data is (tenure -> loyalty, activity -> orders,
 *   engagement and loyalty; marketplace -> discounts and returns), and the target depends on the
 *   observed features only (plus independent noise), so E[spend | features] is known exactly:
 *   the summary reports its R² on spend_12m (what the best possible model scores, in expectation).
 * - Missingness: 2% of avg_order_value_prior and 2% of email_engagement are blank (MCAR, drawn
 *   after the target, so a fill loses a little information).
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mulberry32 } from '../protocols/random.ts';

export const DEFAULT_ROWS = 20_000;
export const DEFAULT_SEED = 7;
export const DEFAULT_OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'data', 'customer_value.csv');

export const COLUMNS = [
  'customer_id', 'region', 'country', 'age', 'tenure_months', 'channel', 'loyalty_tier',
  'orders_12m_prior', 'avg_order_value_prior', 'days_since_last_order', 'email_engagement',
  'discount_share', 'returns_rate', 'consent', 'spend_12m',
] as const;

const CHANNELS = ['web', 'app', 'store', 'marketplace'] as const;
type Channel = (typeof CHANNELS)[number];
const TIERS = ['none', 'silver', 'gold'] as const;

interface Region {
  name: string;
  /** Share of customers (relative weight). */
  weight: number;
  countries: Array<[string, number]>;
  /** Multiplier on buyers' spend (price level, basket). */
  base: number;
  /** Intercept of the buy-again logit: lower means more zeros. */
  buyIntercept: number;
  /** Probabilities of web, app, store, marketplace. */
  channelMix: [number, number, number, number];
  /** Log-multiplier on buyers' spend per channel (web, app, store, marketplace). */
  channelEffect: [number, number, number, number];
  /** Slope of log spend in (discount_share - 0.2). */
  discountSlope: number;
  /** Log spend lost per 365 days since the last order (buyers). */
  recencyDecay: number;
  /** Median order value in USD. */
  aovMedian: number;
  ageMean: number;
  /** Probability of personalization consent. */
  personalization: number;
}

const REGIONS: Region[] = [
  { name: 'us-east', weight: 0.17, countries: [['US', 1]], base: 1.15, buyIntercept: 0.75,
    channelMix: [0.42, 0.25, 0.2, 0.13], channelEffect: [0, 0.1, 0.2, -0.3], discountSlope: -0.6,
    recencyDecay: 0.9, aovMedian: 62, ageMean: 42, personalization: 0.62 },
  { name: 'us-west', weight: 0.14, countries: [['US', 0.93], ['CA', 0.07]], base: 1.3, buyIntercept: 1.05,
    channelMix: [0.45, 0.3, 0.12, 0.13], channelEffect: [0.1, 0.3, -0.1, -0.4], discountSlope: -1.2,
    recencyDecay: 0.8, aovMedian: 70, ageMean: 39, personalization: 0.6 },
  { name: 'us-south', weight: 0.09, countries: [['US', 1]], base: 0.95, buyIntercept: 0.35,
    channelMix: [0.3, 0.2, 0.38, 0.12], channelEffect: [0, 0, 0.6, -0.2], discountSlope: 1.8,
    recencyDecay: 1.1, aovMedian: 52, ageMean: 44, personalization: 0.64 },
  { name: 'us-central', weight: 0.06, countries: [['US', 0.9], ['CA', 0.1]], base: 0.9, buyIntercept: 0.55,
    channelMix: [0.32, 0.18, 0.36, 0.14], channelEffect: [0, -0.1, 0.5, -0.1], discountSlope: 0.8,
    recencyDecay: 1.0, aovMedian: 55, ageMean: 45, personalization: 0.63 },
  { name: 'eu-west', weight: 0.13, countries: [['GB', 0.38], ['FR', 0.3], ['NL', 0.14], ['BE', 0.08], ['IE', 0.1]],
    base: 1.0, buyIntercept: 0.25, channelMix: [0.5, 0.22, 0.16, 0.12], channelEffect: [0.3, 0, -0.1, -0.2],
    discountSlope: -1.6, recencyDecay: 1.2, aovMedian: 58, ageMean: 43, personalization: 0.45 },
  { name: 'eu-central', weight: 0.11, countries: [['DE', 0.62], ['AT', 0.12], ['CH', 0.11], ['PL', 0.15]],
    base: 0.95, buyIntercept: 0.05, channelMix: [0.52, 0.18, 0.18, 0.12], channelEffect: [0.4, -0.1, 0, -0.3],
    discountSlope: -2.6, recencyDecay: 1.3, aovMedian: 60, ageMean: 45, personalization: 0.38 },
  { name: 'eu-north', weight: 0.04, countries: [['SE', 0.4], ['DK', 0.22], ['NO', 0.2], ['FI', 0.18]],
    base: 1.2, buyIntercept: 0.65, channelMix: [0.55, 0.28, 0.1, 0.07], channelEffect: [0.2, 0.2, -0.2, -0.6],
    discountSlope: -3.6, recencyDecay: 1.0, aovMedian: 66, ageMean: 41, personalization: 0.5 },
  { name: 'cn-east', weight: 0.12, countries: [['CN', 1]], base: 0.85, buyIntercept: 0.85,
    channelMix: [0.14, 0.5, 0.06, 0.3], channelEffect: [-0.2, 0.6, -0.4, 0.2], discountSlope: 2.4,
    recencyDecay: 1.6, aovMedian: 38, ageMean: 33, personalization: 0.72 },
  { name: 'cn-south', weight: 0.09, countries: [['CN', 0.88], ['HK', 0.12]], base: 0.8, buyIntercept: 0.45,
    channelMix: [0.12, 0.46, 0.07, 0.35], channelEffect: [-0.2, 0.5, -0.2, 0.4], discountSlope: 3,
    recencyDecay: 1.7, aovMedian: 34, ageMean: 32, personalization: 0.7 },
  { name: 'cn-north', weight: 0.05, countries: [['CN', 1]], base: 0.65, buyIntercept: -0.55,
    channelMix: [0.15, 0.42, 0.13, 0.3], channelEffect: [-0.3, 0.4, 0, 0.1], discountSlope: 1.6,
    recencyDecay: 1.9, aovMedian: 30, ageMean: 35, personalization: 0.68 },
];

const LOYALTY_BUY = [0, 0.35, 0.7];
const LOYALTY_SPEND = [0, 0.2, 0.45];
const NOISE_SIGMA = 0.55;
const WHALE_P = 0.02;
const WHALE_ALPHA = 1.5;
const WHALE_CAP = 30;
const MISSING_P = 0.02;

/** E[min(X, cap)] for X ~ Pareto(alpha, x_m = 1). */
const WHALE_MEAN = WHALE_ALPHA / (WHALE_ALPHA - 1) - Math.pow(WHALE_CAP, 1 - WHALE_ALPHA) / (WHALE_ALPHA - 1);
/** E[spend multiplier] of the noise (log-normal has mean 1; the whale mixture adds the rest). */
const NOISE_MEAN = 1 - WHALE_P + WHALE_P * WHALE_MEAN;

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

class Draws {
  private spare: number | null = null;
  constructor(readonly uniform: () => number) {}
  /** Uniform in (0, 1): never exactly 0, so logs are safe. */
  open(): number {
    let u = this.uniform();
    while (u === 0) u = this.uniform();
    return u;
  }
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.open()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
  exponential(mean: number): number {
    return -mean * Math.log(this.open());
  }
  /** Gamma(shape, 1) by Marsaglia-Tsang (shape >= 1). */
  gamma(shape: number): number {
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      const x = this.normal();
      const v0 = 1 + c * x;
      if (v0 <= 0) continue;
      const v = v0 * v0 * v0;
      const u = this.open();
      if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
    }
  }
  poisson(lambda: number): number {
    // Knuth for small rates, a rounded normal approximation above 30 (rare here).
    if (lambda > 30) return Math.max(0, Math.round(lambda + Math.sqrt(lambda) * this.normal()));
    const limit = Math.exp(-lambda);
    let k = 0;
    let p = this.uniform();
    while (p > limit) {
      k++;
      p *= this.uniform();
    }
    return k;
  }
  pick<T>(items: readonly T[], weights: readonly number[]): T {
    const total = weights.reduce((a, b) => a + b, 0);
    let u = this.uniform() * total;
    for (let i = 0; i < items.length; i++) {
      u -= weights[i];
      if (u < 0) return items[i];
    }
    return items[items.length - 1];
  }
}

export interface CustomerRow {
  customer_id: string;
  region: string;
  country: string;
  age: number;
  tenure_months: number;
  channel: Channel;
  loyalty_tier: (typeof TIERS)[number];
  orders_12m_prior: number;
  /** null when blanked (missing). */
  avg_order_value_prior: number | null;
  days_since_last_order: number;
  email_engagement: number | null;
  discount_share: number;
  returns_rate: number;
  consent: 'basic' | 'personalization';
  spend_12m: number;
  /** E[spend_12m | features] under the generating model (not written to the CSV). */
  expected_spend: number;
}

export function generateCustomers(rows = DEFAULT_ROWS, seed = DEFAULT_SEED): CustomerRow[] {
  const draw = new Draws(mulberry32(seed));
  const regionWeights = REGIONS.map((r) => r.weight);
  const width = Math.max(6, String(rows).length);
  const out: CustomerRow[] = [];
  for (let i = 0; i < rows; i++) {
    const region = draw.pick(REGIONS, regionWeights);
    const country = draw.pick(region.countries.map((c) => c[0]), region.countries.map((c) => c[1]));
    const age = Math.round(clamp(region.ageMean + 12 * draw.normal(), 18, 85));
    const channel = draw.pick(CHANNELS, region.channelMix);
    const ch = CHANNELS.indexOf(channel);
    let tenure = Math.min(120, 1 + Math.floor(draw.exponential(26)));
    // Latent activity: drives orders, loyalty and engagement; the target sees it only through them.
    const activity = draw.normal();
    const loyaltyScore = 0.025 * tenure + 0.8 * activity + 0.8 * draw.normal();
    const tier = loyaltyScore > 2.2 ? 2 : loyaltyScore > 1.2 ? 1 : 0;

    const channelFreq = [0, 0.2, -0.1, 0.1][ch];
    const rate = Math.exp(0.75 + 0.6 * activity + 0.25 * tier + channelFreq) * (draw.gamma(2) / 2);
    const orders = Math.min(60, draw.poisson(rate));
    let days: number;
    if (orders > 0) {
      // Last of `orders` uniform order dates in the window: time since it is window x Beta(1, n).
      const window = Math.min(365, tenure * 30.44);
      days = Math.floor(window * (1 - Math.pow(draw.open(), 1 / orders)));
    } else {
      days = 366 + Math.floor(draw.exponential(260));
      days = Math.min(days, 1800);
      tenure = Math.max(tenure, Math.ceil(days / 30.44));
    }
    tenure = Math.min(Math.max(tenure, 1), 150);

    const channelAov = [1, 0.92, 1.18, 0.85][ch];
    const aov = Math.round(
      region.aovMedian * channelAov * Math.exp(0.08 * (age - 40) / 12 + 0.1 * tier + 0.55 * draw.normal()) * 100,
    ) / 100;
    const consent = draw.uniform() < clamp(region.personalization + 0.08 * tier, 0, 1) ? 'personalization' : 'basic';
    const engagement = round3(
      sigmoid(-0.9 + 0.5 * activity + (consent === 'personalization' ? 0.4 : 0) + 0.3 * tier + 0.8 * draw.normal()),
    );
    const regionDisc = region.name.startsWith('cn') ? 0.35 : region.name === 'us-south' ? 0.2 : 0;
    const discount = round3(
      sigmoid(-1.6 + [0, 0.2, -0.4, 0.6][ch] - 0.3 * tier + regionDisc + 0.7 * draw.normal()),
    );
    const returnsZeroP = [0.5, 0.55, 0.72, 0.45][ch];
    const returns = draw.uniform() < returnsZeroP
      ? 0
      : round3(sigmoid(-2.1 + [0.3, 0, -0.5, 0.45][ch] + 0.6 * draw.normal()));

    // Target: buy again or not, then how much.
    const buyLogit = region.buyIntercept - 0.75 + 1.1 * Math.log1p(orders) - Math.min(days, 900) / 280 + LOYALTY_BUY[tier]
      + 1.5 * (engagement - 0.3) - 2 * returns;
    const pBuy = sigmoid(buyLogit);
    const logMu = Math.log(region.base) + Math.log(aov) + 1.0 * Math.log1p(orders) - 0.4
      - region.recencyDecay * Math.min(days, 730) / 365 + LOYALTY_SPEND[tier] + 0.7 * (engagement - 0.35)
      + region.channelEffect[ch] + region.discountSlope * (discount - 0.2) - 0.8 * returns;
    const mu = Math.exp(logMu);
    const buys = draw.uniform() < pBuy;
    let spend = 0;
    if (buys) {
      let mult = Math.exp(NOISE_SIGMA * draw.normal() - (NOISE_SIGMA * NOISE_SIGMA) / 2);
      if (draw.uniform() < WHALE_P) mult *= Math.min(WHALE_CAP, Math.pow(draw.open(), -1 / WHALE_ALPHA));
      spend = Math.round(mu * mult * 100) / 100;
    }
    const aovMissing = draw.uniform() < MISSING_P;
    const engagementMissing = draw.uniform() < MISSING_P;
    out.push({
      customer_id: 'C' + String(i + 1).padStart(width, '0'),
      region: region.name,
      country,
      age,
      tenure_months: tenure,
      channel,
      loyalty_tier: TIERS[tier],
      orders_12m_prior: orders,
      avg_order_value_prior: aovMissing ? null : aov,
      days_since_last_order: days,
      email_engagement: engagementMissing ? null : engagement,
      discount_share: discount,
      returns_rate: returns,
      consent,
      spend_12m: spend,
      expected_spend: pBuy * mu * NOISE_MEAN,
    });
  }
  return out;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function toCsv(rows: CustomerRow[]): string {
  const lines = [COLUMNS.join(',')];
  for (const r of rows) {
    lines.push([
      r.customer_id, r.region, r.country, r.age, r.tenure_months, r.channel, r.loyalty_tier,
      r.orders_12m_prior, r.avg_order_value_prior === null ? '' : r.avg_order_value_prior.toFixed(2),
      r.days_since_last_order, r.email_engagement === null ? '' : r.email_engagement.toFixed(3),
      r.discount_share.toFixed(3), r.returns_rate.toFixed(3), r.consent, r.spend_12m.toFixed(2),
    ].join(','));
  }
  return lines.join('\n') + '\n';
}

function r2(actual: number[], predicted: number[]): number {
  const mean = actual.reduce((a, b) => a + b, 0) / actual.length;
  let ssRes = 0;
  let ssTot = 0;
  for (let i = 0; i < actual.length; i++) {
    ssRes += (actual[i] - predicted[i]) ** 2;
    ssTot += (actual[i] - mean) ** 2;
  }
  return 1 - ssRes / ssTot;
}

/** The figures data/README.md quotes, as text. */
export function summarize(rows: CustomerRow[]): string {
  const spend = rows.map((r) => r.spend_12m);
  const total = spend.reduce((a, b) => a + b, 0);
  const sorted = [...spend].sort((a, b) => b - a);
  const top = (share: number) => sorted.slice(0, Math.round(rows.length * share)).reduce((a, b) => a + b, 0) / total;
  const zeros = spend.filter((s) => s === 0).length;
  const buyers = sorted.slice(0, rows.length - zeros);
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const lapsed = rows.filter((r) => r.days_since_last_order > 365);
  const recent = rows.filter((r) => r.days_since_last_order <= 90);
  const zeroShare = (rs: CustomerRow[]) => rs.length ? rs.filter((r) => r.spend_12m === 0).length / rs.length : 0;
  const pct = (x: number) => (100 * x).toFixed(1) + '%';
  const lines = [
    `rows ${rows.length}, zero spend ${zeros} (${pct(zeros / rows.length)})`,
    `zero share: days_since_last_order <= 90 ${pct(zeroShare(recent))} (${recent.length} rows), > 365 ${pct(zeroShare(lapsed))} (${lapsed.length} rows)`,
    `mean spend ${(total / rows.length).toFixed(2)}, buyers' median ${median(buyers).toFixed(2)}, max ${sorted[0].toFixed(2)}`,
    `share of total spend: top 1% ${pct(top(0.01))}, top 10% ${pct(top(0.1))}`,
    `R² of the true E[spend_12m | features] on spend_12m: ${r2(spend, rows.map((r) => r.expected_spend)).toFixed(3)}`,
    `missing: avg_order_value_prior ${rows.filter((r) => r.avg_order_value_prior === null).length}, ` +
      `email_engagement ${rows.filter((r) => r.email_engagement === null).length}`,
    'region | rows | mean spend | zero rate',
  ];
  for (const region of REGIONS) {
    const rs = rows.filter((r) => r.region === region.name);
    const mean = rs.length ? rs.reduce((a, r) => a + r.spend_12m, 0) / rs.length : 0;
    lines.push(`${region.name} | ${rs.length} | ${mean.toFixed(2)} | ${pct(zeroShare(rs))}`);
  }
  return lines.join('\n');
}

function parseArgs(argv: string[]): { rows: number; seed: number; out: string } {
  const opts = { rows: DEFAULT_ROWS, seed: DEFAULT_SEED, out: DEFAULT_OUT };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--rows' || flag === '--seed') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < (flag === '--rows' ? 1 : 0)) throw new Error(`${flag} needs a non-negative integer, got ${value}`);
      if (flag === '--rows') opts.rows = n;
      else opts.seed = n;
      i++;
    } else if (flag === '--out') {
      if (!value) throw new Error('--out needs a path');
      opts.out = resolve(value);
      i++;
    } else {
      throw new Error(`unknown argument ${flag} (use --rows N, --seed S, --out PATH)`);
    }
  }
  return opts;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  let opts: ReturnType<typeof parseArgs>;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  const { rows, seed, out } = opts;
  const customers = generateCustomers(rows, seed);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, toCsv(customers));
  process.stderr.write(`wrote ${out} (seed ${seed})\n${summarize(customers)}\n`);
}
