/**
 * The FedAvg fold's kernels (protocols/aggregation/kernels.ts, simd-module.ts): the WebAssembly
 * SIMD fold against a naive reference (random shapes, weights and values; 1e-6 relative) and
 * bit for bit against the scalar loop; the SIMD max-magnitude check against Math.max; the
 * accumulator's kernel choice ('auto' new = SIMD, 'auto' resumed = scalar until its second add).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { TensorSpec, WeightSet } from '../../protocols/tensors.ts';
import { decodeAccumulatorState, encodeAccumulatorState, SIMD_MIN_PARAMETERS, WeightedMeanAccumulator, type FoldKernel } from '../../protocols/aggregation/fedavg.ts';
import { maxAbsF32, maxAbsF32Known, maxAbsF32Scalar, simdAvailable, SimdSums } from '../../protocols/aggregation/kernels.ts';
import { decodeWeights, decodeWeightsView, encodeWeights } from '../../protocols/weights-codec.ts';

/** float32 values: mostly moderate, some tiny, huge, subnormal or signed zeros. */
const f32Value = fc.oneof(
  { weight: 8, arbitrary: fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, 1.4e-45, -1.4e-45, 3.4028234663852886e38, -3.4028234663852886e38) },
);

/** 1-3 tensors of 0..300 values each (so every tail length mod 8 and mod 16 occurs). */
const specsArb = fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 3 }).map((sizes): TensorSpec[] => sizes.map((n, k) => ({ name: `t${k}`, shape: [n] })));

function updateArb(specs: TensorSpec[]) {
  return fc.tuple(...specs.map((s) => fc.array(f32Value, { minLength: s.shape[0], maxLength: s.shape[0] }))).map((arrays): WeightSet => specs.map((s, k) => ({ name: s.name, shape: s.shape, values: Float32Array.from(arrays[k]) })));
}

const roundArb = specsArb.chain((specs) =>
  fc.tuple(fc.constant(specs), fc.array(fc.tuple(updateArb(specs), fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.double({ min: 1e-3, max: 1e4, noNaN: true }))), { minLength: 1, maxLength: 6 })),
);

function foldWith(kernel: FoldKernel, specs: TensorSpec[], updates: Array<[WeightSet, number]>): WeightedMeanAccumulator {
  const acc = new WeightedMeanAccumulator(specs, { kernel });
  for (const [u, w] of updates) acc.add(u, w);
  return acc;
}

describe.skipIf(!simdAvailable())('SIMD fold against references', () => {
  it('the mean equals the naive example-weighted mean to 1e-6 relative (random shapes, weights, values)', () => {
    fc.assert(
      fc.property(roundArb, ([specs, updates]) => {
        const acc = foldWith('simd', specs, updates);
        expect(acc.kernel).toBe('simd');
        const mean = acc.mean();
        const total = updates.reduce((a, [, w]) => a + w, 0);
        specs.forEach((s, k) => {
          for (let i = 0; i < s.shape[0]; i++) {
            // The reference: sum_k n_k x_k / sum_k n_k, one value at a time, rounded once to float32.
            let ref = 0;
            for (const [u, w] of updates) ref += w * u[k].values[i];
            const expected = Math.fround(ref / total);
            const got = mean[k].values[i];
            const scale = Math.max(...updates.map(([u]) => Math.abs(u[k].values[i])), Number.MIN_VALUE);
            expect(Math.abs(got - expected)).toBeLessThanOrEqual(1e-6 * scale);
          }
        });
      }),
      { numRuns: 150 },
    );
  });

  it('the float64 sums are bit for bit the scalar loop\'s (so persisted FMA1 states are too)', () => {
    fc.assert(
      fc.property(roundArb, ([specs, updates]) => {
        const simd = foldWith('simd', specs, updates);
        const scalar = foldWith('scalar', specs, updates);
        expect(scalar.kernel).toBe('scalar');
        const a = simd.sum();
        const b = scalar.sum();
        a.forEach((t, k) => expect(Buffer.from(t.values.buffer).equals(Buffer.from(b[k].values.buffer))).toBe(true));
        expect(Buffer.from(encodeAccumulatorState(simd.toState())).equals(Buffer.from(encodeAccumulatorState(scalar.toState())))).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it('SimdSums.axpy32 adds w * v into the right tensor only, every tail length', () => {
    for (let n = 0; n < 40; n++) {
      const sums = SimdSums.create([n, 5, n + 3])!;
      const v = Float32Array.from({ length: n }, (_, i) => i + 0.5);
      sums.axpy32(0, v, 2);
      expect(Array.from(sums.sums[0])).toEqual(Array.from(v, (x) => 2 * x));
      expect(Array.from(sums.sums[1])).toEqual([0, 0, 0, 0, 0]);
      expect(sums.sums[2].every((x) => x === 0)).toBe(true);
    }
  });

  it('maxAbsF32 is Math.max of |x| with NaN and Infinity semantics, at every position and length', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40_000 }), // mostly past the 512-value SIMD threshold
        fc.array(fc.tuple(fc.nat(), f32Value), { maxLength: 20 }),
        fc.constantFrom(undefined, NaN, Infinity, -Infinity),
        fc.nat(),
        (n, placed, bad, at) => {
          const v = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.01);
          for (const [i, x] of placed) if (n > 0) v[i % n] = x;
          if (bad !== undefined && n > 0) v[at % n] = bad;
          expect(Object.is(maxAbsF32(v), maxAbsF32Scalar(v))).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
    // Large enough to cross SIMD chunks, with the bad value in the zero-padded tail block.
    const v = new Float32Array(16384 * 2 + 7).fill(-0.5);
    expect(maxAbsF32(v)).toBe(0.5);
    v[v.length - 1] = -Infinity;
    expect(maxAbsF32(v)).toBe(Infinity);
    v[16384] = NaN;
    expect(maxAbsF32(v)).toBeNaN();
  });

  it('the zero padding of a short last block never lets an earlier call\'s values through', () => {
    const earlier = new Float32Array(1024).fill(1);
    earlier[1020] = NaN;
    expect(maxAbsF32(earlier)).toBeNaN();
    expect(maxAbsF32(new Float32Array(1009).fill(0.5))).toBe(0.5); // its last block is padded to 1024
  });
});

describe('kernel choice', () => {
  const big: TensorSpec[] = [{ name: 'w', shape: [SIMD_MIN_PARAMETERS] }];
  const update = (x: number): WeightSet => [{ name: 'w', shape: [SIMD_MIN_PARAMETERS], values: new Float32Array(SIMD_MIN_PARAMETERS).fill(x) }];

  it("'auto' is scalar below SIMD_MIN_PARAMETERS and SIMD from it on (new accumulators)", () => {
    expect(new WeightedMeanAccumulator([{ name: 'w', shape: [SIMD_MIN_PARAMETERS - 1] }]).kernel).toBe('scalar');
    expect(new WeightedMeanAccumulator(big).kernel).toBe(simdAvailable() ? 'simd' : 'scalar');
    expect(() => new WeightedMeanAccumulator(big, { kernel: 'fast' as FoldKernel })).toThrow(/kernel must be/);
  });

  it.skipIf(!simdAvailable())('a resumed accumulator folds its first update scalar, then moves to SIMD, with the same sums', () => {
    const first = new WeightedMeanAccumulator(big, { kernel: 'scalar' });
    first.add(update(0.25), 3);
    const resumed = WeightedMeanAccumulator.fromState(decodeAccumulatorState(encodeAccumulatorState(first.toState())));
    expect(resumed.kernel).toBe('scalar');
    resumed.add(update(0.5), 2);
    expect(resumed.kernel).toBe('scalar');
    resumed.add(update(1), 5);
    expect(resumed.kernel).toBe('simd');
    const reference = new WeightedMeanAccumulator(big, { kernel: 'scalar' });
    for (const [x, w] of [[0.25, 3], [0.5, 2], [1, 5]]) reference.add(update(x), w);
    const got = resumed.sum()[0].values;
    const want = reference.sum()[0].values;
    expect(got[0]).toBe(0.25 * 3 + 0.5 * 2 + 5);
    expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
    expect(resumed.count).toBe(3);
  });

  it.skipIf(!simdAvailable())('a SIMD add that is refused changes nothing (atomic)', () => {
    const acc = new WeightedMeanAccumulator(big, { kernel: 'simd' });
    acc.add(update(1), 1);
    const before = acc.sum()[0].values.slice();
    const bad = update(2);
    bad[0].values[SIMD_MIN_PARAMETERS - 1] = NaN;
    expect(() => acc.add(bad, 1)).toThrow(/non-finite value \(NaN\) at flat index 65535/);
    expect(acc.sum()[0].values).toEqual(before);
    expect(acc.count).toBe(1);
  });
});

describe('state without copies', () => {
  it('encodeState() is encodeAccumulatorState(toState()) byte for byte, and restores bit for bit', () => {
    fc.assert(
      fc.property(roundArb, fc.constantFrom<FoldKernel>('scalar', 'auto'), ([specs, updates], kernel) => {
        const acc = foldWith(kernel, specs, updates);
        const bytes = acc.encodeState();
        expect(Buffer.from(bytes).equals(Buffer.from(encodeAccumulatorState(acc.toState())))).toBe(true);
        const restored = WeightedMeanAccumulator.fromState(decodeAccumulatorState(bytes));
        expect(Buffer.from(restored.encodeState()).equals(Buffer.from(bytes))).toBe(true);
        expect(restored.count).toBe(updates.length);
      }),
      { numRuns: 60 },
    );
  });

  it('decodeAccumulatorState views aligned bytes and copies misaligned ones; fromState never aliases them', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'w', shape: [5] }]);
    acc.add([{ name: 'w', shape: [5], values: Float32Array.from([1, 2, 3, 4, 5]) }], 2);
    const bytes = acc.encodeState();
    const aligned = decodeAccumulatorState(bytes);
    expect(aligned.sums[0].values.buffer).toBe(bytes.buffer);
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    const misaligned = decodeAccumulatorState(shifted.subarray(3));
    expect(misaligned.sums[0].values.buffer).not.toBe(shifted.buffer);
    expect(Array.from(misaligned.sums[0].values)).toEqual([2, 4, 6, 8, 10]);
    const restored = WeightedMeanAccumulator.fromState(aligned);
    bytes.fill(0, bytes.length - 40); // the sums' bytes
    expect(Array.from(restored.sum()[0].values)).toEqual([2, 4, 6, 8, 10]);
  });
});

describe("the decode's max |x| reused by the fold (issue 13: one check pass per update, not two)", () => {
  const frame = () => encodeWeights([{ name: 'w', shape: [1000], values: Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i)) }], 'float32');

  it('a zero-copy view carries the max its finiteness check measured: the fold makes no second pass', () => {
    const [view] = decodeWeightsView(frame());
    const measured = maxAbsF32(view.values as Float32Array);
    // Written into against the view's read-only contract: the remembered max is what is used.
    (view.values as Float32Array)[3] = 1e30;
    expect(maxAbsF32Known(view.values as Float32Array)).toBe(measured);
    expect(maxAbsF32(view.values as Float32Array)).toBeGreaterThan(1e29);
  });

  it('copies (decodeWeights), which callers may write into, are measured again: a NaN written later is refused', () => {
    const [copy] = decodeWeights(frame());
    (copy.values as Float32Array)[3] = Number.NaN;
    expect(Number.isNaN(maxAbsF32Known(copy.values as Float32Array))).toBe(true);
    const acc = new WeightedMeanAccumulator([{ name: 'w', shape: [1000] }]);
    expect(() => acc.add([copy], 1)).toThrow(/non-finite/);
    expect(acc.count).toBe(0);
  });
});
