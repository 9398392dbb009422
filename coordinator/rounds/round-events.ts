import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';

/** How a failed transition is retried: exponential backoff from `initialMs`, capped at `maxMs`, with jitter. */
export interface RetryPolicy {
  initialMs: number;
  maxMs: number;
}
export const DEFAULT_RETRY: RetryPolicy = { initialMs: 250, maxMs: 10_000 };

/**
 * The wait before retry number `attempt` (1, 2, ...): doubling, capped, then drawn from the upper
 * half ("equal jitter") so replicas or many rounds that failed together do not retry in lockstep.
 */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt - 1, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** The event that wakes a study's nodes waiting for a task (study ids never contain NUL). */
const tasksChannel = (studyId: string) => `${studyId}\u0000tasks`;

/**
 * The round service's clock and bell: deadline timers, background transitions, the deadline
 * sweep, and the change notifications that wake long-polling watchers and nodes. Nothing here
 * touches the database: timers are only a way to be on time. A transition that fails (the
 * database down, a lost connection) is retried with backoff until it commits, and `sweep` runs
 * every `sweepSeconds` so a deadline whose timer was missed (a failed retry chain, a restart, a
 * second replica) is still found from the database.
 */
export function createRoundEvents(deps: {
  log: Logger;
  now: () => Date;
  onDeadline: (studyId: string, round: number) => Promise<void>;
  retry?: RetryPolicy;
  sweepSeconds?: number;
  sweep?: () => Promise<void>;
}) {
  const { log, now } = deps;
  const retry = deps.retry ?? DEFAULT_RETRY;
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const timers = new Map<string, NodeJS.Timeout>();
  const background = new Set<Promise<unknown>>();
  const changeCounts = new Map<string, number>();
  // Notifications on the tasks channel only (a change that may make a task), per study.
  const taskCounts = new Map<string, number>();
  // Transitions running or waiting to retry, per round key: the sweep leaves those alone.
  const inFlight = new Map<string, number>();
  // Backoff sleeps, woken early by stop().
  const sleepers = new Set<() => void>();
  let stopped = false;
  let sweepTimer: NodeJS.Timeout | undefined;
  let sweeping = false;

  /**
   * The study changed: its watchers (waitForChange) are woken, and, unless only `watchers` need
   * to know, the nodes long-polling for a task (subscribe(studyId, 'tasks')). A change that makes
   * no task (a round completed: issue 13, ~10 empty task lookups a round in the demo) wakes only
   * the watchers.
   */
  function notify(studyId: string, who: 'all' | 'watchers' = 'all') {
    changeCounts.set(studyId, (changeCounts.get(studyId) ?? 0) + 1);
    changes.emit(studyId);
    if (who === 'all') {
      taskCounts.set(studyId, (taskCounts.get(studyId) ?? 0) + 1);
      changes.emit(tasksChannel(studyId));
    }
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      sleepers.add(wake);
    });
  }

  /** Runs `fn` until it succeeds (or the service stops), waiting with backoff between attempts. */
  async function untilCommitted(what: string, key: string | undefined, fn: () => Promise<unknown>): Promise<void> {
    for (let attempt = 1; !stopped; attempt++) {
      try {
        await fn();
        if (attempt > 1) log.info({ what, key, attempts: attempt }, 'round transition committed after retries');
        return;
      } catch (err) {
        if (stopped) return;
        const delayMs = Math.round(backoffMs(attempt, retry));
        log.error({ err, what, key, attempt, retryInMs: delayMs }, 'round transition failed; retrying');
        await sleep(delayMs);
      }
    }
  }

  /**
   * Runs a transition in the background (after a response, or from a timer), retrying it until it
   * commits: transitions lock the round row and are idempotent, so a retry that finds the work
   * done does nothing. `key` (study/round) lets the sweep skip rounds already being handled.
   */
  function spawn(what: string, fn: () => Promise<unknown>, key?: string) {
    if (stopped) return;
    if (key) inFlight.set(key, (inFlight.get(key) ?? 0) + 1);
    const p = untilCommitted(what, key, fn).finally(() => {
      background.delete(p);
      if (key) {
        const left = (inFlight.get(key) ?? 1) - 1;
        if (left > 0) inFlight.set(key, left);
        else inFlight.delete(key);
      }
    });
    background.add(p);
  }

  /** One sweep at a time; a failed sweep is only logged (the next one comes in `sweepSeconds`). */
  async function runSweep() {
    if (sweeping || stopped || !deps.sweep) return;
    sweeping = true;
    const p = deps
      .sweep()
      .catch((err) => log.error({ err }, 'deadline sweep failed'))
      .finally(() => {
        sweeping = false;
        background.delete(p);
      });
    background.add(p);
    await p;
  }

  function schedule(studyId: string, round: number, at: Date) {
    const key = `${studyId}/${round}`;
    clearTimeout(timers.get(key));
    const delay = Math.max(0, at.getTime() - now().getTime()) + 5;
    timers.set(
      key,
      setTimeout(() => {
        timers.delete(key);
        spawn('deadline', () => deps.onDeadline(studyId, round), key);
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
  function subscribe(studyId: string, channel: 'changes' | 'tasks' = 'changes') {
    let wake!: () => void;
    const changed = new Promise<void>((resolve) => (wake = resolve));
    const event = channel === 'tasks' ? tasksChannel(studyId) : studyId;
    changes.once(event, wake);
    changes.once('__stop__', wake);
    return {
      changed,
      wake: () => wake(),
      off() {
        changes.off(event, wake);
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
    runSweep,

    /** Starts the periodic deadline sweep (once; after resume(), so start-up work comes first). */
    startSweep() {
      if (stopped || sweepTimer || !deps.sweep || !deps.sweepSeconds) return;
      sweepTimer = setInterval(() => void runSweep(), deps.sweepSeconds * 1000);
      sweepTimer.unref();
    },

    /** Whether a transition of this round is running or waiting to retry. */
    busy(key: string): boolean {
      return inFlight.has(key);
    },
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

    /** How many changes that may make a task (notify 'all') this study has had here. */
    taskChangeCount(studyId: string): number {
      return taskCounts.get(studyId) ?? 0;
    },

    /** Resolves once no background transition is running (tests: a close's follow-up work is done). */
    async idle(): Promise<void> {
      while (background.size > 0) await Promise.allSettled([...background]);
    },

    async stop() {
      stopped = true;
      clearInterval(sweepTimer);
      for (const wake of [...sleepers]) wake();
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      changes.emit('__stop__');
      await Promise.allSettled([...background]);
    },
  };
}
