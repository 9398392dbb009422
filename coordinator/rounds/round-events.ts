import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';

/**
 * The round service's clock and bell: deadline timers, background transitions, and the change
 * notifications that wake long-polling watchers and nodes. Nothing here touches the database:
 * timers are only a way to be on time (on start-up `resume()` re-arms them from the deadlines
 * stored in the database).
 */
export function createRoundEvents(deps: { log: Logger; now: () => Date; onDeadline: (studyId: string, round: number) => Promise<void> }) {
  const { log, now } = deps;
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const timers = new Map<string, NodeJS.Timeout>();
  const background = new Set<Promise<unknown>>();
  const changeCounts = new Map<string, number>();
  let stopped = false;

  function notify(studyId: string) {
    changeCounts.set(studyId, (changeCounts.get(studyId) ?? 0) + 1);
    changes.emit(studyId);
  }

  /** Runs a transition in the background (after a response, or from a timer), logging failures. */
  function spawn(what: string, fn: () => Promise<unknown>) {
    if (stopped) return;
    const p = fn()
      .catch((err) => log.error({ err, what }, 'round transition failed'))
      .finally(() => background.delete(p));
    background.add(p);
  }

  function schedule(studyId: string, round: number, at: Date) {
    const key = `${studyId}/${round}`;
    clearTimeout(timers.get(key));
    const delay = Math.max(0, at.getTime() - now().getTime()) + 5;
    timers.set(
      key,
      setTimeout(() => {
        timers.delete(key);
        spawn('deadline', () => deps.onDeadline(studyId, round));
      }, Math.min(delay, 2 ** 31 - 1)),
    );
  }

  /** A closed round needs no deadline timer. */
  function cancel(studyId: string, round: number) {
    clearTimeout(timers.get(`${studyId}/${round}`));
  }

  /**
   * Resolves `changed` at the study's next change (or at stop). Subscribe before looking, so a
   * change between the look and the wait is not missed; `off()` when done.
   */
  function subscribe(studyId: string) {
    let wake!: () => void;
    const changed = new Promise<void>((resolve) => (wake = resolve));
    changes.once(studyId, wake);
    changes.once('__stop__', wake);
    return {
      changed,
      wake: () => wake(),
      off() {
        changes.off(studyId, wake);
        changes.off('__stop__', wake);
      },
    };
  }

  return {
    changes,
    notify,
    spawn,
    schedule,
    cancel,
    subscribe,
    get stopped() {
      return stopped;
    },

    /** Resolves when anything about the study changes, or after `seconds` (long polling for watchers). */
    async waitForChange(studyId: string, seconds: number, seen?: number): Promise<void> {
      if (seconds <= 0 || stopped || (seen !== undefined && (changeCounts.get(studyId) ?? 0) !== seen)) return;
      const subscription = subscribe(studyId);
      const timer = setTimeout(subscription.wake, seconds * 1000);
      try {
        await subscription.changed;
      } finally {
        clearTimeout(timer);
        subscription.off();
      }
    },

    changeCount(studyId: string): number {
      return changeCounts.get(studyId) ?? 0;
    },

    async stop() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      changes.emit('__stop__');
      await Promise.allSettled([...background]);
    },
  };
}
