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
    .description("a study's privacy report (--coordinator --token --study) or a node's own ledger (--node-state)")
    .option('--coordinator <url>', 'coordinator URL')
    .option('--token <token>', 'admin or auditor API token (env FEDMARK_TOKEN)', process.env.FEDMARK_TOKEN)
    .option('--study <id>', 'study id')
    .option('--node-state <dir>', "a node's state folder: report from its own privacy ledger")
    .option('--json', 'one JSON object on stdout')
    .action(async (opts: { coordinator?: string; token?: string; study?: string; nodeState?: string; json?: boolean }) => {
      if (opts.nodeState) {
        const file = join(opts.nodeState, 'privacy-ledger.json');
        if (!existsSync(file)) return fail(`no privacy ledger in ${opts.nodeState} (this node never trained with DP-SGD)`);
        const ledger = JSON.parse(readFileSync(file, 'utf8')) as { accountant: 'rdp' | 'pld'; delta: number; entries: Array<{ studyId: string; round: number; samplingRate: number; noiseMultiplier: number; steps: number }> };
        const { NodePrivacyLedger } = await import('../client-node/privacy-ledger.ts');
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
      if (!opts.coordinator || !opts.token || !opts.study) return fail('give --coordinator, --token and --study (or --node-state DIR)');
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

function fail(message: string, code = 2) {
  process.stderr.write(`fedmark privacy report: ${message}\n`);
  process.exitCode = code;
}
