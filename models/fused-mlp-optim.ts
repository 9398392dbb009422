/**
 * Optimizers of the fused trainer (models/fused-mlp.ts): one pass over the network's flat
 * parameters and gradients per step, FedProx's proximal gradient first, in the WASM kernels when
 * the network has them (its state lives next to the weights), else in JavaScript.
 */
import type { FusedMlp } from './fused-mlp.ts';

/** An optimizer step on net.params from net.grads (d mean loss / d params). */
export interface FusedOptimizer {
  step(): void;
}

/**
 * FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): the objective
 * gains (mu / 2) |w - global|^2, so each parameter's gradient gains mu (w - global). The global
 * model is copied into net.globalParams.
 */
export interface FusedProximal {
  mu: number;
  /** The round's global model, flat, in the network's layout. */
  global: Float32Array;
}

abstract class ProximalStep implements FusedOptimizer {
  private readonly mu: number;

  constructor(
    protected readonly net: FusedMlp,
    proximal: FusedProximal | undefined,
  ) {
    this.mu = proximal?.mu ?? 0;
    if (proximal !== undefined) {
      if (proximal.global.length !== net.params.length) throw new RangeError(`proximal term: the global model has ${proximal.global.length} values, the network ${net.params.length}`);
      net.globalParams.set(proximal.global);
    }
  }

  step(): void {
    const { net, mu } = this;
    if (mu !== 0) {
      if (net.kernels !== null) net.kernels.prox(net.ptr.params, net.ptr.grads, net.ptr.global, net.paddedSize, mu);
      else {
        const { params, grads, globalParams } = net;
        for (let i = 0; i < params.length; i++) grads[i] += mu * (params[i] - globalParams[i]);
      }
    }
    this.update();
  }

  protected abstract update(): void;
}

/** Plain SGD, as tf.train.sgd: w -= lr g. */
export class FusedSgd extends ProximalStep {
  constructor(
    net: FusedMlp,
    private readonly learningRate: number,
    proximal?: FusedProximal,
  ) {
    super(net, proximal);
  }

  protected update(): void {
    const { net, learningRate: lr } = this;
    if (net.kernels !== null) return net.kernels.sgd(net.ptr.params, net.ptr.grads, net.paddedSize, lr);
    const { params, grads } = net;
    for (let i = 0; i < params.length; i++) params[i] -= lr * grads[i];
  }
}

export interface AdamSettings {
  beta1?: number;
  beta2?: number;
  /** tfjs takes the backend's epsilon (1e-7 on the cpu and wasm backends). */
  epsilon?: number;
}

/**
 * Adam (Kingma & Ba 2015, Algorithm 1) exactly as TensorFlow.js's tf.train.adam
 * (@tensorflow/tfjs-core src/optimizers/adam_optimizer.ts):
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * with epsilon added AFTER the square root of the bias-corrected v (not Kingma & Ba's eps-hat
 * form), and b1^t, b2^t kept as running float32 products (accBeta1 = b1 at the first step, then
 * multiplied by b1 after each), as tfjs keeps them in float32 variables. Fresh moments (zeros).
 */
export class FusedAdam extends ProximalStep {
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly epsilon: number;
  private accBeta1: number;
  private accBeta2: number;

  constructor(
    net: FusedMlp,
    private readonly learningRate: number,
    proximal?: FusedProximal,
    settings: AdamSettings = {},
  ) {
    super(net, proximal);
    this.beta1 = settings.beta1 ?? 0.9;
    this.beta2 = settings.beta2 ?? 0.999;
    this.epsilon = settings.epsilon ?? 1e-7;
    this.accBeta1 = Math.fround(this.beta1);
    this.accBeta2 = Math.fround(this.beta2);
    net.moment1.fill(0);
    net.moment2.fill(0);
  }

  protected update(): void {
    const { net, beta1, beta2, epsilon, learningRate } = this;
    const c1 = 1 - beta1;
    const c2 = 1 - beta2;
    const correction1 = 1 - this.accBeta1;
    const correction2 = 1 - this.accBeta2;
    if (net.kernels !== null) {
      const { ptr } = net;
      net.kernels.adam(ptr.params, ptr.grads, ptr.moment1, ptr.moment2, net.paddedSize, learningRate, beta1, beta2, c1, c2, correction1, correction2, epsilon);
    } else {
      const { params, grads, moment1: m, moment2: v } = net;
      for (let i = 0; i < params.length; i++) {
        const g = grads[i];
        const mi = beta1 * m[i] + c1 * g;
        const vi = beta2 * v[i] + c2 * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= (learningRate * (mi / correction1)) / (Math.sqrt(vi / correction2) + epsilon);
      }
    }
    this.accBeta1 = Math.fround(this.accBeta1 * beta1);
    this.accBeta2 = Math.fround(this.accBeta2 * beta2);
  }
}
