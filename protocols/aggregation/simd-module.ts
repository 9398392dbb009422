/**
 * The bytes of a tiny WebAssembly module with two SIMD kernels for the aggregation hot path,
 * assembled here by hand (no toolchain dependency): V8 does not vectorize JavaScript loops, and
 * these two loops are what FedAvg spends its time in (on a 1M-value float32 update: the fold ~2x,
 * the check ~5x the best unrolled scalar JavaScript loop; bench/aggregation-bench.ts, path 'copy').
 *
 *   maxbits32(ptr: i32, n: i32) -> i32
 *       max over n float32 values at ptr of (bits & 0x7fffffff), n a multiple of 16. For IEEE 754
 *       values with the sign bit cleared, integer order is magnitude order and every NaN/Infinity
 *       pattern (exponent all ones) is >= 0x7f800000, so ONE integer max both finds max |x| and
 *       detects non-finite values (f32x4.max's NaN rules cost V8 several instructions per vector).
 *   axpy32(acc: i32, src: i32, n: i32, w: f64)
 *       acc[i] += w * f64(src[i]) for n float32 values (n a multiple of 8) into float64 sums.
 *       A multiply then an add, each rounded (no fused multiply-add in WebAssembly): the very
 *       operations of the scalar loop `s[i] += w * v[i]`, so the sums are bit for bit the same.
 *
 * The memory is imported ("env" "mem"), so each caller sizes its own. Encoding: WebAssembly core
 * spec 2.0, section 5 (binary format) and the fixed-width SIMD proposal's opcode table
 * (https://github.com/WebAssembly/simd/blob/main/proposals/simd/BinarySIMD.md).
 */

const SIMD_PREFIX = 0xfd;
const I32 = 0x7f;
const F64 = 0x7c;
const V128 = 0x7b;

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (i32 constants). */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const name = (s: string): number[] => [...uleb(s.length), ...Array.from(new TextEncoder().encode(s))];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const simd = (opcode: number, ...immediates: number[]): number[] => [SIMD_PREFIX, ...uleb(opcode), ...immediates];

// Instructions used below (core opcodes, then SIMD opcodes after the 0xfd prefix).
const get = (i: number) => [0x20, ...uleb(i)];
const set = (i: number) => [0x21, ...uleb(i)];
const i32const = (n: number) => [0x41, ...sleb(n)];
const I32_ADD = [0x6a];
const I32_SHL = [0x74];
const I32_GE_U = [0x4f];
const BLOCK = [0x02, 0x40];
const LOOP = [0x03, 0x40];
const END = [0x0b];
const br = (depth: number) => [0x0c, depth];
const brIf = (depth: number) => [0x0d, depth];
const v128load = (offset: number) => simd(0x00, 4, ...uleb(offset)); // align 2^4
const v128store = (offset: number) => simd(0x0b, 4, ...uleb(offset));
const v128const = (bytes: number[]) => simd(0x0c, ...bytes);
const shuffle = (lanes: number[]) => simd(0x0d, ...lanes);
const F64X2_SPLAT = simd(0x14);
const i32x4ExtractLane = (lane: number) => simd(0x1b, lane);
const V128_AND = simd(0x4e);
const F64X2_PROMOTE_LOW_F32X4 = simd(0x5f);
const I32X4_MAX_U = simd(0xb9);
const F64X2_ADD = simd(0xf0);
const F64X2_MUL = simd(0xf2);

const ABS_MASK = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f];
const HIGH_HALF_TO_LOW = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];

/** maxbits32: params 0 ptr, 1 n; locals 2 end, 3..6 four running maxima (independent chains), 7 mask. */
function maxbits32Body(): number[] {
  const maxima = [3, 4, 5, 6];
  return [
    ...vec([
      [1, I32],
      [5, V128],
    ]),
    ...v128const(ABS_MASK), ...set(7),
    ...get(0), ...get(1), ...i32const(2), ...I32_SHL, ...I32_ADD, ...set(2), // end = ptr + 4n
    ...BLOCK, ...LOOP,
    ...get(0), ...get(2), ...I32_GE_U, ...brIf(1),
    ...maxima.flatMap((m, k) => [...get(m), ...get(0), ...v128load(16 * k), ...get(7), ...V128_AND, ...I32X4_MAX_U, ...set(m)]),
    ...get(0), ...i32const(64), ...I32_ADD, ...set(0),
    ...br(0),
    ...END, ...END,
    // Reduce the four vectors, then the four lanes.
    ...get(3), ...get(4), ...I32X4_MAX_U, ...get(5), ...get(6), ...I32X4_MAX_U, ...I32X4_MAX_U, ...set(3),
    ...get(3), ...get(3), ...get(3), ...shuffle([8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]), ...I32X4_MAX_U, ...set(3),
    ...get(3), ...get(3), ...get(3), ...shuffle([4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]), ...I32X4_MAX_U,
    ...i32x4ExtractLane(0),
    ...END,
  ];
}

/** One f64x2 half: acc[base..base+16) += promote(x half) * W. */
function axpyHalf(x: number, base: number, high: boolean): number[] {
  const half = high ? [...get(x), ...get(x), ...shuffle(HIGH_HALF_TO_LOW)] : get(x);
  return [...get(0), ...get(0), ...v128load(base), ...half, ...F64X2_PROMOTE_LOW_F32X4, ...get(5), ...F64X2_MUL, ...F64X2_ADD, ...v128store(base)];
}

/** axpy32: params 0 acc, 1 src, 2 n, 3 w; locals 4 end, 5 W = splat(w), 6 and 7 two loaded f32x4. */
function axpy32Body(): number[] {
  return [
    ...vec([
      [1, I32],
      [3, V128],
    ]),
    ...get(3), ...F64X2_SPLAT, ...set(5),
    ...get(1), ...get(2), ...i32const(2), ...I32_SHL, ...I32_ADD, ...set(4), // end = src + 4n
    ...BLOCK, ...LOOP,
    ...get(1), ...get(4), ...I32_GE_U, ...brIf(1),
    ...get(1), ...v128load(0), ...set(6),
    ...get(1), ...v128load(16), ...set(7),
    ...axpyHalf(6, 0, false), ...axpyHalf(6, 16, true), ...axpyHalf(7, 32, false), ...axpyHalf(7, 48, true),
    ...get(1), ...i32const(32), ...I32_ADD, ...set(1),
    ...get(0), ...i32const(64), ...I32_ADD, ...set(0),
    ...br(0),
    ...END, ...END,
    ...END,
  ];
}

export function simdModuleBytes(): Uint8Array {
  const maxbits = maxbits32Body();
  const axpy = axpy32Body();
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vec([
      [0x60, ...vec([[I32], [I32]]), ...vec([[I32]])], // type 0: (i32, i32) -> i32
      [0x60, ...vec([[I32], [I32], [I32], [F64]]), ...vec([])], // type 1: (i32, i32, i32, f64) -> ()
    ])),
    ...section(2, vec([[...name('env'), ...name('mem'), 0x02, 0x00, ...uleb(1)]])), // import memory, min 1 page
    ...section(3, vec([[0], [1]])),
    ...section(7, vec([
      [...name('maxbits32'), 0x00, 0],
      [...name('axpy32'), 0x00, 1],
    ])),
    ...section(10, vec([
      [...uleb(maxbits.length), ...maxbits],
      [...uleb(axpy.length), ...axpy],
    ])),
  ]);
}
