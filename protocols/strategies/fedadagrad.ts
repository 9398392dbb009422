import { AdaptiveServerOptimizer } from './adaptive.ts';

export interface FedAdagradParams {
  serverLearningRate: number;
  tau: number;
}

/**
 * FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
 *   v <- v + Delta^2,   w <- w + eta Delta / (sqrt(v) + tau),   v_0 = tau^2.
 * Algorithm 2 writes one momentum line m <- beta1 m + (1 - beta1) Delta for all three methods;
 * for FedAdagrad the paper takes beta1 = 0 (its analysis of FedAdagrad is for beta1 = 0), so
 * m = Delta and no m is kept. The study config accordingly has no beta1 for fedadagrad.
 */
export class FedAdagrad extends AdaptiveServerOptimizer {
  readonly name = 'fedadagrad';

  constructor(params: FedAdagradParams) {
    super(params.serverLearningRate, 0, params.tau);
  }

  protected secondMoment(v: number, d2: number): number {
    return v + d2;
  }
}
