import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { AttackName } from '../client-node/attack.ts';
import type { StrategyConfig } from '../protocols/strategies/config.ts';
import { adaptiveDeadlines, ATTACK_CONFIGURATIONS, ATTACK_DEMO_ROUNDS, PLANS, robustStrategy, type AttackConfiguration, type ConfigurationPlan } from './attack-plans.ts';
import { prepareDemoOut, runDemo, type DemoOptions, type DemoResult } from './demo.ts';

/**
 * The attack comparison (`npm start -- --malicious 1 --attack NAME`, `npm run bench -- --only
 * attacks`): the same demo federation run once per configuration, with the first N nodes'
 * processes started as attackers (`fedmark node --attack`, client-node/attack.ts). The demo owns
 * every node, so this is the attack as a partner would mount it: real processes, signed and
 * sealed updates, the coordinator's real checks. Each configuration is a fresh coordinator and
 * study; the table compares the final global model's test AUC (on the demo's held-out rows, which
 * no node can touch) with the federated validation AUC the coordinator reports (pooled from the
 * nodes' own reports, which fake-eval lies in).
 */
/** What the coordinator did with an attacker's messages, in rounds (from the attacker's own log). */
export interface AttackerOutcome {
  /** Rounds whose update the coordinator accepted. */
  updatesAccepted: number;
  /** Rounds in which it refused every update it got (a 4xx other than a closed round) and accepted none. */
  updatesRefused: number;
  /** Rounds the attacker missed: its update came after the round closed (409 ROUND_CLOSED). */
  updatesLate: number;
  evaluationsAccepted: number;
  evaluationsRefused: number;
  evaluationsLate: number;
  /** The coordinator's refusals (late ones left out), each once. */
  refusals: string[];
}

export interface AttackRow {
  configuration: AttackConfiguration;
  label: string;
  /** null for the honest baseline. */
  attack: AttackName | null;
  strategy: StrategyConfig;
  claimBounds: 'default' | 'none';
  attackerNodes: string[];
  /** The final global model on the held-out test rows: the damage. */
  globalTestAuc: number | null;
  /** The last completed round's federated validation AUC, as the coordinator reports it. */
  reportedValidationAuc: number | null;
  roundsCompleted: number;
  roundsFailed: number;
  /** The study's fit deadline (the evaluation deadline is half). */
  deadlineSeconds: number;
  attacker: AttackerOutcome | null;
  seconds: number;
}

export interface AttackDemoOptions extends Omit<DemoOptions, 'strategy' | 'attackers' | 'bounds'> {
  attack: AttackName;
  /** Attacker nodes (default 1). */
  malicious?: number;
  /** The configurations to run, in this order (default all of ATTACK_CONFIGURATIONS). */
  compare?: readonly AttackConfiguration[];
}

export interface AttackDemoResult {
  attack: AttackName;
  malicious: number;
  nodes: number;
  rounds: number;
  rows: AttackRow[];
  /** The honest baseline's figures for reference (null when it was not in --compare). */
  honestBaselineTestAuc: number | null;
  honestBaselineValidationAuc: number | null;
  outDir: string;
  wallSeconds: number;
}

export async function runAttackDemo(options: AttackDemoOptions): Promise<AttackDemoResult> {
  const started = performance.now();
  const progress = options.progress ?? (options.json ? process.stderr : process.stdout);
  const say = (line: string) => progress.write(line + '\n');
  if (options.task === 'regression') throw new Error('--attack compares AUCs: it runs the binary task only (leave out --task regression)');
  const malicious = options.malicious ?? 1;
  const rounds = options.rounds ?? ATTACK_DEMO_ROUNDS;
  const compare = options.compare ?? ATTACK_CONFIGURATIONS;
  const outDir = prepareDemoOut(options.out);
  say(`fedmark attack demo: ${options.attack} by ${malicious} node(s); ${compare.length} federations one after another, ${rounds} rounds each (not the demo's 20: time); a refused attacker keeps its round open until the deadline, ${options.deadlines ? `${options.deadlines.round} s` : 'set from the rounds where nobody was refused'}`);
  const rows: AttackRow[] = [];
  let nodes = 0;
  let slowestRound: number | null = null;
  for (const configuration of compare) {
    const plan = PLANS[configuration];
    const deadlines = options.deadlines ?? adaptiveDeadlines(slowestRound);
    say(`\n== ${plan.label}: ${plan.strategy}, claim bounds ${plan.claimBounds}${plan.attacked ? `, ${malicious} attacker(s): ${options.attack}` : ''}; deadlines ${deadlines.round} s to train, ${deadlines.evaluation} s to evaluate`);
    const t = performance.now();
    const demo = await runDemo({
      ...options,
      rounds,
      deadlines,
      json: false,
      localBaseline: false,
      out: join(outDir, configuration),
      progress: indented(progress),
      strategy: robustStrategy(plan.strategy, malicious, options.nodes ?? 10),
      ...(plan.claimBounds === 'none' ? { bounds: null } : {}),
      ...(plan.attacked ? { attackers: { attack: options.attack, count: malicious } } : {}),
    });
    nodes = demo.nodes;
    const row = attackRow(configuration, plan, demo, deadlines.round, (performance.now() - t) / 1000);
    rows.push(row);
    // Rounds that no refusal held open say how long this machine needs for an honest round.
    const heldOpen = row.attacker && row.attacker.updatesRefused + row.attacker.updatesLate + row.attacker.evaluationsRefused + row.attacker.evaluationsLate > 0;
    const durations = demo.rounds.map((r) => r.durationSeconds).filter((d): d is number => d !== null);
    if (!heldOpen && durations.length) slowestRound = Math.max(slowestRound ?? 0, ...durations);
  }
  const honest = rows.find((r) => r.configuration === 'honest');
  const result: AttackDemoResult = {
    attack: options.attack,
    malicious,
    nodes,
    rounds,
    rows,
    honestBaselineTestAuc: honest?.globalTestAuc ?? null,
    honestBaselineValidationAuc: honest?.reportedValidationAuc ?? null,
    outDir,
    wallSeconds: (performance.now() - started) / 1000,
  };
  say('');
  for (const line of attackTable(result)) say(line);
  say(`\nlogs and models of each configuration in ${outDir}/<configuration>; the attackers' own logs say what the coordinator answered them`);
  writeFileSync(join(outDir, 'attack-summary.json'), JSON.stringify(result, null, 2));
  if (options.json) process.stdout.write(JSON.stringify(result) + '\n');
  return result;
}

function attackRow(configuration: AttackConfiguration, plan: ConfigurationPlan, demo: DemoResult, deadlineSeconds: number, seconds: number): AttackRow {
  const completed = demo.rounds.filter((r) => r.phase === 'completed');
  return {
    configuration,
    label: plan.label,
    attack: demo.attack?.name ?? null,
    strategy: demo.strategy,
    claimBounds: plan.claimBounds,
    attackerNodes: demo.attack?.nodes ?? [],
    globalTestAuc: demo.globalTestAuc,
    reportedValidationAuc: completed.at(-1)?.validationAuc ?? null,
    roundsCompleted: completed.length,
    roundsFailed: demo.rounds.length - completed.length,
    deadlineSeconds,
    attacker: demo.attack ? attackerOutcome(demo.attack.nodes.map((n) => join(demo.outDir, 'logs', `node-${n}.log`))) : null,
    seconds,
  };
}

/**
 * How the coordinator answered the attackers, read from their own logs (what any partner would
 * see): a round counts once, as accepted if an update got in, as refused if refusals and no
 * acceptance came back, as late if it only heard that the round had closed.
 */
export function attackerOutcome(logFiles: string[]): AttackerOutcome {
  const kinds = { fit: { sent: new Set<string>(), refused: new Set<string>(), late: new Set<string>() }, evaluate: { sent: new Set<string>(), refused: new Set<string>(), late: new Set<string>() } };
  const refusals = new Set<string>();
  for (const file of logFiles) {
    for (const line of jsonLines(file)) {
      const key = `${file}#${line.round}`;
      if (line.msg === 'sent model update') kinds.fit.sent.add(key);
      else if (line.msg === 'sent evaluation (sufficient statistics)') kinds.evaluate.sent.add(key);
      else if (line.msg === 'coordinator refused' && (line.kind === 'fit' || line.kind === 'evaluate')) {
        const late = line.code === 'ROUND_CLOSED';
        kinds[line.kind][late ? 'late' : 'refused'].add(key);
        if (!late) refusals.add(`${line.status} ${line.code}: ${String(line.reason).slice(0, 200)}`);
      }
    }
  }
  const count = (k: (typeof kinds)['fit']) => {
    const refused = [...k.refused].filter((r) => !k.sent.has(r));
    return { accepted: k.sent.size, refused: refused.length, late: [...k.late].filter((r) => !k.sent.has(r) && !refused.includes(r)).length };
  };
  const fit = count(kinds.fit);
  const evaluate = count(kinds.evaluate);
  return { updatesAccepted: fit.accepted, updatesRefused: fit.refused, updatesLate: fit.late, evaluationsAccepted: evaluate.accepted, evaluationsRefused: evaluate.refused, evaluationsLate: evaluate.late, refusals: [...refusals] };
}

/** A JSON-lines log, lines that are not JSON skipped; nothing for a missing file. */
function jsonLines(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((text) => {
      try {
        return [JSON.parse(text) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/** The final table: one line per configuration, the honest baseline first when it ran. */
export function attackTable(result: AttackDemoResult): string[] {
  const fmt = (v: number | null) => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(4));
  const answered = (accepted: number, refused: number, late: number) => [accepted ? `${accepted} accepted` : '', refused ? `${refused} refused` : '', late ? `${late} late` : ''].filter(Boolean).join(', ') || 'none';
  const header = ['configuration', 'strategy', 'claim bounds', 'test AUC', 'reported val AUC', "attacker's updates", "attacker's evaluations"];
  const cells = result.rows.map((r) => [
    r.label,
    describe(r.strategy),
    r.claimBounds === 'none' ? 'none (null)' : 'default',
    fmt(r.globalTestAuc),
    fmt(r.reportedValidationAuc),
    r.attacker ? answered(r.attacker.updatesAccepted, r.attacker.updatesRefused, r.attacker.updatesLate) : '-',
    r.attacker ? answered(r.attacker.evaluationsAccepted, r.attacker.evaluationsRefused, r.attacker.evaluationsLate) : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => '  ' + c.map((v, i) => (i >= 3 && i <= 4 ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join('  ');
  const attackers = result.rows.find((r) => r.attackerNodes.length)?.attackerNodes.join(', ') ?? '-';
  const lines = [`attack ${result.attack} by ${result.malicious} of ${result.nodes} nodes (${attackers}); ${result.rounds} rounds each; test AUC of the final global model on the held-out rows, validation AUC as the coordinator reports it`, line(header), ...cells.map(line)];
  const failed = result.rows.filter((r) => r.roundsFailed > 0);
  for (const r of failed) lines.push(`  ${r.label}: ${r.roundsFailed} of ${r.roundsFailed + r.roundsCompleted} rounds failed`);
  const reasons = [...new Set(result.rows.flatMap((r) => r.attacker?.refusals ?? []))];
  for (const reason of reasons.slice(0, 4)) lines.push(`  refused: ${reason}`);
  return lines;
}

function describe(strategy: StrategyConfig): string {
  const params = Object.entries(strategy).filter(([k]) => k !== 'name');
  return params.length ? `${strategy.name} (${params.map(([k, v]) => `${k} ${v}`).join(', ')})` : strategy.name;
}

/** The inner demos' progress, indented under their configuration's heading. */
function indented(out: NodeJS.WritableStream): NodeJS.WritableStream {
  return new Writable({
    write(chunk, _encoding, done) {
      out.write(String(chunk).replace(/^(?=.)/gm, '    '));
      done();
    },
  });
}
