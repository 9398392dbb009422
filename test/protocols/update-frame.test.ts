import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { frameUpdate, MAX_EVALUATION_PART_BYTES, unframeUpdate, UpdateFrameError } from '../../protocols/update-frame.ts';

describe('update frame (an evaluation riding on an update)', () => {
  it('round-trips any evaluation text and sealed bytes (fast-check)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 300 }), fc.uint8Array({ maxLength: 500 }), (text, sealed) => {
        const { evaluation, sealed: back } = unframeUpdate(frameUpdate(text, sealed));
        expect(evaluation).toBe(text);
        expect(Buffer.from(back).equals(Buffer.from(sealed))).toBe(true);
      }),
    );
  });

  it('splits at the stated length: the length is big-endian, and the sealed part is a view, not a copy', () => {
    const body = frameUpdate('{"a":1}', Uint8Array.from([9, 8, 7]));
    expect([...body.subarray(0, 4)]).toEqual([0, 0, 0, 7]);
    const { sealed } = unframeUpdate(body);
    expect(sealed.buffer).toBe(body.buffer);
    expect([...sealed]).toEqual([9, 8, 7]);
  });

  it('refuses, with UpdateFrameError only, any body it cannot split: short, overlong claims, bad UTF-8 (fast-check)', () => {
    expect(() => unframeUpdate(Uint8Array.from([0, 0, 1]))).toThrow(UpdateFrameError);
    expect(() => unframeUpdate(Uint8Array.from([0, 0, 0, 5, 1, 2]))).toThrow(/claims 5 bytes/);
    expect(() => unframeUpdate(Uint8Array.from([0xff, 0xff, 0xff, 0xff]))).toThrow(/over/);
    expect(() => unframeUpdate(Uint8Array.from([0, 0, 0, 2, 0xc3, 0x28]))).toThrow(/UTF-8/);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          const { evaluation, sealed } = unframeUpdate(bytes);
          expect(4 + Buffer.byteLength(evaluation) + sealed.length).toBe(bytes.length);
        } catch (err) {
          expect(err).toBeInstanceOf(UpdateFrameError);
        }
      }),
    );
  });

  it('will not frame an evaluation over the evaluation route\'s own limit', () => {
    expect(() => frameUpdate('x'.repeat(MAX_EVALUATION_PART_BYTES + 1), new Uint8Array(1))).toThrow(UpdateFrameError);
    expect(unframeUpdate(frameUpdate('x'.repeat(MAX_EVALUATION_PART_BYTES), new Uint8Array(1))).evaluation).toHaveLength(MAX_EVALUATION_PART_BYTES);
  });
});
