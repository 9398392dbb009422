import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeServerState, emptyServerState, encodeServerState, ServerStateError } from '../../../protocols/strategies/server-state.ts';
import type { ServerState } from '../../../protocols/strategies/strategy.ts';

const bits = (x: number) => {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  return dv.getBigUint64(0);
};

describe('server state codec (FMS1)', () => {
  it('round-trips scalars and named weight sets bit for bit (including -0 and subnormals)', () => {
    const state: ServerState = {
      scalars: { step: 3, 'dp.clipNorm': 0.123456789012345, neg0: -0, tiny: 5e-324 },
      tensors: {
        m: [
          { name: 'dense_0/kernel', shape: [2, 2], values: Float64Array.from([0.1, -0.2, 1e-300, -0]) },
          { name: 'dense_0/bias', shape: [], values: Float64Array.from([7]) },
        ],
        v: [{ name: 'w', shape: [3], values: Float32Array.from([1e-6, 2.5, 3]) }],
      },
    };
    const back = decodeServerState(encodeServerState(state));
    expect(Object.keys(back.scalars)).toEqual(Object.keys(state.scalars));
    for (const k of Object.keys(state.scalars)) expect(bits(back.scalars[k])).toBe(bits(state.scalars[k]));
    expect(Object.keys(back.tensors)).toEqual(['m', 'v']);
    for (const name of ['m', 'v']) {
      back.tensors[name].forEach((t, i) => {
        const orig = state.tensors[name][i];
        expect(t.name).toBe(orig.name);
        expect(t.shape).toEqual(orig.shape);
        expect(Array.from(t.values, bits)).toEqual(Array.from(orig.values, bits));
      });
    }
    expect(decodeServerState(encodeServerState(emptyServerState()))).toEqual(emptyServerState());
  });

  it('round-trips any finite state (property)', () => {
    const finite = fc.double({ noNaN: true, noDefaultInfinity: true });
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), finite, { maxKeys: 5 }), fc.array(finite, { minLength: 0, maxLength: 20 }), (scalars, values) => {
        const state: ServerState = { scalars, tensors: { t: [{ name: 'x', shape: [values.length], values: Float64Array.from(values) }] } };
        const bytes = encodeServerState(state);
        const back = decodeServerState(bytes);
        expect(encodeServerState(back)).toEqual(bytes);
        expect(Array.from(back.tensors.t[0].values, bits)).toEqual(values.map(bits));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses non-finite values, truncation, trailing bytes and a bad magic', () => {
    expect(() => encodeServerState({ scalars: { a: Number.NaN }, tensors: {} })).toThrow(ServerStateError);
    expect(() => encodeServerState({ scalars: {}, tensors: { m: [{ name: 'w', shape: [1], values: Float64Array.from([Infinity]) }] } })).toThrow(ServerStateError);
    const good = encodeServerState({ scalars: { a: 1 }, tensors: { m: [{ name: 'w', shape: [2], values: Float64Array.from([1, 2]) }] } });
    expect(() => decodeServerState(good.subarray(0, good.length - 8))).toThrow(ServerStateError);
    expect(() => decodeServerState(Uint8Array.from([...good, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(ServerStateError);
    const bad = good.slice();
    bad[0] = 0x58;
    expect(() => decodeServerState(bad)).toThrow(/magic/);
    // A NaN written into the scalar slot is refused on decode.
    const nan = good.slice();
    const headerLength = new DataView(nan.buffer).getUint32(4, true);
    new DataView(nan.buffer).setFloat64((8 + headerLength + 7) & ~7, Number.NaN, true);
    expect(() => decodeServerState(nan)).toThrow(/scalar "a"/);
  });
});
