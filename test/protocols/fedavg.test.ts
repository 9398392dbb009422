import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { tensorSize, type NamedTensor, type TensorSpec, type WeightSet } from '../../protocols/tensors.ts';
import { encodeWeights, WeightsCodecError } from '../../protocols/weights-codec.ts';
import {
  AggregationError,
  decodeAccumulatorState,
  encodeAccumulatorState,
  WeightedMeanAccumulator,
  type AccumulatorState,
} from '../../protocols/aggregation/fedavg.ts';

const f32 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float32Array.from(values) });
const f64 = (name: string, shape: number[], values: number[]): NamedTensor => ({ name, shape, values: Float64Array.from(values) });

function expectAggError(fn: () => unknown, message: string | RegExp): AggregationError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected an AggregationError').toBeInstanceOf(AggregationError);
  if (typeof message === 'string') expect((thrown as Error).message).toContain(message);
  else expect((thrown as Error).message).toMatch(message);
  return thrown as AggregationError;
}

// ---------------------------------------------------------------------------------------------
// arbitraries: a model (specs) and a list of (update, weight) pairs for it

const specsArb: fc.Arbitrary<TensorSpec[]> = fc.uniqueArray(
  fc.record({ name: fc.string({ minLength: 1, maxLength: 6 }), shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }) }),
  { selector: (s) => s.name, minLength: 1, maxLength: 4 },
);

const valueArb = fc.float({ min: -1000, max: 1000, noNaN: true });
const weightArb = fc.oneof(fc.integer({ min: 1, max: 100_000 }), fc.double({ min: 1e-3, max: 1e4, noNaN: true }));

function updateArb(specs: TensorSpec[]): fc.Arbitrary<WeightSet> {
  return fc
    .tuple(...specs.map((s) => fc.array(valueArb, { minLength: tensorSize(s.shape), maxLength: tensorSize(s.shape) })))
    .map((arrays) => specs.map((s, k) => f32(s.name, s.shape, arrays[k])));
}

const roundArb = specsArb.chain((specs) =>
  fc.record({
    specs: fc.constant(specs),
    updates: fc.array(fc.record({ update: updateArb(specs), weight: weightArb }), { minLength: 1, maxLength: 12 }),
  }),
);

/** The textbook formula evaluated differently from the accumulator: sum_k (n_k / N) * w_k. */
function naiveWeightedMean(specs: TensorSpec[], updates: { update: WeightSet; weight: number }[]): Float64Array[] {
  const total = updates.reduce((a, u) => a + u.weight, 0);
  return specs.map((s, k) => {
    const out = new Float64Array(tensorSize(s.shape));
    for (const { update, weight } of updates) {
      const v = update[k].values;
      for (let i = 0; i < out.length; i++) out[i] += (weight / total) * v[i];
    }
    return out;
  });
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, scale: number): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    const tol = 1e-6 * Math.abs(want[i]) + 1e-12 * scale;
    expect(Math.abs(got[i] - want[i]), `index ${i}: got ${got[i]}, want ${want[i]}`).toBeLessThanOrEqual(tol);
  }
}

function accumulate(specs: TensorSpec[], updates: { update: WeightSet; weight: number }[]): WeightedMeanAccumulator {
  const acc = new WeightedMeanAccumulator(specs);
  for (const { update, weight } of updates) acc.add(update, weight);
  return acc;
}

// ---------------------------------------------------------------------------------------------

describe('WeightedMeanAccumulator: FedAvg', () => {
  it('equals the naive example-weighted mean (relative tolerance)', () => {
    fc.assert(
      fc.property(roundArb, ({ specs, updates }) => {
        const acc = accumulate(specs, updates);
        expect(acc.count).toBe(updates.length);
        expect(acc.totalWeight).toBeCloseTo(updates.reduce((a, u) => a + u.weight, 0), 6);
        const mean = acc.mean();
        const want = naiveWeightedMean(specs, updates);
        mean.forEach((t, k) => {
          expect(t.name).toBe(specs[k].name);
          expect(t.shape).toEqual(specs[k].shape);
          expect(t.values).toBeInstanceOf(Float32Array);
          expectClose(t.values, want[k], 1000);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('does not depend on the order updates arrive in', () => {
    fc.assert(
      fc.property(
        roundArb.chain((r) => fc.record({ round: fc.constant(r), order: fc.shuffledSubarray(r.updates.map((_, i) => i), { minLength: r.updates.length }) })),
        ({ round, order }) => {
          const a = accumulate(round.specs, round.updates).mean();
          const b = accumulate(round.specs, order.map((i) => round.updates[i])).mean();
          a.forEach((t, k) => expectClose(b[k].values, t.values, 1000));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('handles the worked example: two clients with 10 and 30 examples', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'w', shape: [2] }]);
    acc.add([f32('w', [2], [1, 0])], 10);
    acc.add([f32('w', [2], [5, 4])], 30);
    expect(Array.from(acc.mean()[0].values)).toEqual([4, 3]);
    expect(Array.from(acc.sum()[0].values)).toEqual([160, 120]);
    expect(acc.totalWeight).toBe(40);
    expect(acc.count).toBe(2);
  });

  it('a single update (integer weight) comes back bit-exact', () => {
    fc.assert(
      fc.property(roundArb, fc.integer({ min: 1, max: 2 ** 29 }), ({ specs, updates }, weight) => {
        const acc = new WeightedMeanAccumulator(specs);
        acc.add(updates[0].update, weight);
        // (-0 becomes +0 in the running sum, which starts at +0; compare numerically.)
        const plain = (v: ArrayLike<number>) => Array.from(v, (x) => x + 0);
        acc.mean().forEach((t, k) => expect(plain(t.values)).toEqual(plain(updates[0].update[k].values)));
      }),
    );
  });

  it('accumulates in float64: 1000 identical float32 updates average back to the exact value', () => {
    const x = Math.fround(0.1);
    const acc = new WeightedMeanAccumulator([{ name: 'w', shape: [3] }]);
    for (let i = 0; i < 1000; i++) acc.add([f32('w', [3], [x, -x, 1 + x])], 1);
    expect(Array.from(acc.mean()[0].values)).toEqual([x, -x, Math.fround(1 + x)]);
    // A float32 running sum would have drifted:
    let s = 0;
    for (let i = 0; i < 1000; i++) s = Math.fround(s + x);
    expect(Math.fround(s / 1000)).not.toBe(x);
  });

  it('matches tensors by name, accepts float64 updates, and returns float64 sums', () => {
    const specs = [
      { name: 'a', shape: [2] },
      { name: 'b', shape: [] },
    ];
    const acc = new WeightedMeanAccumulator(specs);
    acc.add([f64('b', [], [0.5]), f32('a', [2], [1, 2])], 2);
    acc.add([f64('a', [2], [3, 4]), f64('b', [], [1.5])], 2);
    const sum = acc.sum();
    expect(sum.map((t) => t.name)).toEqual(['a', 'b']);
    expect(sum[0].values).toBeInstanceOf(Float64Array);
    expect(Array.from(sum[0].values)).toEqual([8, 12]);
    expect(Array.from(acc.mean()[1].values)).toEqual([1]);
  });

  it('sum(), mean(), specs and toState() return copies', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'a', shape: [1] }]);
    acc.add([f32('a', [1], [2])], 1);
    acc.sum()[0].values[0] = 99;
    acc.toState().sums[0].values[0] = 99;
    acc.mean()[0].values[0] = 99;
    acc.specs[0].shape.push(5);
    expect(acc.sum()[0].values[0]).toBe(2);
    expect(acc.specs).toEqual([{ name: 'a', shape: [1] }]);
  });

  it('keeps O(model) memory: the state holds one sum per tensor whatever the number of updates', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'a', shape: [4] }]);
    for (let i = 0; i < 200; i++) acc.add([f32('a', [4], [i, i, i, i])], 1 + (i % 3));
    const state = acc.toState();
    expect(state.sums).toHaveLength(1);
    expect(state.sums[0].values.length).toBe(4);
    expect(state.count).toBe(200);
  });
});

describe('WeightedMeanAccumulator: validation', () => {
  const specs = [
    { name: 'dense/kernel', shape: [2, 2] },
    { name: 'dense/bias', shape: [2] },
  ];
  const good = (): WeightSet => [f32('dense/kernel', [2, 2], [1, 2, 3, 4]), f32('dense/bias', [2], [5, 6])];

  it('rejects bad weights', () => {
    const acc = new WeightedMeanAccumulator(specs);
    for (const w of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '3' as unknown as number]) {
      expectAggError(() => acc.add(good(), w), 'weight must be a finite number > 0');
    }
    expect(acc.count).toBe(0);
  });

  it('rejects updates that do not match the model, naming the tensor', () => {
    const acc = new WeightedMeanAccumulator(specs);
    expectAggError(() => acc.add([good()[0]], 1), 'update does not match the model: missing tensor "dense/bias" (expected shape [2])');
    expectAggError(() => acc.add([...good(), f32('extra', [1], [0])], 1), 'unexpected tensor "extra"');
    expectAggError(() => acc.add([f32('dense/kernel', [4], [1, 2, 3, 4]), good()[1]], 1), 'tensor "dense/kernel": expected shape [2,2], got [4]');
    expectAggError(() => acc.add([f32('dense/kernel', [2, 2], [1, 2, 3]), good()[1]], 1), 'tensor "dense/kernel": shape [2,2] needs 4 values, got 3');
    expectAggError(() => acc.add([...good(), good()[1]], 1), 'duplicate tensor "dense/bias"');
    expectAggError(() => acc.add('nope' as unknown as WeightSet, 1), 'update must be an array of tensors');
  });

  it('rejects non-finite values and leaves the state untouched (add is atomic)', () => {
    const acc = new WeightedMeanAccumulator(specs);
    acc.add(good(), 3);
    const before = acc.toState();
    expectAggError(() => acc.add([f32('dense/kernel', [2, 2], [1, 1, 1, 1]), f32('dense/bias', [2], [0, Number.NaN])], 1), 'tensor "dense/bias" has a non-finite value (NaN) at flat index 1');
    expectAggError(() => acc.add([f32('dense/kernel', [2, 2], [1, Number.NEGATIVE_INFINITY, 1, 1]), good()[1]], 1), 'tensor "dense/kernel" has a non-finite value (-Infinity) at flat index 1');
    expect(acc.toState()).toEqual(before);
  });

  it('refuses an add that could overflow the float64 sum', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'x', shape: [1] }]);
    acc.add([f64('x', [1], [1e299])], 1);
    expectAggError(() => acc.add([f64('x', [1], [1e299])], 1e10), 'could overflow the float64 running sum');
    expect(acc.count).toBe(1);
  });

  it('mean() of nothing is an error', () => {
    expectAggError(() => new WeightedMeanAccumulator(specs).mean(), 'cannot take the mean of zero updates');
  });

  it('mean() refuses results outside float32 range', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'x', shape: [2] }]);
    acc.add([f64('x', [2], [1, 1e200])], 1);
    expectAggError(() => acc.mean(), 'mean of tensor "x" overflows float32 at flat index 1');
  });

  it('rejects invalid specs', () => {
    expectAggError(() => new WeightedMeanAccumulator([{ name: 'a', shape: [1] }, { name: 'a', shape: [2] }]), 'duplicate tensor name "a"');
    expectAggError(() => new WeightedMeanAccumulator([{ name: 'a', shape: [-1] }]), 'tensor "a": shape [-1]: dimension 0 is -1');
    expectAggError(() => new WeightedMeanAccumulator([{ name: '', shape: [] }]), 'name must be a non-empty string');
  });
});

describe('accumulator state', () => {
  it('add half, persist, restore, add the rest = same result as one pass (bit-exact)', () => {
    fc.assert(
      fc.property(roundArb, fc.nat(), ({ specs, updates }, cut) => {
        const split = cut % (updates.length + 1);
        const first = accumulate(specs, updates.slice(0, split));
        const bytes = encodeAccumulatorState(first.toState());
        const restored = WeightedMeanAccumulator.fromState(decodeAccumulatorState(bytes));
        expect(restored.count).toBe(split);
        for (const { update, weight } of updates.slice(split)) restored.add(update, weight);

        const onePass = accumulate(specs, updates);
        expect(restored.count).toBe(onePass.count);
        expect(restored.totalWeight).toBe(onePass.totalWeight);
        expect(restored.sum().map((t) => Array.from(t.values))).toEqual(onePass.sum().map((t) => Array.from(t.values)));
        expect(restored.mean().map((t) => Array.from(t.values))).toEqual(onePass.mean().map((t) => Array.from(t.values)));
        expect(restored.specs).toEqual(specs);
      }),
      { numRuns: 200 },
    );
  });

  it('round-trips an empty accumulator', () => {
    const specs = [{ name: 'a', shape: [2, 3] }];
    const state = decodeAccumulatorState(encodeAccumulatorState(new WeightedMeanAccumulator(specs).toState()));
    expect(state.count).toBe(0);
    expect(state.totalWeight).toBe(0);
    expect(state.specs).toEqual(specs);
    expect(Array.from(state.sums[0].values)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('has the documented layout: "FMA1", uint32 count, float64 totalWeight, FMW1 float64 frame', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'a', shape: [1] }]);
    acc.add([f32('a', [1], [2])], 2.5);
    acc.add([f32('a', [1], [4])], 1);
    const bytes = encodeAccumulatorState(acc.toState());
    expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('FMA1');
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    expect(dv.getUint32(4, true)).toBe(2);
    expect(dv.getFloat64(8, true)).toBe(3.5);
    expect(new TextDecoder().decode(bytes.subarray(16, 20))).toBe('FMW1');
    expect(bytes.subarray(16)).toEqual(encodeWeights(acc.sum(), 'float64'));
  });

  it('fromState copies its input', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'a', shape: [1] }]);
    acc.add([f32('a', [1], [2])], 1);
    const state = acc.toState();
    const restored = WeightedMeanAccumulator.fromState(state);
    state.sums[0].values[0] = 1000;
    expect(restored.sum()[0].values[0]).toBe(2);
  });

  it('fromState rejects inconsistent states', () => {
    const specs = [{ name: 'a', shape: [2] }];
    const base = (): AccumulatorState => ({ specs, sums: [f64('a', [2], [1, 2])], totalWeight: 2, count: 1 });
    expect(() => WeightedMeanAccumulator.fromState(base())).not.toThrow();
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), count: -1 }), 'count must be a non-negative integer, got -1');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), count: 1.5 }), 'count must be a non-negative integer');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), totalWeight: Number.NaN }), 'totalWeight must be a finite number >= 0, got NaN');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), count: 0 }), 'count 0 and totalWeight 2 are inconsistent');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), count: 0, totalWeight: 0 }), 'count is 0 but the sums are not all zero');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), sums: [f64('b', [2], [1, 2])] }), 'accumulator state sums does not match the model: missing tensor "a"');
    expectAggError(() => WeightedMeanAccumulator.fromState({ ...base(), sums: [f64('a', [2], [1, Number.POSITIVE_INFINITY])] }), 'tensor "a" sum is not finite at flat index 1');
  });

  it('decodeAccumulatorState rejects malformed bytes with AggregationError (codec error as cause)', () => {
    const acc = new WeightedMeanAccumulator([{ name: 'a', shape: [2] }]);
    acc.add([f32('a', [2], [1, 2])], 1);
    const bytes = encodeAccumulatorState(acc.toState());

    expectAggError(() => decodeAccumulatorState(bytes.subarray(0, 10)), 'accumulator state is truncated: 10 bytes');
    const badMagic = bytes.slice();
    badMagic[3] = 0x32;
    expectAggError(() => decodeAccumulatorState(badMagic), 'bad magic (expected "FMA1")');
    const err = expectAggError(() => decodeAccumulatorState(bytes.subarray(0, bytes.length - 1)), /accumulator state: truncated body: tensor "a"/);
    expect(err.cause).toBeInstanceOf(WeightsCodecError);

    const float32Frame = encodeWeights([f32('a', [2], [1, 2])], 'float32');
    const wrongDtype = new Uint8Array(16 + float32Frame.length);
    wrongDtype.set(bytes.subarray(0, 16));
    wrongDtype.set(float32Frame, 16);
    expectAggError(() => decodeAccumulatorState(wrongDtype), 'wrong dtype: expected float64, got float32');

    const zeroCount = bytes.slice();
    new DataView(zeroCount.buffer).setUint32(4, 0, true);
    expectAggError(() => decodeAccumulatorState(zeroCount), 'count 0 and totalWeight 1 are inconsistent');
  });

  it('fuzz: corrupted state bytes only ever raise AggregationError', () => {
    const acc = new WeightedMeanAccumulator([
      { name: 'a', shape: [3] },
      { name: 'b', shape: [] },
    ]);
    acc.add([f32('a', [3], [1, 2, 3]), f32('b', [], [4])], 5);
    const bytes = encodeAccumulatorState(acc.toState());
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), fc.nat(), (flips, cut) => {
        const corrupted = bytes.slice(0, Math.max(0, bytes.length - (cut % 4)));
        for (const [pos, xor] of flips) corrupted[pos % corrupted.length] ^= xor;
        try {
          WeightedMeanAccumulator.fromState(decodeAccumulatorState(corrupted));
        } catch (e) {
          if (!(e instanceof AggregationError)) throw e;
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('encodeAccumulatorState validates its input', () => {
    expectAggError(
      () => encodeAccumulatorState({ specs: [{ name: 'a', shape: [1] }], sums: [f64('a', [1], [1])], totalWeight: 0, count: 1 }),
      'count 1 and totalWeight 0 are inconsistent',
    );
  });
});
