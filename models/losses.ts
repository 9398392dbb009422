import type * as Tf from './tf.ts';
import { loadedTensorFlow } from './tf-loaded.ts';

/**
 * TensorFlow.js, looked up at call time: the tensor functions below (mean, meanFromOutput,
 * gradient) only run on TensorFlow.js's side (its trainer, DP-SGD), which has loaded it; the fused
 * trainer uses value / derivative, so the node's default path imports this module without loading
 * TensorFlow.js (issue 13).
 */
const tf = new Proxy({} as typeof Tf, { get: (_, name) => loadedTensorFlow()[name as keyof typeof Tf] });

/**
 * The loss of a model kind, written against the output unit's pre-activation z (the logit for
 * a sigmoid output; the output itself for an identity one), so that training can stop its
 * forward pass at z (train.ts's fused path) and DP-SGD can start its hand-written backward
 * pass from d loss / d z (dp-sgd.ts). Targets t are the training targets: 0/1 labels, or the
 * regression kind's transformed target (models/kinds/regression.ts).
 *
 * Per-row losses (r = z - t):
 *   bce      log(1 + e^z) - t z                             d/dz = sigmoid(z) - t
 *   mse      r^2 / 2                                        d/dz = r
 *   huber    r^2 / 2 if |r| <= d, else d (|r| - d / 2)      d/dz = clamp(r, -d, d)
 *   tweedie  half the Tweedie deviance of t at mu = e^z (log link), power p in (1, 2):
 *            t^(2-p) / ((1-p)(2-p)) - t e^((1-p) z) / (1-p) + e^((2-p) z) / (2-p)
 *                                                           d/dz = -t e^((1-p) z) + e^((2-p) z)
 * All are >= 0 (the Tweedie one is 0 exactly at mu = t), so a reported loss is never negative.
 */
export interface OutputLoss {
  readonly name: 'bce' | 'mse' | 'huber' | 'tweedie';
  /** The output unit's activation this loss goes with. */
  readonly output: 'sigmoid' | 'linear';
  /** Mean loss of a batch from z ([n, 1]) and targets t ([n, 1]). */
  mean(z: Tf.Tensor, t: Tf.Tensor): Tf.Scalar;
  /** Mean loss from the model's output (activation(z)): what model.apply gives. */
  meanFromOutput(output: Tf.Tensor, t: Tf.Tensor): Tf.Scalar;
  /** d (per-row loss) / d z, row by row ([n, 1]). */
  gradient(z: Tf.Tensor, t: Tf.Tensor): Tf.Tensor;
  /** One row's loss in float64 (evaluation, tests). */
  value(z: number, t: number): number;
  /** One row's d loss / d z in float64. */
  derivative(z: number, t: number): number;
}

export const bceLoss: OutputLoss = {
  name: 'bce',
  output: 'sigmoid',
  // The same call the binary training loop always made: identical numbers to before.
  mean: (z, t) => tf.losses.sigmoidCrossEntropy(t, z) as Tf.Scalar,
  meanFromOutput: (p, t) => tf.metrics.binaryCrossentropy(t, p).mean() as Tf.Scalar,
  gradient: (z, t) => tf.sub(tf.sigmoid(z), t),
  value: (z, t) => Math.max(z, 0) - z * t + Math.log1p(Math.exp(-Math.abs(z))),
  derivative: (z, t) => 1 / (1 + Math.exp(-z)) - t,
};

export const mseLoss: OutputLoss = {
  name: 'mse',
  output: 'linear',
  mean: (z, t) => tf.mul(tf.mean(tf.square(tf.sub(z, t))), 0.5) as Tf.Scalar,
  meanFromOutput: (o, t) => mseLoss.mean(o, t),
  gradient: (z, t) => tf.sub(z, t),
  value: (z, t) => 0.5 * (z - t) ** 2,
  derivative: (z, t) => z - t,
};

export function huberLoss(delta: number): OutputLoss {
  if (!(delta > 0) || !Number.isFinite(delta)) throw new RangeError(`huber: delta must be positive and finite, got ${delta}`);
  const loss: OutputLoss = {
    name: 'huber',
    output: 'linear',
    mean: (z, t) => {
      const r = tf.abs(tf.sub(z, t));
      const a = tf.minimum(r, delta); // the quadratic part
      return tf.mean(tf.add(tf.mul(tf.square(a), 0.5), tf.mul(tf.sub(r, a), delta))) as Tf.Scalar;
    },
    meanFromOutput: (o, t) => loss.mean(o, t),
    gradient: (z, t) => tf.clipByValue(tf.sub(z, t), -delta, delta),
    value: (z, t) => {
      const r = Math.abs(z - t);
      return r <= delta ? 0.5 * r * r : delta * (r - 0.5 * delta);
    },
    derivative: (z, t) => Math.min(delta, Math.max(-delta, z - t)),
  };
  return loss;
}

export function tweedieLoss(power: number): OutputLoss {
  const p = power;
  if (!(p > 1 && p < 2)) throw new RangeError(`tweedie: power must be in (1, 2), got ${p}`);
  const a = 1 - p; // < 0
  const b = 2 - p; // in (0, 1)
  const loss: OutputLoss = {
    name: 'tweedie',
    output: 'linear',
    mean: (z, t) => {
      // t^b / (a b): the term that makes the loss 0 at mu = t (constant in z: no gradient).
      const constant = tf.div(tf.pow(t, b), a * b);
      const fit = tf.add(tf.div(tf.mul(t, tf.exp(tf.mul(z, a))), -a), tf.div(tf.exp(tf.mul(z, b)), b));
      return tf.mean(tf.add(constant, fit)) as Tf.Scalar;
    },
    meanFromOutput: (o, t) => loss.mean(o, t),
    gradient: (z, t) => tf.add(tf.neg(tf.mul(t, tf.exp(tf.mul(z, a)))), tf.exp(tf.mul(z, b))),
    value: (z, t) => Math.max(0, t ** b / (a * b) - (t * Math.exp(a * z)) / a + Math.exp(b * z) / b),
    derivative: (z, t) => -t * Math.exp(a * z) + Math.exp(b * z),
  };
  return loss;
}
