/**
 * Attacks and defenses (`npm run bench -- --only attacks`): the attack demo (cli/attack-demo.ts)
 * for every attack of client-node/attack.ts against every configuration: no defenses (a study
 * with `bounds: null`, FedAvg), the default claim bounds with FedAvg, and the default bounds with
 * median, trimmed mean and Krum; the honest baseline (no attacker, default bounds, FedAvg) once.
 * Real processes, as the demo runs them: a coordinator and 10 node processes per federation, the
 * first node the attacker. Each row: the final global model's test AUC on the demo's held-out
 * rows, and the federated validation AUC the coordinator reported for the last round.
 *
 *   npm run bench -- --only attacks
 *   node bin/run-ts.js bench/attacks-bench.ts [--attacks scale,fake-eval] [--rounds 2] [--malicious 1]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ATTACK_NAMES, type AttackName } from '../client-node/attack.ts';
import { ATTACK_CONFIGURATIONS, ATTACK_DEMO_ROUNDS, DEADLINE_FACTOR, MIN_DEADLINE_SECONDS } from '../cli/attack-plans.ts';
import { runAttackDemo, type AttackRow } from '../cli/attack-demo.ts';

export interface AttacksBenchOptions {
  attacks?: readonly AttackName[];
  rounds?: number;
  malicious?: number;
  /** Progress of the federations (default stderr). */
  progress?: NodeJS.WritableStream;
}

export function attacksBenchSettings(options: AttacksBenchOptions = {}) {
  return { nodes: 10, malicious: options.malicious ?? 1, rounds: options.rounds ?? ATTACK_DEMO_ROUNDS, deadlines: `${DEADLINE_FACTOR} x the slowest round nobody held open, at least ${MIN_DEADLINE_SECONDS} s (the first federation of each attack: 120 s)`, model: 'mlp 32-16', data: 'shipped churn data, 10 regions by state' };
}

/** Every attack against every configuration; the honest baseline runs once, with the first attack. */
export async function attacksBench(options: AttacksBenchOptions = {}): Promise<AttackRow[]> {
  const { malicious, rounds } = attacksBenchSettings(options);
  const rows: AttackRow[] = [];
  for (const [i, attack] of (options.attacks ?? ATTACK_NAMES).entries()) {
    const out = mkdtempSync(join(tmpdir(), `fedmark-bench-attack-${attack}-`));
    try {
      const compare = i === 0 ? ATTACK_CONFIGURATIONS : ATTACK_CONFIGURATIONS.filter((c) => c !== 'honest');
      const result = await runAttackDemo({ attack, malicious, rounds, compare, out, progress: options.progress ?? process.stderr });
      rows.push(...result.rows);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }
  return rows;
}

export const ATTACKS_TABLE_HEADER = ['attack', 'configuration', 'strategy', 'claim bounds', 'test AUC', 'reported val AUC', "attacker's updates", "attacker's evaluations", 'rounds failed', 'deadline s', 'seconds'];

/** One line per (attack, configuration); the honest baseline's attack column says "none". */
export function attacksTableRows(rows: AttackRow[]): Array<Array<string | number>> {
  const answered = (a: number, r: number, l: number) => [a ? `${a} accepted` : '', r ? `${r} refused` : '', l ? `${l} late` : ''].filter(Boolean).join(', ') || 'none';
  return rows.map((r) => [
    r.attack ?? 'none',
    r.configuration,
    r.strategy.name,
    r.claimBounds,
    r.globalTestAuc ?? '-',
    r.reportedValidationAuc ?? '-',
    r.attacker ? answered(r.attacker.updatesAccepted, r.attacker.updatesRefused, r.attacker.updatesLate) : '-',
    r.attacker ? answered(r.attacker.evaluationsAccepted, r.attacker.evaluationsRefused, r.attacker.evaluationsLate) : '-',
    r.roundsFailed,
    r.deadlineSeconds,
    r.seconds,
  ]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { attacks: { type: 'string' }, rounds: { type: 'string' }, malicious: { type: 'string' } } });
  const options: AttacksBenchOptions = {
    attacks: values.attacks ? (values.attacks.split(',') as AttackName[]) : undefined,
    rounds: values.rounds ? Number(values.rounds) : undefined,
    malicious: values.malicious ? Number(values.malicious) : undefined,
  };
  const rows = await attacksBench(options);
  process.stdout.write(JSON.stringify({ settings: attacksBenchSettings(options), rows }) + '\n');
}
