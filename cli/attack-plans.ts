import type { z } from 'zod';
import type { StrategyConfig, StrategyName } from '../protocols/strategies/config.ts';

/**
 * The configurations the attack comparison runs (cli/attack-demo.ts), apart from it so that the
 * CLI's --help and option parsing do not load the demo and TensorFlow.js.
 */
export const ATTACK_CONFIGURATIONS = ['honest', 'undefended', 'bounds', 'median', 'trimmed-mean', 'krum'] as const;
export type AttackConfiguration = (typeof ATTACK_CONFIGURATIONS)[number];

/**
 * Fewer rounds than the demo's 20: six federations must fit in about 3 minutes on 2 cores, and
 * every attack here does its damage (or is stopped) in the first round; the second shows whether
 * the honest nodes repair it.
 */
export const ATTACK_DEMO_ROUNDS = 2;
/**
 * Deadlines: an attacker whose update (or evaluation) the coordinator refuses never sends an
 * accepted one, so its round closes at the deadline, not when the others are in (the coordinator
 * waits for every participant). The demo's 120 s would make a refused attack cost minutes a
 * round; too short, and honest nodes miss it on a loaded machine (round 1, ten processes
 * compiling their first training at once, took 0-40 s with other suites running). So the first
 * configuration runs with the demo's 120 s and the next ones get DEADLINE_FACTOR x the slowest
 * round seen where nobody was refused (start to close, evaluation included), at least
 * MIN_DEADLINE_SECONDS: 16 s on 2 idle cores, where a round takes 1-3 s.
 */
export const DEADLINE_FACTOR = 4;
export const MIN_DEADLINE_SECONDS = 16;
export const MAX_DEADLINE_SECONDS = 120;

export function adaptiveDeadlines(slowestRoundSeconds: number | null): { round: number; evaluation: number } {
  if (slowestRoundSeconds === null) return demoDeadlines(MAX_DEADLINE_SECONDS);
  return demoDeadlines(Math.min(MAX_DEADLINE_SECONDS, Math.max(MIN_DEADLINE_SECONDS, Math.ceil(DEADLINE_FACTOR * slowestRoundSeconds))));
}

/** `--round-deadline S`: S seconds to train and send, half of it to evaluate. */
export function demoDeadlines(roundSeconds: number): { round: number; evaluation: number } {
  return { round: roundSeconds, evaluation: Math.ceil(roundSeconds / 2) };
}

export interface ConfigurationPlan {
  label: string;
  strategy: StrategyName;
  /** 'none': the study is created with `bounds: null` (no claim bounds: today's legacy behaviour). */
  claimBounds: 'default' | 'none';
  attacked: boolean;
}

export const PLANS: Record<AttackConfiguration, ConfigurationPlan> = {
  honest: { label: 'honest baseline (no attacker)', strategy: 'fedavg', claimBounds: 'default', attacked: false },
  undefended: { label: 'no defenses', strategy: 'fedavg', claimBounds: 'none', attacked: true },
  bounds: { label: 'claim bounds', strategy: 'fedavg', claimBounds: 'default', attacked: true },
  median: { label: 'claim bounds + median', strategy: 'median', claimBounds: 'default', attacked: true },
  'trimmed-mean': { label: 'claim bounds + trimmed mean', strategy: 'trimmed-mean', claimBounds: 'default', attacked: true },
  krum: { label: 'claim bounds + Krum', strategy: 'krum', claimBounds: 'default', attacked: true },
};

/**
 * The strategy of a configuration, with parameters that tolerate `malicious` attackers among
 * `nodes`: Krum's f = malicious; the trimmed mean trims at least malicious + 1 values at each
 * end with every node in (and at least one at the study's minimum of about half the nodes),
 * where its default 0.1 would need all 10 nodes every round: one refused attacker would fail it.
 */
export function robustStrategy(name: StrategyName, malicious: number, nodes: number): z.input<typeof StrategyConfig> {
  if (name === 'krum') return { name, byzantine: malicious };
  if (name === 'trimmed-mean') return { name, trimFraction: Math.min(0.45, (malicious + 1) / nodes) };
  return { name } as z.input<typeof StrategyConfig>;
}

