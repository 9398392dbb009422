import { z } from 'zod';

/**
 * The study config's `strategy: { name, ...params }`. Defaults are the README's configuration
 * table; cross-field rules (Krum's f against the minimum node count, central DP over a strategy
 * that cannot take a noised mean) are checked in StudyConfig (messages.ts), where both fields are.
 */
const ServerOptimizerParams = {
  /**
   * Server learning rate eta (Reddi et al. 2021, Algorithm 2). Default 0.1 for FedAdam, FedYogi
   * and FedAdagrad (Flower's default for FedAdam and FedAdagrad): on the churn splits of
   * `npm run bench -- --only strategies` it beat 0.01 on average over the 10-region and 51-state
   * federations for all three (e.g. FedAdagrad 0.847/0.785 -> 0.910/0.893 test AUC).
   */
  serverLearningRate: z.number().positive().max(100),
  beta1: z.number().min(0).lt(1),
  beta2: z.number().min(0).lt(1),
  /** Adaptivity tau: v starts at tau^2 and tau is added to sqrt(v). */
  tau: z.number().positive().max(10),
};

export const StrategyConfig = z.discriminatedUnion('name', [
  z.strictObject({ name: z.literal('fedavg') }),
  z.strictObject({ name: z.literal('fedprox'), mu: z.number().nonnegative().finite().max(1000).default(0.01) }),
  z.strictObject({
    name: z.literal('fedavgm'),
    serverLearningRate: z.number().positive().max(100).default(1),
    momentum: z.number().min(0).lt(1).default(0.9),
  }),
  z.strictObject({
    name: z.literal('fedadam'),
    serverLearningRate: ServerOptimizerParams.serverLearningRate.default(0.1),
    beta1: ServerOptimizerParams.beta1.default(0.9),
    beta2: ServerOptimizerParams.beta2.default(0.99),
    tau: ServerOptimizerParams.tau.default(1e-3),
  }),
  z.strictObject({
    name: z.literal('fedyogi'),
    serverLearningRate: ServerOptimizerParams.serverLearningRate.default(0.1),
    beta1: ServerOptimizerParams.beta1.default(0.9),
    beta2: ServerOptimizerParams.beta2.default(0.99),
    tau: ServerOptimizerParams.tau.default(1e-3),
  }),
  z.strictObject({
    name: z.literal('fedadagrad'),
    serverLearningRate: ServerOptimizerParams.serverLearningRate.default(0.1),
    tau: ServerOptimizerParams.tau.default(1e-3),
  }),
  z.strictObject({
    name: z.literal('trimmed-mean'),
    /**
     * Fraction trimmed at EACH end of every coordinate's sorted values, in (0, 0.5): floor(beta k)
     * values go at each end, so the study's minNodesPerRound must make that at least 1 (checked
     * at creation: a trimmed mean that trims nothing is a plain mean, not robust).
     */
    trimFraction: z.number().gt(0, { message: 'trimFraction must be > 0 (0 trims nothing: a plain mean)' }).lt(0.5, { message: 'trimFraction must be < 0.5 (trimming half from each end leaves nothing)' }).default(0.1),
  }),
  z.strictObject({ name: z.literal('median') }),
  z.strictObject({
    name: z.literal('krum'),
    /** f: the number of Byzantine nodes tolerated; Krum needs n > 2f + 2 updates. */
    byzantine: z.number().int().nonnegative().max(10_000).default(1),
    /** m: how many of the best-scored updates Multi-Krum averages (1 = Krum). */
    select: z.number().int().positive().max(10_000).default(1),
  }),
]);
export type StrategyConfig = z.infer<typeof StrategyConfig>;
export type StrategyName = StrategyConfig['name'];

export const STRATEGY_NAMES: readonly StrategyName[] = ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'trimmed-mean', 'median', 'krum'];

/** Strategies whose aggregate is not a (weighted) mean of deltas: they cannot sit under central DP. */
export const EVERY_UPDATE_STRATEGIES: ReadonlySet<StrategyName> = new Set(['trimmed-mean', 'median', 'krum']);

/**
 * Fewest updates a strategy needs in a round: Krum n > 2f + 2 (Blanchard et al. 2017) and
 * n >= select; trimmed mean floor(beta n) >= 1, or it trims nothing.
 */
export function minimumUpdates(config: StrategyConfig): number {
  if (config.name === 'krum') return Math.max(2 * config.byzantine + 3, config.select);
  if (config.name === 'trimmed-mean') return smallestTrimmingCount(config.trimFraction);
  return 1;
}

/** The smallest k with floor(beta k) >= 1 (computed, not 1/beta: floating point). */
export function smallestTrimmingCount(beta: number): number {
  let k = Math.max(1, Math.ceil(1 / beta) - 1);
  while (Math.floor(beta * k) < 1) k++;
  return k;
}
