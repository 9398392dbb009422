import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { tensorSize, type DType, type NamedTensor, type TensorSpec, type WeightSet } from '../../protocols/tensors.ts';
import {
  decodeWeights,
  encodeWeights,
  readAllBytes,
  sha256Hex,
  WeightsCodecError,
  type DecodeOptions,
} from '../../protocols/weights-codec.ts';

// ---------------------------------------------------------------------------------------------
// helpers

const f32 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float32Array.from(values) });
const f64 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float64Array.from(values) });

const te = new TextEncoder();

/** Builds a frame by hand: magic, header length, header text, zero padding to 8, body. */
function rawFrame(header: unknown, body: Uint8Array = new Uint8Array(0), opts: { magic?: string; padByte?: number } = {}): Uint8Array {
  const headerBytes = typeof header === 'string' ? te.encode(header) : header instanceof Uint8Array ? header : te.encode(JSON.stringify(header));
  const bodyOffset = Math.ceil((8 + headerBytes.length) / 8) * 8;
  const out = new Uint8Array(bodyOffset + body.length);
  out.set(te.encode(opts.magic ?? 'FMW1'), 0);
  new DataView(out.buffer).setUint32(4, headerBytes.length, true);
  out.set(headerBytes, 8);
  out.fill(opts.padByte ?? 0, 8 + headerBytes.length, bodyOffset);
  out.set(body, bodyOffset);
  return out;
}

function f32Body(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** Asserts that fn throws a WeightsCodecError whose message matches. */
function expectCodecError(fn: () => unknown, message: RegExp | string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected a WeightsCodecError').toBeInstanceOf(WeightsCodecError);
  if (typeof message === 'string') expect((thrown as Error).message).toContain(message);
  else expect((thrown as Error).message).toMatch(message);
}

function bitsEqual(a: Float32Array | Float64Array, b: Float32Array | Float64Array): boolean {
  if (a.constructor !== b.constructor || a.length !== b.length) return false;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return x.every((v, i) => v === y[i]);
}

const nameArb = fc.oneof(
  fc.string({ minLength: 1, maxLength: 12 }),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }),
  fc.constantFrom('dense/kernel:0', 'a"b\\c', 'ünïcødé', '😀 emoji', ' '),
);
const shapeArb = fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 });
const finiteF32 = fc.float({ noNaN: true, noDefaultInfinity: true });
const finiteF64 = fc.double({ noNaN: true, noDefaultInfinity: true });

function weightSetArb(valueArb: fc.Arbitrary<number>, makeArray: (v: number[]) => Float32Array | Float64Array): fc.Arbitrary<WeightSet> {
  return fc
    .uniqueArray(fc.record({ name: nameArb, shape: shapeArb }), { selector: (t) => t.name, maxLength: 5 })
    .chain((specs) =>
      fc.tuple(
        ...specs.map((s) =>
          fc
            .array(valueArb, { minLength: tensorSize(s.shape), maxLength: tensorSize(s.shape) })
            .map((vals): NamedTensor => ({ name: s.name, shape: s.shape, values: makeArray(vals) })),
        ),
      ),
    )
    .map((ts) => [...ts]);
}

const f32SetArb = weightSetArb(finiteF32, (v) => Float32Array.from(v));
const f64SetArb = weightSetArb(finiteF64, (v) => Float64Array.from(v));

const sample: WeightSet = [f32('dense/kernel', [2, 3], [1, 2, 3, 4, 5, 6]), f32('dense/bias', [3], [0.5, -0.5, 0]), f32('scale', [], [7])];
const sampleSpecs: TensorSpec[] = sample.map((t) => ({ name: t.name, shape: t.shape }));

// ---------------------------------------------------------------------------------------------

describe('encodeWeights: layout', () => {
  it('writes magic, header length, JSON header, zero padding to 8 bytes, then little-endian values', () => {
    const bytes = encodeWeights([f32('w', [2], [1.5, -2]), f32('b', [], [3])]);
    expect(Array.from(bytes.subarray(0, 4))).toEqual([0x46, 0x4d, 0x57, 0x31]);
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    const headerLength = dv.getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
    expect(header).toEqual({ dtype: 'float32', tensors: [{ name: 'w', shape: [2] }, { name: 'b', shape: [] }] });
    const bodyOffset = Math.ceil((8 + headerLength) / 8) * 8;
    expect(bytes.subarray(8 + headerLength, bodyOffset).every((b) => b === 0)).toBe(true);
    expect(bytes.length).toBe(bodyOffset + 3 * 4);
    expect([0, 4, 8].map((o) => dv.getFloat32(bodyOffset + o, true))).toEqual([1.5, -2, 3]);
  });

  it('writes float64 bodies when asked', () => {
    const bytes = encodeWeights([f64('x', [1], [0.1])], 'float64');
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    expect(dv.getFloat64(bytes.length - 8, true)).toBe(0.1);
    expect(decodeWeights(bytes)[0].values).toBeInstanceOf(Float64Array);
  });

  it('is ~4x smaller than JSON for realistic weights', () => {
    const values = Float32Array.from({ length: 10_000 }, (_, i) => Math.sin(i) * 0.05);
    const bin = encodeWeights([{ name: 'w', shape: [10_000], values }]);
    const json = JSON.stringify(Array.from(values));
    expect(json.length / bin.length).toBeGreaterThan(3.5);
  });
});

describe('round trips', () => {
  it('float32 values survive bit-exactly (including -0 and subnormals)', () => {
    fc.assert(
      fc.property(f32SetArb, (w) => {
        const decoded = decodeWeights(encodeWeights(w));
        expect(decoded.map((t) => t.name)).toEqual(w.map((t) => t.name));
        expect(decoded.map((t) => t.shape)).toEqual(w.map((t) => t.shape));
        decoded.forEach((t, k) => expect(bitsEqual(t.values, w[k].values)).toBe(true));
      }),
      { numRuns: 300 },
    );
  });

  it('float64 values survive bit-exactly with dtype float64', () => {
    fc.assert(
      fc.property(f64SetArb, (w) => {
        const decoded = decodeWeights(encodeWeights(w, 'float64'), { dtype: 'float64', expected: w.map((t) => ({ name: t.name, shape: t.shape })) });
        decoded.forEach((t, k) => expect(bitsEqual(t.values, w[k].values)).toBe(true));
      }),
      { numRuns: 300 },
    );
  });

  it('float64 input encoded as float32 rounds to nearest (Math.fround)', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: -3e38, max: 3e38, noNaN: true }), { maxLength: 50 }), (vals) => {
        const [t] = decodeWeights(encodeWeights([f64('t', [vals.length], vals)], 'float32'));
        expect(t.values).toBeInstanceOf(Float32Array);
        expect(Array.from(t.values)).toEqual(vals.map(Math.fround));
      }),
    );
  });

  it('float32 input encoded as float64 is exact', () => {
    fc.assert(
      fc.property(fc.array(finiteF32, { maxLength: 50 }), (vals) => {
        const [t] = decodeWeights(encodeWeights([f32('t', [vals.length], vals)], 'float64'));
        expect(t.values).toBeInstanceOf(Float64Array);
        expect(Array.from(t.values)).toEqual(vals.map(Math.fround));
      }),
    );
  });

  it('decodes frames at any byte offset and returns arrays that do not alias the input', () => {
    const bytes = encodeWeights(sample);
    for (const shift of [1, 2, 3, 5, 7]) {
      const host = new Uint8Array(bytes.length + 16);
      host.set(bytes, shift);
      const view = host.subarray(shift, shift + bytes.length);
      const decoded = decodeWeights(view, { expected: sampleSpecs, dtype: 'float32' });
      expect(decoded.map((t) => Array.from(t.values))).toEqual(sample.map((t) => Array.from(t.values)));
      host.fill(0xff);
      expect(Array.from(decoded[0].values)).toEqual([1, 2, 3, 4, 5, 6]);
    }
  });

  it('accepts tensors in any order when `expected` is given, and empty weight sets', () => {
    const reversed = [...sampleSpecs].reverse();
    expect(decodeWeights(encodeWeights(sample), { expected: reversed }).map((t) => t.name)).toEqual(sample.map((t) => t.name));
    expect(decodeWeights(encodeWeights([]))).toEqual([]);
    const zeroSize = decodeWeights(encodeWeights([f32('empty', [3, 0], [])]));
    expect(zeroSize[0].shape).toEqual([3, 0]);
    expect(zeroSize[0].values.length).toBe(0);
  });
});

describe('encodeWeights: refusals', () => {
  it('refuses NaN and +-Infinity, naming the tensor and flat index', () => {
    expectCodecError(() => encodeWeights([f32('ok', [1], [1]), f32('bad', [3], [0, Number.NaN, 0])]), 'tensor "bad" has NaN at flat index 1');
    expectCodecError(() => encodeWeights([f64('inf', [2], [0, Number.POSITIVE_INFINITY])], 'float64'), 'tensor "inf" has +Infinity at flat index 1');
    expectCodecError(() => encodeWeights([f64('ninf', [1], [Number.NEGATIVE_INFINITY])]), 'tensor "ninf" has -Infinity at flat index 0');
  });

  it('refuses finite float64 values that overflow float32', () => {
    expectCodecError(() => encodeWeights([f64('big', [2], [1, 1e39])]), /tensor "big" has \+Infinity at flat index 1 \(1e\+39 overflows float32\)/);
    expect(() => encodeWeights([f64('big', [2], [1, 1e39])], 'float64')).not.toThrow();
  });

  it('refuses inconsistent tensors and duplicate or empty names', () => {
    expectCodecError(() => encodeWeights([f32('a', [2, 2], [1, 2, 3])]), 'tensor "a": shape [2,2] needs 4 values, got 3');
    expectCodecError(() => encodeWeights([f32('a', [-1], [])]), 'tensor "a": shape [-1] dimension 0 is -1');
    expectCodecError(() => encodeWeights([f32('a', [1.5], [1])]), 'dimension 0 is 1.5');
    expectCodecError(() => encodeWeights([f32('a', [1], [1]), f32('a', [1], [2])]), 'duplicate tensor name "a"');
    expectCodecError(() => encodeWeights([f32('', [1], [1])]), 'name must be a non-empty string');
    expectCodecError(() => encodeWeights([f32('x\uD800', [1], [1])]), 'lone UTF-16 surrogate');
    expectCodecError(
      () => encodeWeights([{ name: 'a', shape: [2], values: [1, 2] as unknown as Float32Array }]),
      'values must be a Float32Array or Float64Array',
    );
  });
});

describe('decodeWeights: rejections', () => {
  const goodHeader = { dtype: 'float32', tensors: [{ name: 'w', shape: [2] }] };
  const goodBody = f32Body([1, 2]);

  it('accepts the hand-built reference frame', () => {
    expect(Array.from(decodeWeights(rawFrame(goodHeader, goodBody))[0].values)).toEqual([1, 2]);
    expect(rawFrame(goodHeader, goodBody)).toEqual(encodeWeights([f32('w', [2], [1, 2])]));
  });

  it('bad magic', () => {
    expectCodecError(() => decodeWeights(rawFrame(goodHeader, goodBody, { magic: 'FMW2' })), 'bad magic: expected "FMW1" (46 4d 57 31), got 46 4d 57 32');
    expectCodecError(() => decodeWeights(te.encode('{"dtype":"float32","tensors":[]}')), 'bad magic');
  });

  it('truncated header', () => {
    expectCodecError(() => decodeWeights(new Uint8Array(0)), 'truncated header: frame is 0 bytes');
    expectCodecError(() => decodeWeights(te.encode('FMW1')), 'truncated header: frame is 4 bytes');
    const frame = rawFrame(goodHeader, goodBody);
    new DataView(frame.buffer).setUint32(4, 10_000, true);
    expectCodecError(() => decodeWeights(frame), 'truncated header: header declares 10000 bytes');
    new DataView(frame.buffer).setUint32(4, 0xffffffff, true);
    expectCodecError(() => decodeWeights(frame), 'truncated header: header declares 4294967295 bytes');
  });

  it('truncated body, naming the tensor', () => {
    const frame = rawFrame({ dtype: 'float32', tensors: [{ name: 'a', shape: [1] }, { name: 'b', shape: [3] }] }, f32Body([1, 2, 3, 4]));
    expectCodecError(() => decodeWeights(frame.subarray(0, frame.length - 1)), 'truncated body: tensor "b" (shape [3]) needs 12 bytes at body offset 4, but the body has 15 bytes');
    expectCodecError(() => decodeWeights(frame.subarray(0, frame.length - 16)), 'truncated body: tensor "a"');
  });

  // JSON text with a trailing space: 8 + length is not a multiple of 8, so the frame has padding.
  const paddedHeader = JSON.stringify(goodHeader) + ' ';

  it('a frame that ends inside the header padding', () => {
    const headerEnd = 8 + te.encode(paddedHeader).length;
    expect(headerEnd % 8).not.toBe(0);
    const frame = rawFrame(paddedHeader, goodBody);
    expectCodecError(() => decodeWeights(frame.subarray(0, headerEnd)), 'truncated body: frame ends inside the header padding');
  });

  it('non-zero padding', () => {
    expect(Array.from(decodeWeights(rawFrame(paddedHeader, goodBody))[0].values)).toEqual([1, 2]);
    expectCodecError(() => decodeWeights(rawFrame(paddedHeader, goodBody, { padByte: 7 })), /header padding byte at offset \d+ is 7, must be 0/);
  });

  it('trailing bytes', () => {
    const frame = encodeWeights([f32('w', [2], [1, 2])]);
    const longer = new Uint8Array(frame.length + 3);
    longer.set(frame);
    expectCodecError(() => decodeWeights(longer), 'trailing bytes: 3 bytes after the last tensor (body should be 8 bytes)');
  });

  it('header that is not valid UTF-8 or not JSON', () => {
    expectCodecError(() => decodeWeights(rawFrame(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))), 'header is not valid UTF-8');
    expectCodecError(() => decodeWeights(rawFrame('{"dtype": "float32", tensors: []}')), 'header is not valid JSON');
    expectCodecError(() => decodeWeights(rawFrame('')), 'header is not valid JSON');
  });

  it('header with the wrong structure (zod)', () => {
    expectCodecError(() => decodeWeights(rawFrame(5)), /invalid header: header: .*expected object/i);
    expectCodecError(() => decodeWeights(rawFrame({ tensors: [] })), /invalid header: header field "dtype"/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'int8', tensors: [] })), /invalid header: header field "dtype"/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: {} })), /invalid header: header field "tensors".*expected array/i);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [], extra: 1 })), /invalid header: header: .*"extra"/i);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 3, shape: [] }] })), /invalid header: tensor at index 0: field "name"/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: '', shape: [] }] })), 'invalid header: tensor "" (index 0): field "name": must be a non-empty string');
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w' }] })), /invalid header: tensor "w" \(index 0\): field "shape"/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: [1], dtype: 'x' }] })), /tensor "w" \(index 0\).*"dtype"/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [null] })), /invalid header: tensor at index 0/);
  });

  it('non-integer or negative dims, naming the tensor and dimension', () => {
    expectCodecError(
      () => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'ok', shape: [1] }, { name: 'w', shape: [2, 1.5] }] })),
      'invalid header: tensor "w" (index 1): shape [2,1.5] dimension 1 (1.5): must be an integer',
    );
    expectCodecError(
      () => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: [-2] }] })),
      'invalid header: tensor "w" (index 0): shape [-2] dimension 0 (-2): must be non-negative',
    );
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: ['2'] }] })), /tensor "w" \(index 0\): shape \["2"\] dimension 0/);
    expectCodecError(() => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: [1e300] }] })), 'tensor "w" (index 0): shape [1e+300] dimension 0');
  });

  it('huge declared shapes are refused before allocating', () => {
    expectCodecError(
      () => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: [2 ** 40, 2 ** 40, 2 ** 40] }] }, goodBody)),
      'truncated body: tensor "w"',
    );
  });

  it('duplicate tensor names', () => {
    expectCodecError(
      () => decodeWeights(rawFrame({ dtype: 'float32', tensors: [{ name: 'w', shape: [1] }, { name: 'w', shape: [1] }] }, goodBody)),
      'invalid header: duplicate tensor name "w"',
    );
  });

  it('NaN and +-Infinity, naming the tensor and flat index', () => {
    const header = { dtype: 'float32', tensors: [{ name: 'a', shape: [2] }, { name: 'b', shape: [2, 2] }] };
    expectCodecError(() => decodeWeights(rawFrame(header, f32Body([0, 1, 2, 3, Number.NaN, 5]))), 'decode: tensor "b" has NaN at flat index 2');
    expectCodecError(() => decodeWeights(rawFrame(header, f32Body([Number.POSITIVE_INFINITY, 1, 2, 3, 4, 5]))), 'decode: tensor "a" has +Infinity at flat index 0');
    expectCodecError(() => decodeWeights(rawFrame(header, f32Body([0, 1, 2, 3, 4, Number.NEGATIVE_INFINITY]))), 'decode: tensor "b" has -Infinity at flat index 3');
    // A signalling/odd-payload NaN bit pattern is caught too.
    const body = f32Body([0, 1, 2, 3, 4, 5]);
    new DataView(body.buffer).setUint32(4, 0x7f800001, true);
    expectCodecError(() => decodeWeights(rawFrame(header, body)), 'tensor "a" has NaN at flat index 1');
    const f64Header = { dtype: 'float64', tensors: [{ name: 'd', shape: [2] }] };
    expectCodecError(() => decodeWeights(rawFrame(f64Header, new Uint8Array(Float64Array.from([1, Number.NaN]).buffer))), 'tensor "d" has NaN at flat index 1');
  });

  it('expected specs: missing, extra, reshaped tensors', () => {
    const bytes = encodeWeights(sample);
    expectCodecError(
      () => decodeWeights(bytes, { expected: [...sampleSpecs, { name: 'extra/w', shape: [4] }] }),
      'frame does not match the expected tensors: missing tensor "extra/w" (expected shape [4])',
    );
    expectCodecError(() => decodeWeights(bytes, { expected: sampleSpecs.slice(1) }), 'unexpected tensor "dense/kernel" (shape [2,3])');
    expectCodecError(
      () => decodeWeights(bytes, { expected: [{ name: 'dense/kernel', shape: [3, 2] }, ...sampleSpecs.slice(1)] }),
      'tensor "dense/kernel": expected shape [3,2], got [2,3]',
    );
  });

  it('required dtype and maxBytes', () => {
    expectCodecError(() => decodeWeights(encodeWeights(sample), { dtype: 'float64' }), 'wrong dtype: expected float64, got float32');
    const bytes = encodeWeights(sample);
    expectCodecError(() => decodeWeights(bytes, { maxBytes: bytes.length - 1 }), `frame is ${bytes.length} bytes, over the limit of ${bytes.length - 1}`);
    expect(decodeWeights(bytes, { maxBytes: bytes.length })).toHaveLength(3);
  });
});

describe('fuzz: corrupt input only ever raises WeightsCodecError', () => {
  const base = encodeWeights([f32('dense/kernel', [4, 3], Array.from({ length: 12 }, (_, i) => i / 7)), f32('bias', [3], [0.1, 0.2, 0.3])]);
  const base64 = encodeWeights([f64('x', [5], [1, 2, 3, 4, 5])], 'float64');

  function decodeOrCodecError(bytes: Uint8Array, options?: DecodeOptions): 'ok' | 'error' {
    try {
      const out = decodeWeights(bytes, options);
      for (const t of out) {
        expect(t.values.length).toBe(tensorSize(t.shape));
        for (const x of t.values) expect(Number.isFinite(x)).toBe(true);
      }
      return 'ok';
    } catch (err) {
      if (!(err instanceof WeightsCodecError)) throw err;
      expect(err.message.length).toBeGreaterThan(0);
      return 'error';
    }
  }

  it('random byte flips', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(base, base64),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        (frame, flips, withExpected) => {
          const bytes = frame.slice();
          for (const [pos, xor] of flips) bytes[pos % bytes.length] ^= xor;
          decodeOrCodecError(bytes, withExpected ? { expected: decodeWeights(frame).map((t) => ({ name: t.name, shape: t.shape })) } : undefined);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('truncations and extensions', () => {
    fc.assert(
      fc.property(fc.constantFrom(base, base64), fc.nat(), fc.uint8Array({ maxLength: 16 }), (frame, cut, extra) => {
        const n = cut % (frame.length + 1);
        expect(decodeOrCodecError(frame.subarray(0, n))).toBe(n === frame.length ? 'ok' : 'error');
        const longer = new Uint8Array(frame.length + extra.length);
        longer.set(frame);
        longer.set(extra, frame.length);
        expect(decodeOrCodecError(longer)).toBe(extra.length === 0 ? 'ok' : 'error');
      }),
      { numRuns: 500 },
    );
  });

  it('random bytes, with and without a valid magic', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (junk, magic) => {
        const bytes = junk.slice();
        if (magic && bytes.length >= 4) bytes.set([0x46, 0x4d, 0x57, 0x31]);
        decodeOrCodecError(bytes);
      }),
      { numRuns: 1000 },
    );
  });

  it('random JSON headers', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.uint8Array({ maxLength: 64 }), (header, body) => {
        decodeOrCodecError(rawFrame(header, body));
      }),
      { numRuns: 500 },
    );
  });

  it('structurally valid headers with random shapes and bodies', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<DType>('float32', 'float64'),
        fc.array(fc.record({ name: fc.string({ maxLength: 3 }), shape: fc.array(fc.integer({ min: -2, max: 4 }), { maxLength: 3 }) }), { maxLength: 3 }),
        fc.uint8Array({ maxLength: 128 }),
        (dtype, tensors, body) => {
          decodeOrCodecError(rawFrame({ dtype, tensors }, body));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('sha256Hex', () => {
  it('matches known vectors', () => {
    expect(sha256Hex(new Uint8Array(0))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(sha256Hex(te.encode('abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('hashes only the viewed bytes of a subarray', () => {
    const host = te.encode('xxabcxx');
    expect(sha256Hex(host.subarray(2, 5))).toBe(sha256Hex(te.encode('abc')));
  });
});

describe('readAllBytes', () => {
  async function* chunks(...parts: number[][]): AsyncGenerator<Uint8Array> {
    for (const p of parts) yield Uint8Array.from(p);
  }

  it('concatenates chunks into one array', async () => {
    const out = await readAllBytes(chunks([1, 2], [], [3], [4, 5, 6]));
    expect(Array.from(out)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(out.byteOffset).toBe(0);
    expect((await readAllBytes(chunks())).length).toBe(0);
  });

  it('round-trips a frame through a chunked Node stream', async () => {
    const frame = encodeWeights(sample);
    const parts: Buffer[] = [];
    for (let i = 0; i < frame.length; i += 7) parts.push(Buffer.from(frame.subarray(i, i + 7)));
    const bytes = await readAllBytes(Readable.from(parts), frame.length);
    expect(decodeWeights(bytes, { expected: sampleSpecs }).map((t) => Array.from(t.values))).toEqual(sample.map((t) => Array.from(t.values)));
  });

  it('throws WeightsCodecError once the total exceeds maxBytes, without reading the rest', async () => {
    let pulled = 0;
    async function* endless(): AsyncGenerator<Uint8Array> {
      for (;;) {
        pulled++;
        yield new Uint8Array(10);
      }
    }
    await expect(readAllBytes(endless(), 25)).rejects.toThrow(WeightsCodecError);
    await expect(readAllBytes(endless(), 25)).rejects.toThrow('body is over the limit of 25 bytes');
    expect(pulled).toBe(6);
    expect((await readAllBytes(chunks([1, 2, 3], [4, 5]), 5)).length).toBe(5);
  });

  it('refuses string chunks', async () => {
    async function* text(): AsyncGenerator<unknown> {
      yield 'abc';
    }
    await expect(readAllBytes(text() as AsyncIterable<Uint8Array>)).rejects.toThrow(/stream yielded a string chunk/);
  });
});
