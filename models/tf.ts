/**
 * The one import of TensorFlow.js. We tried core + layers + cpu only (the converter, tfjs-data and
 * WebGL cost ~200 ms of start-up per process), but the gradient and chained-op registrations ship
 * only in `@tensorflow/tfjs`'s Node bundle: its ESM sources use directory imports that Node's ESM
 * loader refuses. So the full package, behind this module, to change in one place. Only modules
 * of TensorFlow.js's side import it statically; the node's default path never does (tf-loaded.ts).
 */
import * as tfjs from '@tensorflow/tfjs';
import { noteTensorFlow } from './tf-loaded.ts';

export * from '@tensorflow/tfjs';
noteTensorFlow(tfjs);
