import type { StudyConfig } from '../messages.ts';
import { ClientLevelDpStrategy, PrivacyConfigError } from '../privacy/client-level-dp.ts';
import type { StrategyConfig } from './config.ts';
import { FedAdagrad } from './fedadagrad.ts';
import { FedAdam } from './fedadam.ts';
import { FedAvg } from './fedavg.ts';
import { FedAvgM } from './fedavgm.ts';
import { FedProx } from './fedprox.ts';
import { FedYogi } from './fedyogi.ts';
import { Krum } from './krum.ts';
import { Median } from './median.ts';
import { isMeanDeltaStrategy, type Strategy } from './strategy.ts';
import { TrimmedMean } from './trimmed-mean.ts';

/** The strategy a study config names, with its parameters (defaults already applied by zod). */
export function strategyFromConfig(config: StrategyConfig): Strategy {
  switch (config.name) {
    case 'fedavg':
      return new FedAvg();
    case 'fedprox':
      return new FedProx(config.mu);
    case 'fedavgm':
      return new FedAvgM({ serverLearningRate: config.serverLearningRate, momentum: config.momentum });
    case 'fedadam':
      return new FedAdam(config);
    case 'fedyogi':
      return new FedYogi(config);
    case 'fedadagrad':
      return new FedAdagrad(config);
    case 'trimmed-mean':
      return new TrimmedMean(config.trimFraction);
    case 'median':
      return new Median();
    case 'krum':
      return new Krum(config.byzantine, config.select);
  }
}

/**
 * A study's strategy: `config.strategy`, wrapped in client-level (central) DP when
 * `config.privacy.central` is set. Throws PrivacyConfigError for central DP over a strategy that
 * needs every update (StudyConfig's superRefine refuses such a config first).
 */
export function createStrategy(config: StudyConfig): Strategy {
  const inner = strategyFromConfig(config.strategy);
  const central = config.privacy?.central;
  if (!central) return inner;
  if (!isMeanDeltaStrategy(inner)) throw new PrivacyConfigError(`central DP cannot wrap ${inner.name}: it needs every update, not a mean delta`);
  return new ClientLevelDpStrategy(inner, central);
}

export * from './strategy.ts';
export * from './config.ts';
export { decodeServerState, emptyServerState, encodeServerState, ServerStateError } from './server-state.ts';
export { MeanDeltaFit, MeanDeltaStrategyBase } from './mean-delta-fit.ts';
export { EveryUpdateFit, EveryUpdateStrategyBase } from './every-update-fit.ts';
export { FedAvg } from './fedavg.ts';
export { FedProx } from './fedprox.ts';
export { FedAvgM, type FedAvgMParams } from './fedavgm.ts';
export { AdaptiveServerOptimizer } from './adaptive.ts';
export { FedAdam, type FedAdamParams } from './fedadam.ts';
export { FedYogi, type FedYogiParams } from './fedyogi.ts';
export { FedAdagrad, type FedAdagradParams } from './fedadagrad.ts';
export { TrimmedMean } from './trimmed-mean.ts';
export { Median } from './median.ts';
export { Krum } from './krum.ts';
export { ClientLevelDpStrategy, DP_CLIP_NORM, PrivacyConfigError } from '../privacy/client-level-dp.ts';
