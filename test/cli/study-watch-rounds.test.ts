import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstOpenRound, mergeRounds } from '../../cli/study-command.ts';

/**
 * `fedmark study watch` asks only for the rounds not yet closed (?fromRound) and keeps the rest:
 * what it shows must be what a full answer would have shown.
 */
type R = { round: number; phase: string; v: number };
const phases = ['fit', 'evaluate', 'completed', 'failed'] as const;

describe('study watch: rounds kept between polls', () => {
  it('starts the next poll at the first round not closed, or after the last', () => {
    expect(firstOpenRound([])).toBe(0);
    expect(firstOpenRound([{ round: 1, phase: 'completed' }, { round: 2, phase: 'evaluate' }, { round: 3, phase: 'fit' }])).toBe(2);
    expect(firstOpenRound([{ round: 1, phase: 'completed' }, { round: 2, phase: 'failed' }])).toBe(3);
  });

  it('a partial answer merged into the kept rounds equals the full answer (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...phases), { maxLength: 12 }), fc.array(fc.constantFrom(...phases), { maxLength: 12 }), fc.nat(20), (before, after, extra) => {
        // The kept rounds, then the study moved on: rounds may change phase and new ones appear.
        const kept: R[] = before.map((phase, i) => ({ round: i + 1, phase, v: 0 }));
        const n = Math.max(kept.length, Math.min(kept.length + extra, kept.length + after.length));
        const full: R[] = Array.from({ length: n }, (_, i) => ({ round: i + 1, phase: i < kept.length && (kept[i].phase === 'completed' || kept[i].phase === 'failed') ? kept[i].phase : (after[i] ?? 'fit'), v: i < kept.length && (kept[i].phase === 'completed' || kept[i].phase === 'failed') ? 0 : 1 }));
        const from = firstOpenRound(kept);
        expect(mergeRounds(kept, full.filter((r) => r.round >= from))).toEqual(full);
      }),
    );
  });
});
