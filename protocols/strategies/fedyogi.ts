import { AdaptiveServerOptimizer } from './adaptive.ts';
import type { FedAdamParams } from './fedadam.ts';

/** FedYogi takes FedAdam's parameters (Reddi et al. 2021 tune both over the same grid). */
export type FedYogiParams = FedAdamParams;

/**
 * FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2; Yogi from Zaheer
 * et al. 2018): like FedAdam, but the second moment moves additively toward Delta^2,
 *   v <- v - (1 - beta2) Delta^2 sign(v - Delta^2),
 * so v changes by at most (1 - beta2) Delta^2 per round. m_0 = 0, v_0 = tau^2, no bias correction.
 */
export class FedYogi extends AdaptiveServerOptimizer {
  readonly name = 'fedyogi';
  private readonly beta2: number;

  constructor(params: FedYogiParams) {
    super(params.serverLearningRate, params.beta1, params.tau);
    this.beta2 = params.beta2;
  }

  protected secondMoment(v: number, d2: number): number {
    return v - (1 - this.beta2) * d2 * Math.sign(v - d2);
  }
}
