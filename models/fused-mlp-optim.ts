/**
 * Optimizers of the fused trainer (models/fused-mlp.ts): one loop over the flat parameter and
 * gradient arrays per step, FedProx's proximal gradient folded into the same loop.
 */

/** An optimizer step over flat arrays. */
export interface FusedOptimizer {
  /** Updates params in place from grads (d mean loss / d params). */
  step(params: Float32Array, grads: Float32Array): void;
}

/**
 * FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): the objective
 * gains (mu / 2) |w - global|^2, so each parameter's gradient gains mu (w - global).
 */
export interface FusedProximal {
  mu: number;
  /** The round's global model, flat, in the same layout as params. */
  global: Float32Array;
}

function proximalGradient(prox: FusedProximal | undefined, params: Float32Array, grads: Float32Array): void {
  if (prox === undefined || prox.mu === 0) return;
  const { mu, global } = prox;
  for (let i = 0; i < params.length; i++) grads[i] += mu * (params[i] - global[i]);
}

/** Plain SGD, as tf.train.sgd: w -= lr g. */
export class FusedSgd implements FusedOptimizer {
  constructor(
    private readonly learningRate: number,
    private readonly proximal?: FusedProximal,
  ) {}

  step(params: Float32Array, grads: Float32Array): void {
    proximalGradient(this.proximal, params, grads);
    const lr = this.learningRate;
    for (let i = 0; i < params.length; i++) params[i] -= lr * grads[i];
  }
}

/**
 * Adam (Kingma & Ba 2015, Algorithm 1) exactly as TensorFlow.js's tf.train.adam
 * (@tensorflow/tfjs-core src/optimizers/adam_optimizer.ts):
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * with epsilon added AFTER the square root of the bias-corrected v (not Kingma & Ba's eps-hat
 * form), and b1^t, b2^t kept as running float32 products (accBeta1 = b1 at the first step, then
 * multiplied by b1 after each), as tfjs keeps them in float32 variables.
 */
export class FusedAdam implements FusedOptimizer {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private accBeta1: number;
  private accBeta2: number;

  constructor(
    size: number,
    private readonly learningRate: number,
    private readonly proximal?: FusedProximal,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    /** tfjs takes the backend's epsilon (1e-7 on the cpu and wasm backends). */
    private readonly epsilon = 1e-7,
  ) {
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
    this.accBeta1 = Math.fround(beta1);
    this.accBeta2 = Math.fround(beta2);
  }

  step(params: Float32Array, grads: Float32Array): void {
    proximalGradient(this.proximal, params, grads);
    const { m, v, beta1, beta2, epsilon, learningRate } = this;
    const c1 = 1 - beta1;
    const c2 = 1 - beta2;
    const correction1 = 1 - this.accBeta1;
    const correction2 = 1 - this.accBeta2;
    for (let i = 0; i < params.length; i++) {
      const g = grads[i];
      const mi = beta1 * m[i] + c1 * g;
      const vi = beta2 * v[i] + c2 * g * g;
      m[i] = mi;
      v[i] = vi;
      params[i] -= (learningRate * (mi / correction1)) / (Math.sqrt(vi / correction2) + epsilon);
    }
    this.accBeta1 = Math.fround(this.accBeta1 * beta1);
    this.accBeta2 = Math.fround(this.accBeta2 * beta2);
  }
}
