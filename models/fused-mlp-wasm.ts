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
const KERNELS_BASE64 = 'AGFzbQEAAAABSgdgCH9/f39/f39/AGAHf39/f39/fwBgBn9/f39/fwBgCX9/f39/f39/fwBgBX9/f399AGAEf39/fQBgDX9/f39/fX19fX19fX0AAg8BA2VudgZtZW1vcnkCAAEDDAsAAQIAAAACAwQFBgdQCwNmd2QAAARid2R3AAEGYndkdzE2AAIEYndkYQADBWJ3ZGE0AAQFZndkMTYABQRmd2QxAAYEYndkMQAHBHByb3gACANzZ2QACQRhZGFtAAoK1BULlQIDBn8BfQF7IAZBAnQhCCAFQQJ0IQkgAyAEIAhsaiEKAkADQCADIApPDQFBACENAkADQCANIAhPDQEgAyANaiACIA1q/QAEAP0LBAAgDUEQaiENDAALCyAAIAlqIQsgASEMAkADQCAAIAtPDQEgAP0JAgAhD0EAIQ0CQANAIA0gCE8NASADIA1qIAMgDWr9AAQAIA8gDCANav0ABAD95gH95AH9CwQAIA1BEGohDQwACwsgAEEEaiEAIAwgCGohDAwACwsgBwRAQQAhDQJAA0AgDSAITw0BIAMgDWr9DAAAAAAAAAAAAAAAAAAAAAAgAyANav0ABAD96wH9CwQAIA1BEGohDQwACwsLIAMgCGohAwwACwsLkAICB38BeyAGQQJ0IQcgBUECdCEIQQAhCgJAA0AgCiAHTw0BIAMgCmr9AAQAIQ4gASAKaiEMQQAhDQJAA0AgDSAETw0BIA4gDP0ABAD95AEhDiAMIAdqIQwgDUEBaiENDAALCyADIApqIA79CwQAIApBEGohCgwACwtBACEJAkADQCAJIAhPDQFBACEKAkADQCAKIAdPDQEgAv0ABAAhDiAAIAlqIQsgASAKaiEMQQAhDQJAA0AgDSAETw0BIA4gC/0JAgAgDP0ABAD95gH95AEhDiALIAhqIQsgDCAHaiEMIA1BAWohDQwACwsgAiAO/QsEACACQRBqIQIgCkEQaiEKDAALCyAJQQRqIQkMAAsLC5cCAgd/BXsgBUECdCEGIARBAnQhB0EAIQgCQANAIAggB08NAUEAIQkCQANAIAkgBk8NASAC/QAEACEOIAL9AAQQIQ8gAv0ABCAhECAC/QAEMCERIAAgCGohCiABIAlqIQtBACEMAkADQCAMIANPDQEgCv0JAgAhDSAOIA0gC/0ABAD95gH95AEhDiAPIA0gC/0ABBD95gH95AEhDyAQIA0gC/0ABCD95gH95AEhECARIA0gC/0ABDD95gH95AEhESAKIAdqIQogCyAGaiELIAxBAWohDAwACwsgAiAO/QsEACACIA/9CwQQIAIgEP0LBCAgAiAR/QsEMCACQcAAaiECIAlBwABqIQkMAAsLIAhBBGohCAwACwsLhAIDBX8BewJ9IAZBAnQhCCABIAQgCGxqIQwCQANAIAEgDE8NASAAIAVBAnRqIQkgAiEKAkADQCAAIAlPDQH9DAAAAAAAAAAAAAAAAAAAAAAhDUEAIQsCQANAIAsgCE8NASANIAEgC2r9AAQAIAogC2r9AAQA/eYB/eQBIQ0gC0EQaiELDAALCyAN/R8AIA39HwGSIA39HwIgDf0fA5KSIQ4gACoCACEPIAdBAkYEQCAOQwAAAAAgD0MAAAAAXhshDgsgB0EDRgRAIA5DAACAPyAPIA+Uk5QhDgsgAyAOOAIAIANBBGohAyAAQQRqIQAgCiAIaiEKDAALCyABIAhqIQEMAAsLC44EAgV/B3sgBkECdCEIIAEgBCAIbGohDAJAA0AgASAMTw0BIAAgBUECdGohCSACIQoCQANAIAAgCU8NAf0MAAAAAAAAAAAAAAAAAAAAACEO/QwAAAAAAAAAAAAAAAAAAAAAIQ/9DAAAAAAAAAAAAAAAAAAAAAAhEP0MAAAAAAAAAAAAAAAAAAAAACERQQAhCwJAA0AgCyAITw0BIAEgC2r9AAQAIQ0gDiANIAogC2r9AAQA/eYB/eQBIQ4gDyANIAogCGogC2r9AAQA/eYB/eQBIQ8gECANIAogCEEBdGogC2r9AAQA/eYB/eQBIRAgESANIAogCEEDbGogC2r9AAQA/eYB/eQBIREgC0EQaiELDAALCyAO/R8AIA79HwGSIA79HwIgDv0fA5KS/RMhEiASIA/9HwAgD/0fAZIgD/0fAiAP/R8DkpL9IAEhEiASIBD9HwAgEP0fAZIgEP0fAiAQ/R8DkpL9IAIhEiASIBH9HwAgEf0fAZIgEf0fAiAR/R8DkpL9IAMhEiAA/QAEACETIAdBAkYEQCASIBP9DAAAAAAAAAAAAAAAAAAAAAD9RP1OIRILIAdBA0YEQCAS/QwAAIA/AACAPwAAgD8AAIA/IBMgE/3mAf3lAf3mASESCyADIBL9CwQAIANBEGohAyAAQRBqIQAgCiAIQQJ0aiEKDAALCyABIAhqIQEMAAsLC5UDAwd/AX0FeyAGQQJ0IQggBUECdCEJIAMgBCAIbGohCgJAA0AgAyAKTw0BIAAgCWohDUEAIQsCQANAIAsgCE8NASACIAtq/QAEACERIAIgC2r9AAQQIRIgAiALav0ABCAhEyACIAtq/QAEMCEUIAAhDCABIAtqIQ4CQANAIAwgDU8NASAM/QkCACEQIBEgECAO/QAEAP3mAf3kASERIBIgECAO/QAEEP3mAf3kASESIBMgECAO/QAEIP3mAf3kASETIBQgECAO/QAEMP3mAf3kASEUIAxBBGohDCAOIAhqIQ4MAAsLIAcEQP0MAAAAAAAAAAAAAAAAAAAAACAR/esBIRH9DAAAAAAAAAAAAAAAAAAAAAAgEv3rASES/QwAAAAAAAAAAAAAAAAAAAAAIBP96wEhE/0MAAAAAAAAAAAAAAAAAAAAACAU/esBIRQLIAMgC2ogEf0LBAAgAyALaiAS/QsEECADIAtqIBP9CwQgIAMgC2ogFP0LBDAgC0HAAGohCwwACwsgDSEAIAMgCGohAwwACwsLegMCfwF9AX8gBUECdCEJIAMgBEECdGohBgJAA0AgAyAGTw0BQwAAAAAhCEEAIQcCQANAIAcgCU8NASAIIAAgB2oqAgAgASAHaioCAJSSIQggB0EEaiEHDAALCyADIAggAioCAJI4AgAgACAJaiEAIANBBGohAwwACwsL3wECA38EfSAHQQJ0IQsgASAGQQJ0aiEJAkADQCABIAlPDQEgASoCACEMIA8gDJIhD0EAIQoCQANAIAogC08NASAAIApqKgIAIQ0gAyAKaiADIApqKgIAIA0gDJSSOAIAIAgEQCAMIAIgCmoqAgCUIQ4gCEECRgRAIA1DAAAAAF5FBEBDAAAAACEOCwsgCEEDRgRAIA5DAACAPyANIA2Uk5QhDgsgBSAKaiAOOAIACyAKQQRqIQoMAAsLIAAgC2ohACAFIAtqIQUgAUEEaiEBDAALCyAEIAQqAgAgD5I4AgALWAICfwF7IAT9EyEHIANBAnQhBgJAA0AgBSAGTw0BIAEgBWogASAFav0ABAAgByAAIAVq/QAEACACIAVq/QAEAP3lAf3mAf3kAf0LBAAgBUEQaiEFDAALCwtMAgJ/AXsgA/0TIQYgAkECdCEFAkADQCAEIAVPDQEgACAEaiAAIARq/QAEACAGIAEgBGr9AAQA/eYB/eUB/QsEACAEQRBqIQQMAAsLC+ABAgJ/C3sgBv0TIRIgB/0TIRMgCP0TIRQgCf0TIRUgCv0TIRYgC/0TIRcgDP0TIRggBf0TIRkgBEECdCEOAkADQCANIA5PDQEgASANav0ABAAhDyASIAIgDWr9AAQA/eYBIBQgD/3mAf3kASEQIBMgAyANav0ABAD95gEgFSAPIA/95gH95gH95AEhESACIA1qIBD9CwQAIAMgDWogEf0LBAAgACANaiAAIA1q/QAEACAZIBAgFv3nAf3mASARIBf95wH94wEgGP3kAf3nAf3lAf0LBAAgDUEQaiENDAALCws=';

export interface WasmKernels {
  memory: WebAssembly.Memory;
  /** z = a w + b, rows x n, for n a multiple of 4 (byte offsets); then ReLU when relu = 1. */
  fwd(a: number, w: number, b: number, z: number, rows: number, k: number, n: number, relu: number): void;
  /** fwd for n a multiple of 16, register-blocked (same numbers). */
  fwd16(a: number, w: number, b: number, z: number, rows: number, k: number, n: number, relu: number): void;
  /** bwd in two passes: the kernel and bias gradients (c-j-i order), then the gradient below. */
  bwdw(a: number, dz: number, gw: number, gb: number, rows: number, k: number, n: number): void;
  /** bwdw's kernel gradient for n a multiple of 16, register-blocked (same sums). */
  bwdw16(a: number, dz: number, gw: number, rows: number, k: number, n: number): void;
  /** bwda for k and n multiples of 4, 4 inputs at a time (same sums). */
  bwda4(a: number, dz: number, w: number, below: number, rows: number, k: number, n: number, act: number): void;
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
  return { memory, fwd: kernel('fwd'), fwd16: kernel('fwd16'), bwdw: kernel('bwdw'), bwdw16: kernel('bwdw16'), bwda: kernel('bwda'), bwda4: kernel('bwda4'), fwd1: kernel('fwd1'), bwd1: kernel('bwd1'), prox: kernel('prox'), sgd: kernel('sgd'), adam: kernel('adam') };
}
