/**
 * The WASM SIMD kernels of the fused trainer (source: models/fused-mlp-kernels.wat, assembled
 * with wabt's wat2wasm by models/fused-mlp-wasm-build.ts into the base64 below). Each FusedMlp
 * gets its own instance over its own memory, sized for its buffers, so views never detach.
 *
 * Why WASM: JavaScript has no SIMD; f32x4 lanes over a layer's output units do 4 multiply-adds
 * per instruction, measured ~2-3x faster than the scalar JavaScript kernels on these layers.
 */

// prettier-ignore
const KERNELS_BASE64 = 'AGFzbQEAAAABGAJgB39/f39/f38AYAp/f39/f39/f39/AAIPAQNlbnYGbWVtb3J5AgABAwMCAAEHDQIDZndkAAADYndkAAEKrwUC3wEDBn8BfQF7IAZBAnQhByAFQQJ0IQggAyAEIAdsaiEJAkADQCADIAlPDQFBACEMAkADQCAMIAdPDQEgAyAMaiACIAxq/QAEAP0LBAAgDEEQaiEMDAALCyAAIAhqIQogASELAkADQCAAIApPDQEgACoCACENIA1DAAAAAFwEQCAN/RMhDkEAIQwCQANAIAwgB08NASADIAxqIAMgDGr9AAQAIA4gCyAMav0ABAD95gH95AH9CwQAIAxBEGohDAwACwsLIABBBGohACALIAdqIQsMAAsLIAMgB2ohAwwACwsLywMEB38BfQN7AX0gCEECdCEKIAdBAnQhCyABIAYgCmxqIQ0CQANAIAEgDU8NAUEAIRACQANAIBAgCk8NASAEIBBqIAQgEGr9AAQAIAEgEGr9AAQA/eQB/QsEACAQQRBqIRAMAAsLIAAgC2ohDCACIQ4gAyEPAkADQCAAIAxPDQEgACoCACERIAlFBEAgEUMAAAAAXARAIBH9EyESQQAhEAJAA0AgECAKTw0BIA8gEGogDyAQav0ABAAgEiABIBBq/QAEAP3mAf3kAf0LBAAgEEEQaiEQDAALCwsFIAlBAkYgEUMAAAAAXkVxBEAgBUMAAAAAOAIABSAR/RMhEv0MAAAAAAAAAAAAAAAAAAAAACEUQQAhEAJAA0AgECAKTw0BIAEgEGr9AAQAIRMgFCATIA4gEGr9AAQA/eYB/eQBIRQgDyAQaiAPIBBq/QAEACASIBP95gH95AH9CwQAIBBBEGohEAwACwsgFP0fACAU/R8BkiAU/R8CIBT9HwOSkiEVIAlBA0YEQCAVQwAAgD8gESARlJOUIRULIAUgFTgCAAsgBUEEaiEFCyAAQQRqIQAgDiAKaiEOIA8gCmohDwwACwsgASAKaiEBDAALCws=';

export interface WasmKernels {
  memory: WebAssembly.Memory;
  /** z = a w + b, rows x n, for n a multiple of 4 (byte offsets). */
  fwd(a: number, w: number, b: number, z: number, rows: number, k: number, n: number): void;
  /** A layer's backward pass; act 0 = none below, 1 linear, 2 ReLU, 3 tanh. */
  bwd(a: number, dz: number, w: number, gw: number, gb: number, below: number, rows: number, k: number, n: number, act: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled module, or null where WebAssembly SIMD is not available. */
function kernelsModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(Buffer.from(KERNELS_BASE64, 'base64'));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** A fresh instance over a memory of at least `bytes` bytes, or null without WASM SIMD. */
export function instantiateKernels(bytes: number): WasmKernels | null {
  const module = kernelsModule();
  if (module === null) return null;
  const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
  const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
  return { memory, fwd: exports.fwd as WasmKernels['fwd'], bwd: exports.bwd as WasmKernels['bwd'] };
}
