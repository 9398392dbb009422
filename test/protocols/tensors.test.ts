import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  clipToNorm,
  describeSpecMismatch,
  l2Norm,
  specsOf,
  subtract,
  tensorSize,
  TensorError,
  totalParameters,
  type NamedTensor,
  type WeightSet,
} from '../../protocols/tensors.ts';

const f32 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float32Array.from(values) });
const f64 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float64Array.from(values) });

/** Weight sets with unique names, random shapes, finite values of either dtype. */
const weightSetArb = (valueArb: fc.Arbitrary<number> = fc.double({ min: -1e6, max: 1e6, noNaN: true })) =>
  fc
    .uniqueArray(
      fc.record({
        name: fc.string({ minLength: 1, maxLength: 8 }),
        shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
        float32: fc.boolean(),
      }),
      { selector: (t) => t.name, maxLength: 4 },
    )
    .chain((tensors) =>
      fc.tuple(
        ...tensors.map((t) =>
          fc.array(valueArb, { minLength: tensorSize(t.shape), maxLength: tensorSize(t.shape) }).map(
            (vals): NamedTensor => ({ name: t.name, shape: t.shape, values: t.float32 ? Float32Array.from(vals) : Float64Array.from(vals) }),
          ),
        ),
      ),
    )
    .map((ts): WeightSet => [...ts]);

function naiveNorm(w: WeightSet): number {
  let s = 0;
  for (const t of w) for (const x of t.values) s += x * x;
  return Math.sqrt(s);
}

describe('tensorSize / specsOf / totalParameters', () => {
  it('computes sizes, scalars and zero-size tensors', () => {
    expect(tensorSize([])).toBe(1);
    expect(tensorSize([3])).toBe(3);
    expect(tensorSize([2, 3, 4])).toBe(24);
    expect(tensorSize([5, 0, 7])).toBe(0);
  });

  it('rejects negative and fractional dims', () => {
    expect(() => tensorSize([2, -1])).toThrow(TensorError);
    expect(() => tensorSize([2, -1])).toThrow(/dimension 1 is -1/);
    expect(() => tensorSize([1.5])).toThrow(/dimension 0 is 1.5/);
    expect(() => tensorSize([Number.NaN])).toThrow(TensorError);
  });

  it('specsOf copies names and shapes, totalParameters sums sizes', () => {
    const w = [f32('a', [2, 3], [1, 2, 3, 4, 5, 6]), f64('b', [], [7])];
    const specs = specsOf(w);
    expect(specs).toEqual([
      { name: 'a', shape: [2, 3] },
      { name: 'b', shape: [] },
    ]);
    specs[0].shape.push(9);
    expect(w[0].shape).toEqual([2, 3]);
    expect(totalParameters(specs.slice(1))).toBe(1);
    expect(totalParameters(specsOf(w))).toBe(7);
  });
});

describe('describeSpecMismatch', () => {
  const expected = [
    { name: 'a', shape: [2] },
    { name: 'b', shape: [3, 1] },
  ];
  it('ignores order', () => {
    expect(describeSpecMismatch(expected, [expected[1], expected[0]])).toBeNull();
  });
  it('names missing, unexpected, duplicate and reshaped tensors', () => {
    expect(describeSpecMismatch(expected, [expected[0]])).toBe('missing tensor "b" (expected shape [3,1])');
    expect(describeSpecMismatch(expected, [...expected, { name: 'c', shape: [] }])).toBe('unexpected tensor "c" (shape [])');
    expect(describeSpecMismatch(expected, [...expected, expected[0]])).toBe('duplicate tensor "a"');
    expect(describeSpecMismatch(expected, [expected[0], { name: 'b', shape: [1, 3] }])).toBe(
      'tensor "b": expected shape [3,1], got [1,3]',
    );
  });
});

describe('l2Norm', () => {
  it('is the float64 norm over all tensors', () => {
    expect(l2Norm([f32('a', [2], [3, 0]), f64('b', [1], [4])])).toBe(5);
    expect(l2Norm([])).toBe(0);
  });

  it('matches a naive computation', () => {
    fc.assert(
      fc.property(weightSetArb(), (w) => {
        const expected = naiveNorm(w);
        const got = l2Norm(w);
        expect(Math.abs(got - expected)).toBeLessThanOrEqual(1e-12 * Math.max(1, expected));
      }),
    );
  });

  it('does not overflow or underflow on extreme float64 values', () => {
    expect(l2Norm([f64('big', [2], [3e200, 4e200])]) / 5e200).toBeCloseTo(1, 12);
    expect(l2Norm([f64('tiny', [2], [3e-200, 4e-200])]) / 5e-200).toBeCloseTo(1, 12);
    expect(l2Norm([f64('max', [2], [Number.MAX_VALUE, 0])])).toBe(Number.MAX_VALUE);
  });

  it('is NaN when a value is NaN', () => {
    expect(l2Norm([f64('a', [2], [1, Number.NaN])])).toBeNaN();
  });
});

describe('subtract', () => {
  it('computes a - b in float64, matching tensors by name', () => {
    const a = [f32('x', [2], [1.5, 2]), f32('y', [], [10])];
    const b = [f64('y', [], [0.25]), f32('x', [2], [0.5, 3])];
    const d = subtract(a, b);
    expect(d.map((t) => t.name)).toEqual(['x', 'y']);
    expect(d[0].values).toBeInstanceOf(Float64Array);
    expect(Array.from(d[0].values)).toEqual([1, -1]);
    expect(Array.from(d[1].values)).toEqual([9.75]);
  });

  it('is exact for float32 inputs (the difference of two float32s fits in float64)', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), fc.float({ noNaN: true, noDefaultInfinity: true }), (x, y) => {
        const d = subtract([f32('t', [], [x])], [f32('t', [], [y])]);
        // x - y for float32 x, y is exactly representable in float64 unless exponents are far apart;
        // either way it must equal the float64 subtraction of the same numbers.
        expect(d[0].values[0]).toBe(Math.fround(x) - Math.fround(y));
      }),
    );
  });

  it('rejects mismatched specs, naming the tensor', () => {
    expect(() => subtract([f32('x', [2], [1, 2])], [f32('x', [1, 2], [1, 2])])).toThrow(
      /subtract: tensor "x": expected shape \[2\], got \[1,2\]/,
    );
    expect(() => subtract([f32('x', [2], [1, 2])], [])).toThrow(/missing tensor "x"/);
    expect(() => subtract([], [f32('z', [1], [1])])).toThrow(/unexpected tensor "z"/);
    expect(() => subtract([f32('x', [3], [1, 2])], [f32('x', [3], [1, 2, 3])])).toThrow(/tensor "x": shape \[3\] needs 3 values, got 2/);
  });
});

describe('clipToNorm', () => {
  it('leaves updates with norm <= maxNorm unchanged (copied, same dtype)', () => {
    fc.assert(
      fc.property(weightSetArb(), fc.double({ min: 0, max: 10, noNaN: true }), (w, slack) => {
        const norm = l2Norm(w);
        const { clipped, norm: reported, factor } = clipToNorm(w, norm + slack);
        expect(factor).toBe(1);
        expect(reported).toBe(norm);
        expect(clipped).toHaveLength(w.length);
        clipped.forEach((t, k) => {
          expect(t.name).toBe(w[k].name);
          expect(t.shape).toEqual(w[k].shape);
          expect(t.values.constructor).toBe(w[k].values.constructor);
          expect(t.values).not.toBe(w[k].values);
          expect(Array.from(t.values)).toEqual(Array.from(w[k].values));
        });
      }),
    );
  });

  it('bounds the norm of the stored values by maxNorm, and scales proportionally', () => {
    fc.assert(
      fc.property(weightSetArb(), fc.double({ min: 0, max: 1, noNaN: true }), (w, fraction) => {
        const norm = l2Norm(w);
        const maxNorm = norm * fraction;
        const { clipped, factor } = clipToNorm(w, maxNorm);
        expect(l2Norm(clipped)).toBeLessThanOrEqual(maxNorm);
        expect(factor).toBeGreaterThanOrEqual(0);
        expect(factor).toBeLessThanOrEqual(1);
        if (norm > 0 && maxNorm < norm) {
          // The factor is maxNorm / norm, nudged down by at most a few float32 ulps to absorb rounding
          // (more when float32 results land in the subnormal range, where relative precision is poor).
          expect(factor).toBeLessThanOrEqual(maxNorm / norm);
          const subnormalRisk = maxNorm < 1e-30 && w.some((t) => t.values instanceof Float32Array);
          if (!subnormalRisk) expect(factor).toBeGreaterThanOrEqual((maxNorm / norm) * (1 - 1e-6));
          // Every value is exactly the original times the reported factor, rounded to its dtype.
          clipped.forEach((t, k) => {
            const round = t.values instanceof Float32Array ? Math.fround : (x: number) => x;
            t.values.forEach((x, i) => expect(x).toBe(round(w[k].values[i] * factor)));
          });
        }
      }),
    );
  });

  it('clips a simple case exactly', () => {
    const { clipped, norm, factor } = clipToNorm([f64('a', [2], [3, 4])], 1);
    expect(norm).toBe(5);
    expect(factor).toBeCloseTo(0.2, 15);
    expect(l2Norm(clipped)).toBeLessThanOrEqual(1);
    expect(clipped[0].values[0]).toBeCloseTo(0.6, 14);
    expect(clipped[0].values[1]).toBeCloseTo(0.8, 14);
  });

  it('holds the bound for float32 tensors where rounding could overshoot', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ min: -100, max: 100, noNaN: true }), { minLength: 1, maxLength: 64 }),
        fc.float({ min: Math.fround(1e-3), max: 50, noNaN: true }),
        (vals, maxNorm) => {
          const w = [f32('t', [vals.length], vals)];
          const { clipped } = clipToNorm(w, maxNorm);
          expect(l2Norm(clipped)).toBeLessThanOrEqual(maxNorm);
        },
      ),
    );
  });

  it('maxNorm 0 zeroes the update; a zero update is unchanged', () => {
    const zeroed = clipToNorm([f32('a', [2], [1, -1])], 0);
    expect(Array.from(zeroed.clipped[0].values)).toEqual([0, -0]);
    expect(zeroed.factor).toBe(0);
    const zero = clipToNorm([f32('a', [2], [0, 0])], 0);
    expect(zero.factor).toBe(1);
    expect(zero.norm).toBe(0);
  });

  it('rejects bad maxNorm and non-finite weights', () => {
    expect(() => clipToNorm([f32('a', [1], [1])], -1)).toThrow(/maxNorm must be a non-negative number, got -1/);
    expect(() => clipToNorm([f32('a', [1], [1])], Number.NaN)).toThrow(TensorError);
    expect(() => clipToNorm([f32('a', [1], [Number.POSITIVE_INFINITY])], 1)).toThrow(/NaN or infinite/);
    expect(clipToNorm([f32('a', [1], [3])], Number.POSITIVE_INFINITY).factor).toBe(1);
  });
});
