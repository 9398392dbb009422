import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Task } from '../protocols/messages.ts';
import { CoordinatorRefusal, type CoordinatorClient } from './coordinator-client.ts';
import type { LedgerCeilingError } from './privacy-ledger.ts';
import type { StatusFacts } from './release.ts';

/**
 * The task stage: what the coordinator asks next (train on global model r-1, or evaluate model r),
 * long-polled; and the node's pacing when it cannot do what it is asked.
 */

export type NextTask = { task: Task } | { none: true } | { unreachable: true };

/** Asks for the next task: a task, none yet, or no answer (an outage: the caller waits and retries). */
export async function pollTask(client: CoordinatorClient, pollSeconds: number, log: Logger): Promise<NextTask> {
  try {
    const task = await client.nextTask(pollSeconds);
    return task ? { task } : { none: true };
  } catch (err) {
    if (err instanceof CoordinatorRefusal && err.status === 401) throw new Error(`the coordinator no longer accepts this node's key: ${err.message}`);
    // An outage longer than the client's retries: a daemon waits and tries again.
    log.warn({ err: describeNetworkError(err) }, 'cannot reach the coordinator; retrying in 5 s');
    return { unreachable: true };
  }
}

/**
 * The evaluate task a fit task carries (Task.evaluate, evaluationSchedule 'with-next-fit'): the
 * fit's starting model (version r, the same hash) evaluated for round r, by that round's deadline.
 */
export function evaluationTaskOf(task: Task): Task {
  if (task.kind !== 'fit' || !task.evaluate) throw new Error(`task of round ${task.round} carries no evaluation`);
  const { instructions: _instructions, evaluate, ...rest } = task;
  return { ...rest, kind: 'evaluate', round: evaluate.round, deadline: evaluate.deadline };
}

/** The fit task's local-training instructions: the strategy's, or the study's training config. */
export function instructionsOf(task: Task) {
  if (task.instructions) return task.instructions;
  const { training, strategy } = task.config;
  return { localEpochs: training.localEpochs, learningRate: training.learningRate, batchSize: training.batchSize, proximalMu: strategy.name === 'fedprox' ? strategy.mu : 0 };
}

/**
 * A node that cannot train (no usable data, a refused study, its privacy ceiling, a model it
 * will not load) waits longer after each such task, up to idleBackoffMaxSeconds, instead of
 * asking again at once: it told the coordinator its state, and a tight loop of signed requests
 * would only load the coordinator until the round's deadline.
 */
export class BackOff {
  private streak = 0;

  constructor(
    private readonly maxSeconds: number,
    private readonly log: Logger,
    private readonly signal?: AbortSignal,
  ) {}

  async wait(reason: string) {
    this.streak++;
    const seconds = Math.min(this.maxSeconds, 2 ** Math.min(this.streak - 1, 16));
    this.log.debug({ reason, seconds, idleStreak: this.streak }, 'backing off');
    await pause(seconds * 1000, this.signal);
  }

  reset() {
    this.streak = 0;
  }
}

/**
 * The node's privacy ceiling refused a task's spend (under DP an evaluation is charged too: its
 * noised statistics cost (q = 1, z, 1 step)), so nothing was computed or released. It says so to
 * the coordinator as its state, `privacy-ceiling`, with the ledger's reason and no statistics: the
 * coordinator then stops waiting for it (a DP study's evaluation phase closes as soon as every
 * other node reported, with an `evaluation.refused` audit entry) instead of holding the round to
 * its deadline. The node stays in that state: every later task would be refused the same way.
 */
export async function refuseForBudget(report: (s: StatusFacts) => Promise<void>, task: Task, err: LedgerCeilingError, log: Logger): Promise<void> {
  const message = `refusing to ${task.kind === 'fit' ? 'train' : 'evaluate'} in round ${task.round}: ${err.message}`;
  log.warn({ round: task.round, kind: task.kind }, message);
  try {
    await report({ state: 'privacy-ceiling', message });
  } catch (e) {
    log.warn({ err: describeNetworkError(e) }, 'could not report the privacy-ceiling refusal; the round will wait for its deadline');
  }
}

/** Waits `ms` (nothing when <= 0), or less if `signal` aborts. */
export async function pause(ms: number, signal?: AbortSignal) {
  if (ms <= 0 || signal?.aborted) return;
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}

/**
 * A network failure spelled out for a partner reading the log: its message and code (a refused
 * connection, an untrusted certificate, a DNS failure, a timeout), and any `cause` chain (fetch()
 * wraps the reason in one; the node's own transport, http-transport.ts, reports it directly).
 */
export function describeNetworkError(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e && parts.length < 4; e = (e as { cause?: unknown }).cause) {
    if (!(e instanceof Error)) {
      parts.push(String(e));
      break;
    }
    const code = (e as { code?: unknown }).code;
    parts.push(typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
  }
  return parts.join(': ') || String(err);
}
