// TensorFlow.js itself, not tf.ts's `export *` of it: in the demo's code-split esbuild bundle a
// namespace import of that re-export from another chunk compiled every `tf.x` to undefined. The
// side-effect import records that TensorFlow.js is loaded (tf-loaded.ts).
import * as tf from '@tensorflow/tfjs';
import './tf.ts';

/**
 * Hidden-layer activations of a dense stack, with the derivative DP-SGD's hand-written backward
 * pass needs (models/dp-sgd.ts clips per-example gradients from one batched forward and backward
 * pass, so it cannot use autodiff).
 *
 * `tanh` is the tempered sigmoid of Papernot, Thakurta, Song, Chien and Erlingsson, "Tempered
 * Sigmoid Activations for Deep Learning with Differential Privacy" (AAAI 2021), at its usual
 * setting (scale 2, inverse temperature 2, offset 1: 2 sigmoid(2x) - 1 = tanh x). Bounded
 * activations keep the activations, and so the per-example gradients, from growing during
 * training, so clipping throws less of the signal away; on the 10-region churn federation at
 * epsilon 3 the 32-16 MLP gains about 0.02 AUC over ReLU (README, "Privacy vs utility").
 */
export const HIDDEN_ACTIVATIONS = ['relu', 'tanh'] as const;
export type HiddenActivation = (typeof HIDDEN_ACTIVATIONS)[number];

/** f(z) for a hidden layer's pre-activations z. */
export function activate(activation: HiddenActivation, z: tf.Tensor2D): tf.Tensor2D {
  return (activation === 'tanh' ? tf.tanh(z) : tf.relu(z)) as tf.Tensor2D;
}

/**
 * f'(z), elementwise, from the pre-activations z and the outputs h = f(z): for tanh 1 - h^2
 * (reusing the forward pass's output), for ReLU the step 1[z > 0] (0 at z = 0, as tfjs's relu
 * gradient).
 */
export function activationDerivative(activation: HiddenActivation, z: tf.Tensor2D, h: tf.Tensor2D): tf.Tensor2D {
  return (activation === 'tanh' ? tf.sub(1, tf.square(h)) : tf.step(z)) as tf.Tensor2D;
}

/** The activation a dense layer's config names, if it is a supported hidden activation. */
export function asHiddenActivation(name: unknown): HiddenActivation | null {
  return (HIDDEN_ACTIVATIONS as readonly unknown[]).includes(name) ? (name as HiddenActivation) : null;
}
