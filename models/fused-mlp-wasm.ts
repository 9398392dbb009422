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
const KERNELS_BASE64 = 'AGFzbQEAAAABVwhgCH9/f39/f39/AGAHf39/f39/fwBgBn9/f39/fwBgCX9/f39/f39/fwBgBX9/f399AGAEf39/fQBgDX9/f39/fX19fX19fX0AYAp/f39/f39/f39/AAIPAQNlbnYGbWVtb3J5AgABAwwLAAECAAACAwQFBgcHTgsDZndkAAAEYndkdwABBmJ3ZHcxNgACBGJ3ZGEAAwVmd2QxNgAEBGZ3ZDEABQRid2QxAAYEcHJveAAHA3NnZAAIBGFkYW0ACQNid2QACgr9FAuVAgMGfwF9AXsgBkECdCEIIAVBAnQhCSADIAQgCGxqIQoCQANAIAMgCk8NAUEAIQ0CQANAIA0gCE8NASADIA1qIAIgDWr9AAQA/QsEACANQRBqIQ0MAAsLIAAgCWohCyABIQwCQANAIAAgC08NASAA/QkCACEPQQAhDQJAA0AgDSAITw0BIAMgDWogAyANav0ABAAgDyAMIA1q/QAEAP3mAf3kAf0LBAAgDUEQaiENDAALCyAAQQRqIQAgDCAIaiEMDAALCyAHBEBBACENAkADQCANIAhPDQEgAyANav0MAAAAAAAAAAAAAAAAAAAAACADIA1q/QAEAP3rAf0LBAAgDUEQaiENDAALCwsgAyAIaiEDDAALCwuQAgIHfwF7IAZBAnQhByAFQQJ0IQhBACEKAkADQCAKIAdPDQEgAyAKav0ABAAhDiABIApqIQxBACENAkADQCANIARPDQEgDiAM/QAEAP3kASEOIAwgB2ohDCANQQFqIQ0MAAsLIAMgCmogDv0LBAAgCkEQaiEKDAALC0EAIQkCQANAIAkgCE8NAUEAIQoCQANAIAogB08NASAC/QAEACEOIAAgCWohCyABIApqIQxBACENAkADQCANIARPDQEgDiAL/QkCACAM/QAEAP3mAf3kASEOIAsgCGohCyAMIAdqIQwgDUEBaiENDAALCyACIA79CwQAIAJBEGohAiAKQRBqIQoMAAsLIAlBBGohCQwACwsLlwICB38FeyAFQQJ0IQYgBEECdCEHQQAhCAJAA0AgCCAHTw0BQQAhCQJAA0AgCSAGTw0BIAL9AAQAIQ4gAv0ABBAhDyAC/QAEICEQIAL9AAQwIREgACAIaiEKIAEgCWohC0EAIQwCQANAIAwgA08NASAK/QkCACENIA4gDSAL/QAEAP3mAf3kASEOIA8gDSAL/QAEEP3mAf3kASEPIBAgDSAL/QAEIP3mAf3kASEQIBEgDSAL/QAEMP3mAf3kASERIAogB2ohCiALIAZqIQsgDEEBaiEMDAALCyACIA79CwQAIAIgD/0LBBAgAiAQ/QsEICACIBH9CwQwIAJBwABqIQIgCUHAAGohCQwACwsgCEEEaiEIDAALCwuEAgMFfwF7An0gBkECdCEIIAEgBCAIbGohDAJAA0AgASAMTw0BIAAgBUECdGohCSACIQoCQANAIAAgCU8NAf0MAAAAAAAAAAAAAAAAAAAAACENQQAhCwJAA0AgCyAITw0BIA0gASALav0ABAAgCiALav0ABAD95gH95AEhDSALQRBqIQsMAAsLIA39HwAgDf0fAZIgDf0fAiAN/R8DkpIhDiAAKgIAIQ8gB0ECRgRAIA5DAAAAACAPQwAAAABeGyEOCyAHQQNGBEAgDkMAAIA/IA8gD5STlCEOCyADIA44AgAgA0EEaiEDIABBBGohACAKIAhqIQoMAAsLIAEgCGohAQwACwsLlQMDB38BfQV7IAZBAnQhCCAFQQJ0IQkgAyAEIAhsaiEKAkADQCADIApPDQEgACAJaiENQQAhCwJAA0AgCyAITw0BIAIgC2r9AAQAIREgAiALav0ABBAhEiACIAtq/QAEICETIAIgC2r9AAQwIRQgACEMIAEgC2ohDgJAA0AgDCANTw0BIAz9CQIAIRAgESAQIA79AAQA/eYB/eQBIREgEiAQIA79AAQQ/eYB/eQBIRIgEyAQIA79AAQg/eYB/eQBIRMgFCAQIA79AAQw/eYB/eQBIRQgDEEEaiEMIA4gCGohDgwACwsgBwRA/QwAAAAAAAAAAAAAAAAAAAAAIBH96wEhEf0MAAAAAAAAAAAAAAAAAAAAACAS/esBIRL9DAAAAAAAAAAAAAAAAAAAAAAgE/3rASET/QwAAAAAAAAAAAAAAAAAAAAAIBT96wEhFAsgAyALaiAR/QsEACADIAtqIBL9CwQQIAMgC2ogE/0LBCAgAyALaiAU/QsEMCALQcAAaiELDAALCyANIQAgAyAIaiEDDAALCwt6AwJ/AX0BfyAFQQJ0IQkgAyAEQQJ0aiEGAkADQCADIAZPDQFDAAAAACEIQQAhBwJAA0AgByAJTw0BIAggACAHaioCACABIAdqKgIAlJIhCCAHQQRqIQcMAAsLIAMgCCACKgIAkjgCACAAIAlqIQAgA0EEaiEDDAALCwvfAQIDfwR9IAdBAnQhCyABIAZBAnRqIQkCQANAIAEgCU8NASABKgIAIQwgDyAMkiEPQQAhCgJAA0AgCiALTw0BIAAgCmoqAgAhDSADIApqIAMgCmoqAgAgDSAMlJI4AgAgCARAIAwgAiAKaioCAJQhDiAIQQJGBEAgDUMAAAAAXkUEQEMAAAAAIQ4LCyAIQQNGBEAgDkMAAIA/IA0gDZSTlCEOCyAFIApqIA44AgALIApBBGohCgwACwsgACALaiEAIAUgC2ohBSABQQRqIQEMAAsLIAQgBCoCACAPkjgCAAtYAgJ/AXsgBP0TIQcgA0ECdCEGAkADQCAFIAZPDQEgASAFaiABIAVq/QAEACAHIAAgBWr9AAQAIAIgBWr9AAQA/eUB/eYB/eQB/QsEACAFQRBqIQUMAAsLC0wCAn8BeyAD/RMhBiACQQJ0IQUCQANAIAQgBU8NASAAIARqIAAgBGr9AAQAIAYgASAEav0ABAD95gH95QH9CwQAIARBEGohBAwACwsL4AECAn8LeyAG/RMhEiAH/RMhEyAI/RMhFCAJ/RMhFSAK/RMhFiAL/RMhFyAM/RMhGCAF/RMhGSAEQQJ0IQ4CQANAIA0gDk8NASABIA1q/QAEACEPIBIgAiANav0ABAD95gEgFCAP/eYB/eQBIRAgEyADIA1q/QAEAP3mASAVIA8gD/3mAf3mAf3kASERIAIgDWogEP0LBAAgAyANaiAR/QsEACAAIA1qIAAgDWr9AAQAIBkgECAW/ecB/eYBIBEgF/3nAf3jASAY/eQB/ecB/eUB/QsEACANQRBqIQ0MAAsLC7cDBAd/AX0DewF9IAhBAnQhCiAHQQJ0IQsgASAGIApsaiENAkADQCABIA1PDQFBACEQAkADQCAQIApPDQEgBCAQaiAEIBBq/QAEACABIBBq/QAEAP3kAf0LBAAgEEEQaiEQDAALCyAAIAtqIQwgAiEOIAMhDwJAA0AgACAMTw0BIAAqAgAhESAR/RMhEv0MAAAAAAAAAAAAAAAAAAAAACEUQQAhECAJRQRAAkADQCAQIApPDQEgDyAQaiAPIBBq/QAEACASIAEgEGr9AAQA/eYB/eQB/QsEACAQQRBqIRAMAAsLCwJAA0AgECAKTw0BIAEgEGr9AAQAIRMgFCATIA4gEGr9AAQA/eYB/eQBIRQgDyAQaiAPIBBq/QAEACASIBP95gH95AH9CwQAIBBBEGohEAwACwsgCQRAIBT9HwAgFP0fAZIgFP0fAiAU/R8DkpIhFSAJQQJGBEAgFUMAAAAAIBFDAAAAAF4bIRULIAlBA0YEQCAVQwAAgD8gESARlJOUIRULIAUgFTgCACAFQQRqIQULIABBBGohACAOIApqIQ4gDyAKaiEPDAALCyABIApqIQEMAAsLCw==';

export interface WasmKernels {
  memory: WebAssembly.Memory;
  /** z = a w + b, rows x n, for n a multiple of 4 (byte offsets); then ReLU when relu = 1. */
  fwd(a: number, w: number, b: number, z: number, rows: number, k: number, n: number, relu: number): void;
  /** A layer's backward pass; act 0 = none below, 1 linear, 2 ReLU, 3 tanh. */
  bwd(a: number, dz: number, w: number, gw: number, gb: number, below: number, rows: number, k: number, n: number, act: number): void;
  /** fwd for n a multiple of 16, register-blocked (same numbers). */
  fwd16(a: number, w: number, b: number, z: number, rows: number, k: number, n: number, relu: number): void;
  /** bwd in two passes: the kernel and bias gradients (c-j-i order), then the gradient below. */
  bwdw(a: number, dz: number, gw: number, gb: number, rows: number, k: number, n: number): void;
  /** bwdw's kernel gradient for n a multiple of 16, register-blocked (same sums). */
  bwdw16(a: number, dz: number, gw: number, rows: number, k: number, n: number): void;
  bwda(a: number, dz: number, w: number, below: number, rows: number, k: number, n: number, act: number): void;
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
  return { memory, fwd: kernel('fwd'), fwd16: kernel('fwd16'), bwdw: kernel('bwdw'), bwdw16: kernel('bwdw16'), bwda: kernel('bwda'), bwd: kernel('bwd'), fwd1: kernel('fwd1'), bwd1: kernel('bwd1'), prox: kernel('prox'), sgd: kernel('sgd'), adam: kernel('adam') };
}
