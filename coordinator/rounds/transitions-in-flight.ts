/**
 * A study's round transitions and update intakes running now (round-service.ts advanceRound,
 * submitUpdate), so that work which can wait goes after them instead of before them.
 *
 * Why (issue 13): under 'with-next-fit', round r-1 completes (its last evaluation rode on an
 * update) in the same request that closes round r's fit phase. The completion's audit checkpoint
 * (the chain since the last checkpoint hashed again, a signature, ~7 ms) then held the database's
 * only PGlite connection while round r's aggregation and round r+1's opening waited behind it, and
 * every node with them. The close starts a moment later, once the same request's update is
 * stored: the intake is waited for, then the close it started. Deferred, the checkpoint is signed
 * once round r+1's tasks are out, while the nodes train; it covers the same entries and more, and
 * is never deferred by more than two seconds (work that hangs is not waited for).
 *
 * No cycle: a transition that waits only waits for those not waiting themselves when it starts to
 * wait, so a wait always points from an earlier waiter to a later one.
 */

/** The longest a caller waits in all (othersSettled): a transition takes milliseconds; one that hangs is not waited for. */
const MAX_WAIT_MS = 2000;

/** A round transition (close, open) or an update intake (which may start one). */
export type WorkKind = 'transition' | 'intake';

export function createTransitionsInFlight() {
  const running = new Map<string, Map<symbol, { settled: Promise<unknown>; waiting: boolean; kind: WorkKind }>>();
  /** Transitions started per study, ever (busy() alone misses one that began and ended during a caller's await). */
  const started = new Map<string, number>();
  const transitionsOf = (studyId: string) => [...(running.get(studyId)?.values() ?? [])].filter((e) => e.kind === 'transition');

  return {
    /** Runs `transition` (or an intake: `kind`) as the study's work in flight; `self` names it to `othersSettled`. */
    track<T>(studyId: string, transition: (self: symbol) => Promise<T>, kind: WorkKind = 'transition'): Promise<T> {
      const self = Symbol(studyId);
      let ofStudy = running.get(studyId);
      if (!ofStudy) running.set(studyId, (ofStudy = new Map()));
      if (kind === 'transition') started.set(studyId, (started.get(studyId) ?? 0) + 1);
      const entry = { settled: Promise.resolve() as Promise<unknown>, waiting: false, kind };
      ofStudy.set(self, entry);
      const done = () => {
        const now = running.get(studyId);
        now?.delete(self);
        if (now?.size === 0) running.delete(studyId);
      };
      let result: Promise<T>;
      try {
        result = transition(self);
      } catch (err) {
        done();
        throw err;
      }
      entry.settled = result.then(done, done);
      return result;
    },

    /** Whether a round transition of the study (not an update intake) is running now. */
    busy(studyId: string): boolean {
      return transitionsOf(studyId).length > 0;
    },

    /** How many transitions of the study have started so far: a caller compares two readings. */
    started(studyId: string): number {
      return started.get(studyId) ?? 0;
    },

    /** Settles once the study's transitions running now have settled, or after `maxWaitMs`. For callers that are not work in flight themselves. */
    async allSettled(studyId: string, maxWaitMs = MAX_WAIT_MS): Promise<void> {
      const now = transitionsOf(studyId).map((e) => e.settled);
      if (now.length === 0) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(now), new Promise<void>((resolve) => (timer = setTimeout(resolve, maxWaitMs)))]);
      clearTimeout(timer);
    },

    /**
     * Settles once the study's work running now (transitions, update intakes), other than `self`
     * and transitions waiting here themselves, has settled; then once more for what that work
     * started (an intake's last update starts the fit's close), at most `passes` times, so a
     * stream of new work cannot starve the caller.
     */
    async othersSettled(studyId: string, self: symbol, passes = 3, maxWaitMs = MAX_WAIT_MS): Promise<void> {
      const mine = running.get(studyId)?.get(self);
      if (!mine) return;
      mine.waiting = true;
      let timer: NodeJS.Timeout | undefined;
      // Never longer than maxWaitMs in all: work that hangs (a row lock held elsewhere) must not
      // keep a round's end unsigned. The checkpoint is then signed at once, as it was before.
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, maxWaitMs)));
      let timedOut = false;
      void late.then(() => (timedOut = true));
      try {
        for (let pass = 0; pass < passes && !timedOut; pass++) {
          const others = [...(running.get(studyId) ?? [])].filter(([key, e]) => key !== self && !e.waiting).map(([, e]) => e.settled);
          if (others.length === 0) return;
          await Promise.race([Promise.all(others), late]);
        }
      } finally {
        clearTimeout(timer);
        mine.waiting = false;
      }
    },
  };
}
