/**
 * decodeWeightsView: the zero-copy decode of the coordinator's hot path. It must refuse exactly
 * what decodeWeights refuses (same message), return views over the frame when the body is
 * aligned in its buffer and one copy when it is not, and its SIMD finiteness check must find
 * NaN/Infinity anywhere, including in the tail of a tensor that does not fill a SIMD chunk.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { TensorSpec, WeightSet } from '../../protocols/tensors.ts';
import { decodeWeights, decodeWeightsView, encodeWeights, WeightsCodecError, type DecodeOptions } from '../../protocols/weights-codec.ts';

/** Runs both decoders; returns what each did (values as plain arrays, or the error message). */
function both(bytes: Uint8Array, options: DecodeOptions = {}): { copy: unknown; view: unknown } {
  const run = (decode: typeof decodeWeights) => {
    try {
      return { ok: decode(bytes, options).map((t) => ({ name: t.name, shape: t.shape, type: t.values.constructor.name, values: Array.from(t.values) })) };
    } catch (err) {
      expect(err).toBeInstanceOf(WeightsCodecError);
      return { error: (err as Error).message };
    }
  };
  return { copy: run(decodeWeights), view: run(decodeWeightsView) };
}

function expectSameOutcome(bytes: Uint8Array, options: DecodeOptions = {}): void {
  const { copy, view } = both(bytes, options);
  expect(view).toEqual(copy);
}

/** `frame` placed at byte offset `shift` of a larger buffer (shift 1..7: misaligned body). */
function atOffset(frame: Uint8Array, shift: number): Uint8Array {
  const big = new Uint8Array(frame.length + shift + 8);
  big.set(frame, shift);
  return big.subarray(shift, shift + frame.length);
}

function sampleWeights(n: number, dtype: 'float32' | 'float64' = 'float32'): WeightSet {
  const make = (k: number) => (dtype === 'float32' ? new Float32Array(k) : new Float64Array(k)).map((_, i) => Math.sin(i + 1) * 0.1);
  return [
    { name: 'dense/kernel', shape: [n, 3], values: make(n * 3) },
    { name: 'dense/bias', shape: [3], values: make(3) },
    { name: 'scalar', shape: [], values: make(1) },
  ];
}

describe('decodeWeightsView: zero copy', () => {
  it('returns views over the frame when the body is aligned, with the same values as decodeWeights', () => {
    const frame = encodeWeights(sampleWeights(5000));
    const view = decodeWeightsView(frame);
    const copy = decodeWeights(frame);
    expect(view.map((t) => Array.from(t.values))).toEqual(copy.map((t) => Array.from(t.values)));
    for (const t of view) {
      expect(t.values).toBeInstanceOf(Float32Array);
      expect(t.values.buffer).toBe(frame.buffer);
    }
    // A view: a change to the frame shows through (the documented contract).
    const body = new Float32Array(frame.buffer, frame.byteLength - 4 * (15000 + 3 + 1), 1);
    body[0] = 42;
    expect(view[0].values[0]).toBe(42);
  });

  it('views float64 frames too', () => {
    const frame = encodeWeights(sampleWeights(10, 'float64'), 'float64');
    const view = decodeWeightsView(frame);
    expect(view[0].values).toBeInstanceOf(Float64Array);
    expect(view[0].values.buffer).toBe(frame.buffer);
    expect(Array.from(view[0].values)).toEqual(Array.from(decodeWeights(frame)[0].values));
  });

  it('copies the body once when it is misaligned in its buffer, at every byte offset', () => {
    const frame = encodeWeights(sampleWeights(700));
    const frame64 = encodeWeights(sampleWeights(70, 'float64'), 'float64');
    for (let shift = 0; shift < 8; shift++) {
      for (const f of [frame, frame64]) {
        const bytes = atOffset(f, shift);
        const view = decodeWeightsView(bytes);
        expect(view.map((t) => Array.from(t.values))).toEqual(decodeWeights(f).map((t) => Array.from(t.values)));
        const bpe = view[0].values.BYTES_PER_ELEMENT;
        const aligned = shift % bpe === 0;
        // Aligned: views into the caller's buffer. Misaligned: all tensors share ONE fresh copy.
        for (const t of view) expect(t.values.buffer === bytes.buffer).toBe(aligned);
        if (!aligned) expect(new Set(view.map((t) => t.values.buffer)).size).toBe(1);
      }
    }
  });
});

describe('decodeWeightsView refuses what decodeWeights refuses', () => {
  const specs: TensorSpec[] = [
    { name: 'dense/kernel', shape: [300, 3] },
    { name: 'dense/bias', shape: [3] },
    { name: 'scalar', shape: [] },
  ];
  const good = encodeWeights(sampleWeights(300));

  it('NaN and +-Infinity at every position class of a large tensor (SIMD chunks, padding tail), aligned or not', () => {
    const n = 40_000 * 3 + 5; // not a multiple of 16: the last SIMD block is zero-padded
    const weights: WeightSet = [{ name: 'big', shape: [n], values: new Float32Array(n).fill(0.25) }];
    const frame = encodeWeights(weights);
    const bodyStart = frame.length - 4 * n;
    const positions = [0, 1, 15, 16, 16383, 16384, 16385, 65535, n - 6, n - 5, n - 2, n - 1];
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const index of positions) {
        const f = frame.slice();
        new DataView(f.buffer).setFloat32(bodyStart + 4 * index, bad, true);
        for (const shift of [0, 3]) {
          const bytes = atOffset(f, shift);
          const { view, copy } = both(bytes);
          expect(view).toEqual(copy);
          expect((view as { error: string }).error).toBe(`decode: tensor "big" has ${Number.isNaN(bad) ? 'NaN' : bad > 0 ? '+Infinity' : '-Infinity'} at flat index ${index}`);
        }
      }
    }
  });

  it('a NaN with a payload, negative NaN and the largest finite float32 (accepted)', () => {
    const n = 1000;
    const frame = encodeWeights([{ name: 't', shape: [n], values: new Float32Array(n) }]);
    const bodyStart = frame.length - 4 * n;
    for (const bits of [0x7f800001, 0xffc00000, 0x7fffffff]) {
      const f = frame.slice();
      new DataView(f.buffer).setUint32(bodyStart + 4 * 500, bits, true);
      expectSameOutcome(f);
      expect(() => decodeWeightsView(f)).toThrow(/NaN at flat index 500/);
    }
    const f = frame.slice();
    new DataView(f.buffer).setUint32(bodyStart + 4 * 999, 0xff7fffff, true); // -3.4028235e38
    expect(decodeWeightsView(f)[0].values[999]).toBe(-3.4028234663852886e38);
  });

  it('every structural refusal, with the same message', () => {
    const cases: Array<[string, Uint8Array, DecodeOptions?]> = [
      ['short', good.subarray(0, 5)],
      ['bad magic', Uint8Array.from([0x46, 0x4d, 0x57, 0x32, ...good.subarray(4)])],
      ['truncated header', good.subarray(0, 12)],
      ['truncated body', good.subarray(0, good.length - 4)],
      ['trailing bytes', Uint8Array.from([...good, 0, 0, 0, 0])],
      ['wrong dtype', good, { dtype: 'float64' }],
      ['over maxBytes', good, { maxBytes: good.length - 1 }],
      ['expected mismatch', good, { expected: [{ name: 'dense/kernel', shape: [3, 300] }, ...specs.slice(1)] }],
      ['expected match', good, { expected: specs, dtype: 'float32' }],
    ];
    const headerLength = new DataView(good.buffer).getUint32(4, true);
    const padded = good.slice();
    if ((8 + headerLength) % 8 !== 0) {
      padded[8 + headerLength] = 1;
      cases.push(['non-zero padding', padded]);
    }
    const header = good.slice();
    header[8] = 0x7b + 1; // the JSON header no longer starts with "{"
    cases.push(['bad JSON', header]);
    for (const [label, bytes, options] of cases) {
      for (const shift of [0, 1, 4]) {
        const { view, copy } = both(atOffset(bytes, shift), options);
        expect(view, label).toEqual(copy);
        if (label !== 'expected match') expect((view as { error?: string }).error, label).toBeTypeOf('string');
      }
    }
  });

  it('fuzz: random byte flips, truncations and offsets give the same outcome as decodeWeights', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(good.length),
        fc.integer({ min: 0, max: 7 }),
        (flips, cut, shift) => {
          const f = good.slice(0, Math.max(cut, 1));
          for (const [at, byte] of flips) if (at < f.length) f[at] = byte;
          expectSameOutcome(atOffset(f, shift));
        },
      ),
      { numRuns: 400 },
    );
  });
});
