/**
 * The WASM SIMD kernels of the fused trainer (source: models/fused-mlp-kernels.wat, assembled
 * with wabt's wat2wasm by models/fused-mlp-wasm-build.ts into the base64 below). Each FusedMlp
 * gets its own instance over its own memory, sized for its buffers, so views never detach.
 *
 * Why WASM: JavaScript has no SIMD; f32x4 lanes over a layer's output units do 4 multiply-adds
 * per instruction, measured ~3-5x faster than the scalar JavaScript kernels on these layers.
 * Everything that touches the memory per step runs here (layers, ReLU, the output unit, the
 * optimizer): JavaScript loops over views of a WebAssembly memory measured ~4x slower than over
 * a plain ArrayBuffer (V8 checks the growable buffer's length).
 */

// prettier-ignore
const KERNELS_BASE64 = 'AGFzbQEAAAABTQdgCH9/f39/f39/AGAGf39/f39/AGAJf39/f39/f39/AGAFf39/f30AYAR/f399AGANf39/f399fX19fX19fQBgCn9/f39/f39/f38AAg8BA2VudgZtZW1vcnkCAAEDCAcAAQIDBAUGBy8HA2Z3ZAAABGZ3ZDEAAQRid2QxAAIEcHJveAADA3NnZAAEBGFkYW0ABQNid2QABgrZCwelAgMGfwF9AXsgBkECdCEIIAVBAnQhCSADIAQgCGxqIQoCQANAIAMgCk8NAUEAIQ0CQANAIA0gCE8NASADIA1qIAIgDWr9AAQA/QsEACANQRBqIQ0MAAsLIAAgCWohCyABIQwCQANAIAAgC08NASAAKgIAIQ4gDkMAAAAAXARAIA79EyEPQQAhDQJAA0AgDSAITw0BIAMgDWogAyANav0ABAAgDyAMIA1q/QAEAP3mAf3kAf0LBAAgDUEQaiENDAALCwsgAEEEaiEAIAwgCGohDAwACwsgBwRAQQAhDQJAA0AgDSAITw0BIAMgDWr9DAAAAAAAAAAAAAAAAAAAAAAgAyANav0ABAD96wH9CwQAIA1BEGohDQwACwsLIAMgCGohAwwACwsLegMCfwF9AX8gBUECdCEJIAMgBEECdGohBgJAA0AgAyAGTw0BQwAAAAAhCEEAIQcCQANAIAcgCU8NASAIIAAgB2oqAgAgASAHaioCAJSSIQggB0EEaiEHDAALCyADIAggAioCAJI4AgAgACAJaiEAIANBBGohAwwACwsL3wECA38EfSAHQQJ0IQsgASAGQQJ0aiEJAkADQCABIAlPDQEgASoCACEMIA8gDJIhD0EAIQoCQANAIAogC08NASAAIApqKgIAIQ0gAyAKaiADIApqKgIAIA0gDJSSOAIAIAgEQCAMIAIgCmoqAgCUIQ4gCEECRgRAIA1DAAAAAF5FBEBDAAAAACEOCwsgCEEDRgRAIA5DAACAPyANIA2Uk5QhDgsgBSAKaiAOOAIACyAKQQRqIQoMAAsLIAAgC2ohACAFIAtqIQUgAUEEaiEBDAALCyAEIAQqAgAgD5I4AgALWAICfwF7IAT9EyEHIANBAnQhBgJAA0AgBSAGTw0BIAEgBWogASAFav0ABAAgByAAIAVq/QAEACACIAVq/QAEAP3lAf3mAf3kAf0LBAAgBUEQaiEFDAALCwtMAgJ/AXsgA/0TIQYgAkECdCEFAkADQCAEIAVPDQEgACAEaiAAIARq/QAEACAGIAEgBGr9AAQA/eYB/eUB/QsEACAEQRBqIQQMAAsLC+ABAgJ/C3sgBv0TIRIgB/0TIRMgCP0TIRQgCf0TIRUgCv0TIRYgC/0TIRcgDP0TIRggBf0TIRkgBEECdCEOAkADQCANIA5PDQEgASANav0ABAAhDyASIAIgDWr9AAQA/eYBIBQgD/3mAf3kASEQIBMgAyANav0ABAD95gEgFSAPIA/95gH95gH95AEhESACIA1qIBD9CwQAIAMgDWogEf0LBAAgACANaiAAIA1q/QAEACAZIBAgFv3nAf3mASARIBf95wH94wEgGP3kAf3nAf3lAf0LBAAgDUEQaiENDAALCwvLAwQHfwF9A3sBfSAIQQJ0IQogB0ECdCELIAEgBiAKbGohDQJAA0AgASANTw0BQQAhEAJAA0AgECAKTw0BIAQgEGogBCAQav0ABAAgASAQav0ABAD95AH9CwQAIBBBEGohEAwACwsgACALaiEMIAIhDiADIQ8CQANAIAAgDE8NASAAKgIAIREgCUUEQCARQwAAAABcBEAgEf0TIRJBACEQAkADQCAQIApPDQEgDyAQaiAPIBBq/QAEACASIAEgEGr9AAQA/eYB/eQB/QsEACAQQRBqIRAMAAsLCwUgCUECRiARQwAAAABeRXEEQCAFQwAAAAA4AgAFIBH9EyES/QwAAAAAAAAAAAAAAAAAAAAAIRRBACEQAkADQCAQIApPDQEgASAQav0ABAAhEyAUIBMgDiAQav0ABAD95gH95AEhFCAPIBBqIA8gEGr9AAQAIBIgE/3mAf3kAf0LBAAgEEEQaiEQDAALCyAU/R8AIBT9HwGSIBT9HwIgFP0fA5KSIRUgCUEDRgRAIBVDAACAPyARIBGUk5QhFQsgBSAVOAIACyAFQQRqIQULIABBBGohACAOIApqIQ4gDyAKaiEPDAALCyABIApqIQEMAAsLCw==';

export interface WasmKernels {
  memory: WebAssembly.Memory;
  /** z = a w + b, rows x n, for n a multiple of 4 (byte offsets); then ReLU when relu = 1. */
  fwd(a: number, w: number, b: number, z: number, rows: number, k: number, n: number, relu: number): void;
  /** A layer's backward pass; act 0 = none below, 1 linear, 2 ReLU, 3 tanh. */
  bwd(a: number, dz: number, w: number, gw: number, gb: number, below: number, rows: number, k: number, n: number, act: number): void;
  /** fwd and bwd for a 1-unit layer (any k). */
  fwd1(a: number, w: number, b: number, z: number, rows: number, k: number): void;
  bwd1(a: number, dz: number, w: number, gw: number, gb: number, below: number, rows: number, k: number, act: number): void;
  /** Over len4 (a multiple of 4) values: g += mu (p - global); p -= lr g; Adam. */
  prox(p: number, g: number, global: number, len4: number, mu: number): void;
  sgd(p: number, g: number, len4: number, lr: number): void;
  adam(p: number, g: number, m: number, v: number, len4: number, lr: number, b1: number, b2: number, c1: number, c2: number, corr1: number, corr2: number, eps: number): void;
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
  const kernel = <K extends keyof WasmKernels>(name: K) => exports[name] as WasmKernels[K];
  return { memory, fwd: kernel('fwd'), bwd: kernel('bwd'), fwd1: kernel('fwd1'), bwd1: kernel('bwd1'), prox: kernel('prox'), sgd: kernel('sgd'), adam: kernel('adam') };
}
