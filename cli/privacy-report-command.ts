import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `fedmark privacy report`: epsilon spent per round and in total, with the accountant named,
 * for a study (from the coordinator, with an admin or auditor token) or for one node's own data
 * (from the node's state folder, the node's own ledger: no coordinator involved).
 */
export function registerPrivacyReportCommand(program: Command): void {
  const privacy = program.commands.find((c) => c.name() === 'privacy') ?? program.command('privacy');
  privacy
    .command('report')
    .description("a study's privacy report (--coordinator --token --study [--node ID]) or a node's own ledger (--node-state)")
    .option('--coordinator <url>', 'coordinator URL')
    .option('--token <token>', 'admin or auditor API token (env FEDMARK_TOKEN)', process.env.FEDMARK_TOKEN)
    .option('--study <id>', 'study id')
    .option('--node <nodeId>', "one node: the rounds it took part in and the client-level epsilon they cost (admin, auditor, or that node's own token)")
    .option('--node-state <dir>', "a node's state folder: report from its own privacy ledger")
    .option('--json', 'one JSON object on stdout')
    .action(async (opts: { coordinator?: string; token?: string; study?: string; node?: string; nodeState?: string; json?: boolean }) => {
      if (opts.node !== undefined && opts.nodeState) return fail('give either --node (from the coordinator) or --node-state (a node\'s own ledger), not both');
      if (opts.nodeState) {
        // The data source's shared ledger (named in the state dir), or a ledger from before 2026-12-02.
        const { NodePrivacyLedger, LEDGER_REF } = await import('../client-node/privacy-ledger.ts');
        const ref = join(opts.nodeState, LEDGER_REF);
        const file = existsSync(ref) ? readFileSync(ref, 'utf8').trim() : join(opts.nodeState, 'privacy-ledger.json');
        if (!existsSync(file)) return fail(`no privacy ledger in ${opts.nodeState} (this node never trained with DP-SGD)`);
        const read = new NodePrivacyLedger(file, 'rdp', 1e-5);
        const last = read.all[read.all.length - 1];
        const ledger = { accountant: last?.accountant ?? 'rdp', delta: last?.delta ?? 1e-5, entries: read.all };
        const l = new NodePrivacyLedger(file, ledger.accountant, ledger.delta);
        const rounds = ledger.entries.map((e, i) => ({ ...e, epsilonTotal: l.epsilon(ledger.entries.slice(0, i + 1)) }));
        const report = { accountant: ledger.accountant, delta: ledger.delta, epsilonTotal: l.epsilon(), rounds };
        if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
        else {
          process.stdout.write(`node ledger ${file}: epsilon ${report.epsilonTotal.toFixed(4)} at delta ${report.delta} (${report.accountant} accountant), ${rounds.length} rounds\n`);
          for (const r of rounds) process.stdout.write(`  ${r.studyId} round ${r.round}: q=${r.samplingRate} sigma=${r.noiseMultiplier.toFixed(4)} steps=${r.steps} -> total ${r.epsilonTotal.toFixed(4)}\n`);
        }
        return;
      }
      if (!opts.coordinator || !opts.token || !opts.study) return fail(`give --coordinator, --token and --study${opts.node !== undefined ? ' with --node' : ' (or --node-state DIR)'}`);
      if (opts.node !== undefined) return nodeReport(opts.coordinator, opts.token, opts.study, opts.node, opts.json);
      const res = await fetch(new URL(`/v1/studies/${encodeURIComponent(opts.study)}/privacy`, opts.coordinator), { headers: { authorization: `Bearer ${opts.token}` } });
      if (!res.ok) return fail(`the coordinator answered ${res.status}: ${await res.text()}`, 1);
      const report = (await res.json()) as { accountant: string | null; delta: number | null; budgetEpsilon: number | null; spentEpsilon: number; rounds: Array<{ round: number; epsilonRound: number; epsilonTotal: number; noiseMultiplier: number; samplingRate: number; clipNorm: number | null }>; nodes: Array<{ name: string; region: string; dpSgd: { epsilonTotal: number; delta: number } | null }> };
      if (opts.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
        return;
      }
      process.stdout.write(`study ${opts.study}: client-level epsilon ${report.spentEpsilon.toFixed(4)}${report.budgetEpsilon ? ` of ${report.budgetEpsilon}` : ''} at delta ${report.delta ?? '-'} (${report.accountant ?? 'no'} accountant)\n`);
      for (const r of report.rounds) process.stdout.write(`  round ${r.round}: +${r.epsilonRound.toFixed(4)} = ${r.epsilonTotal.toFixed(4)}  (q=${r.samplingRate}, z=${r.noiseMultiplier.toFixed(4)}, clip ${r.clipNorm ?? '-'})\n`);
      for (const n of report.nodes) if (n.dpSgd) process.stdout.write(`  node ${n.name} (${n.region}): DP-SGD record-level epsilon ${n.dpSgd.epsilonTotal.toFixed(4)} at delta ${n.dpSgd.delta}\n`);
    });
}

interface NodeReportBody {
  nodeId: string;
  name: string;
  region: string;
  accountant: string | null;
  delta: number | null;
  clientLevel: {
    accountant: string;
    delta: number;
    samplingRate: number;
    noiseMultiplier: number;
    roundsCharged: number;
    rounds: Array<{ round: number; phase: string; updateSent: boolean; epsilonRound: number | null }>;
    epsilon: number | null;
    epsilonIfParticipationKnown: number | null;
  } | null;
  dpSgd: { accountant: string; delta: number; epsilonTotal: number; rounds: Array<{ round: number; epsilonRound: number; epsilonTotal: number; steps: number }> } | null;
}

const eps = (x: number | null) => (x === null ? 'unbounded' : x.toFixed(4));

async function nodeReport(coordinator: string, token: string, study: string, node: string, json?: boolean) {
  const res = await fetch(new URL(`/v1/studies/${encodeURIComponent(study)}/nodes/${encodeURIComponent(node)}/privacy`, coordinator), { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) return fail(`the coordinator answered ${res.status}: ${await res.text()}`, 1);
  const report = (await res.json()) as NodeReportBody;
  if (json) {
    process.stdout.write(JSON.stringify(report) + '\n');
    return;
  }
  process.stdout.write(`node ${report.name} (${report.nodeId}, ${report.region}) in study ${study}\n`);
  const c = report.clientLevel;
  if (!c) process.stdout.write('  client-level: no central DP in this study (no client-level guarantee)\n');
  else {
    process.stdout.write(`  client-level epsilon ${eps(c.epsilon)} at delta ${c.delta} (${c.accountant} accountant, q=${c.samplingRate}, z=${c.noiseMultiplier}, ${c.roundsCharged} rounds since it enrolled)\n`);
    process.stdout.write(`  if its participation is known: ${eps(c.epsilonIfParticipationKnown)} (${c.rounds.filter((r) => r.updateSent).length} rounds with its update, no amplification by sampling)\n`);
    for (const r of c.rounds) process.stdout.write(`  round ${r.round} (${r.phase}): ${r.updateSent ? 'update sent' : 'selected, no update'}; the round cost the study +${eps(r.epsilonRound)}\n`);
  }
  if (report.dpSgd) process.stdout.write(`  DP-SGD (record-level, as the node reported it): epsilon ${report.dpSgd.epsilonTotal.toFixed(4)} at delta ${report.dpSgd.delta} over ${report.dpSgd.rounds.length} rounds\n`);
}

function fail(message: string, code = 2) {
  process.stderr.write(`fedmark privacy report: ${message}\n`);
  process.exitCode = code;
}
