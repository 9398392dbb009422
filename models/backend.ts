import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { loadedTensorFlow, tensorFlowLoaded } from './tf-loaded.ts';
import { loadTensorFlow } from './tfjs-side.ts';
import { fusedTrainerWanted } from './trainer-choice.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

const ORDER: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu'];

/** Settles, never rejects, with the backend in use after the latest attempt (undefined before any). */
let chain: Promise<string | undefined> = Promise.resolve(undefined);
let active: string | undefined;

/** A backend initBackend was asked for before TensorFlow.js was loaded: started by the first loadTensorFlow(). */
let deferred: { preferred: BackendName | undefined } | undefined;

/**
 * Selects the TensorFlow.js backend, fastest first: `tensorflow` (native, from the optional
 * package @tensorflow/tfjs-node, usually not installed), then `wasm` (XNNPACK + SIMD, single
 * threaded in Node), then `cpu` (plain JavaScript). Returns the backend actually used.
 *
 * With `preferred`, only that backend is tried, and failing to start it throws (the backend in
 * use, if any, stays). Idempotent: a later call without `preferred` (or with the backend already
 * in use) returns the current backend; a call with another `preferred` switches to it. Calls are
 * serialized, so concurrent calls do not race.
 *
 * Lazy where nothing needs TensorFlow.js yet (issue 13: a node's start-up spent ~0.4 CPU-s
 * importing it and more starting its wasm backend, for a trainer that does not use it): when no
 * module has loaded TensorFlow.js (models/tf-loaded.ts) and the fused trainer is the default
 * (no FEDMARK_TRAINER=tfjs), the choice is only recorded (an unknown name still throws) and the
 * promise says so, e.g. "wasm (loaded on first use)"; the first loadTensorFlow()
 * (models/tfjs-side.ts: DP-SGD, a TensorFlow.js model) starts it then, and fails then if it
 * cannot. Code that uses TensorFlow.js imports it statically, so for it this call starts the backend now.
 *
 * Models live on the backend that was current when they were created: choose it first.
 */
export function initBackend(preferred?: BackendName): Promise<string> {
  if (tensorFlowLoaded()) {
    deferred = undefined;
    return selectNow(preferred);
  }
  if (preferred !== undefined && !ORDER.includes(preferred)) return Promise.reject(unknownBackend(preferred));
  deferred = { preferred };
  // FEDMARK_TRAINER=tfjs: every training and prediction needs it, some synchronously: load it now.
  if (!fusedTrainerWanted()) return loadTensorFlow().then(() => active ?? 'none');
  return Promise.resolve(`${preferred ?? `the first of ${ORDER.join(', ')} that starts`} (loaded on first use)`);
}

/** Starts the backend a deferred initBackend recorded (once); loadTensorFlow calls it. */
export async function initDeferredBackend(): Promise<string | undefined> {
  if (deferred === undefined) return active;
  const { preferred } = deferred;
  deferred = undefined;
  return selectNow(preferred);
}

function selectNow(preferred: BackendName | undefined): Promise<string> {
  const before = chain;
  const attempt = before.then((current) => select(current, preferred));
  chain = attempt.catch(() => before);
  return attempt;
}

function unknownBackend(name: string): Error {
  return new Error(`unknown TensorFlow.js backend ${JSON.stringify(name)} (expected one of ${ORDER.join(', ')})`);
}

async function select(current: string | undefined, preferred: BackendName | undefined): Promise<string> {
  if (current !== undefined && (preferred === undefined || preferred === current)) return current;
  if (preferred !== undefined) {
    if (!ORDER.includes(preferred)) throw unknownBackend(preferred);
    const problem = await tryBackend(preferred);
    if (problem !== null) throw new Error(`cannot use the TensorFlow.js backend "${preferred}": ${problem}`);
    return (active = preferred);
  }
  const problems: string[] = [];
  for (const name of ORDER) {
    const problem = await tryBackend(name);
    if (problem === null) return (active = name);
    problems.push(`${name}: ${problem}`);
  }
  throw new Error(`no TensorFlow.js backend could start (${problems.join('; ')})`);
}

/** The backend initBackend selected, or undefined before it succeeded once (or while deferred). */
export function currentBackend(): string | undefined {
  return active;
}

/** Starts one backend; returns null on success or why it failed. */
async function tryBackend(name: BackendName): Promise<string | null> {
  try {
    // The namespace tf.ts records, not the dynamic import's own: in the esbuild bundle (the demo,
    // `fedmark node`) tf.ts's `export * from '@tensorflow/tfjs'` of a CommonJS package re-exports
    // nothing through a dynamic import, and the nodes failed with "tf.findBackend is not a function".
    await import('./tf.ts');
    const tf = loadedTensorFlow();
    if (name === 'tensorflow') {
      // Optional dependency, usually absent: import by a computed name so that neither TypeScript
      // nor a bundler insists on resolving it.
      const pkg = '@tensorflow/tfjs-node';
      try {
        await import(pkg);
      } catch (err) {
        return `package ${pkg} is not installed or does not load (${firstLine(err)})`;
      }
      if (tf.findBackendFactory('tensorflow') === undefined) {
        return `${pkg} loaded but registered no "tensorflow" backend with this copy of @tensorflow/tfjs (version mismatch?)`;
      }
    } else if (name === 'wasm') {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      // In Node the backend finds its .wasm files next to its own script in node_modules (checked
      // with 4.22). Pointing it there explicitly keeps it working when this code is bundled.
      const dist = wasmDistDirectory();
      if (dist !== undefined && tf.findBackend('wasm') === null) {
        try {
          wasm.setWasmPaths(dist);
        } catch {
          // Already initialized once (a failed attempt): the paths can no longer change.
        }
      }
    }
    // On failure tfjs logs the reason (console.warn) and returns false.
    if (!(await tf.setBackend(name))) return 'initialization failed (TensorFlow.js logged why above)';
    await tf.ready();
    if (tf.getBackend() !== name) return `TensorFlow.js stayed on "${tf.getBackend()}"`;
    if (name === 'cpu') silenceCpuBanner(tf);
    return null;
  } catch (err) {
    return firstLine(err);
  }
}

function wasmDistDirectory(): string | undefined {
  try {
    const main = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm');
    const dist = dirname(main);
    return existsSync(join(dist, 'tfjs-backend-wasm.wasm')) ? dist + sep : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The cpu backend prints a "looks like you are running TensorFlow.js in Node.js... install
 * tfjs-node" banner on its first tensor. Trigger that first write now with tfjs's own warnings
 * switched off (its PROD flag only silences warnings), and switch them back on.
 */
function silenceCpuBanner(tf: typeof import('./tf.ts')): void {
  const env = tf.env();
  const prod = env.getBool('PROD');
  env.set('PROD', true);
  try {
    tf.scalar(0).dispose();
  } finally {
    env.set('PROD', prod);
  }
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : typeof err === 'object' && err !== null && 'message' in err ? String((err as { message: unknown }).message) : String(err);
  return message.split('\n')[0];
}
