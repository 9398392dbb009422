import { AdaptiveServerOptimizer } from './adaptive.ts';

export interface FedAdamParams {
  serverLearningRate: number;
  beta1: number;
  beta2: number;
  tau: number;
}

/**
 * FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
 *   m <- beta1 m + (1 - beta1) Delta,  v <- beta2 v + (1 - beta2) Delta^2,
 *   w <- w + eta m / (sqrt(v) + tau);  m_0 = 0, v_0 = tau^2, no bias correction (as in the paper).
 */
export class FedAdam extends AdaptiveServerOptimizer {
  readonly name = 'fedadam';
  private readonly beta2: number;

  constructor(params: FedAdamParams) {
    super(params.serverLearningRate, params.beta1, params.tau);
    this.beta2 = params.beta2;
  }

  protected secondMoment(v: number, d2: number): number {
    return this.beta2 * v + (1 - this.beta2) * d2;
  }
}
