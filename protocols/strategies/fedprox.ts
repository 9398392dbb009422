import { FedAvg } from './fedavg.ts';

/**
 * FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated Optimization in
 * Heterogeneous Networks"): each node minimizes its loss plus (mu/2) ||w - w_global||^2 locally,
 * which keeps heterogeneous nodes from drifting far from the global model. The server step is
 * FedAvg's; the only difference is the proximalMu = mu sent in every fit instruction.
 */
export class FedProx extends FedAvg {
  override readonly name = 'fedprox';

  constructor(readonly mu: number) {
    super();
    if (!(typeof mu === 'number' && Number.isFinite(mu) && mu >= 0)) throw new RangeError(`fedprox: mu must be a finite number >= 0, got ${String(mu)}`);
  }

  protected override fitProximalMu(): number {
    return this.mu;
  }
}
