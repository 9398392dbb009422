import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `fedmark privacy report`: epsilon spent per round and in total, with the accountant named,
 * for a study (from the coordinator, with any token: each role gets the bound that holds against
 * what it can see, coordinator/privacy/readers.ts) or for one node's own data (from the node's
 * state folder, the node's own ledger: no coordinator involved).
 */
export function registerPrivacyReportCommand(program: Command): void {
  const privacy = program.commands.find((c) => c.name() === 'privacy') ?? program.command('privacy');
  privacy
    .command('report')
    .description("a study's privacy report (--coordinator --token --study [--node ID]) or a node's own ledger (--node-state)")
    .option('--coordinator <url>', 'coordinator URL')
    .option('--token <token>', 'API token: admin, auditor, analyst or node (env FEDMARK_TOKEN)', process.env.FEDMARK_TOKEN)
    .option('--study <id>', 'study id')
    .option('--node <nodeId>', "one node: the rounds it took part in and the client-level epsilon they cost (admin, auditor, or that node's own token)")
    .option('--node-state <dir>', "a node's state folder: report from its own privacy ledger")
    .option('--reader <which>', "whose bound to print: own (the token's role, default) or all (every reader: admin, auditor, analyst, node; admin and auditor tokens only)", 'own')
    .option('--json', 'one JSON object on stdout')
    .action(async (opts: { coordinator?: string; token?: string; study?: string; node?: string; nodeState?: string; reader?: string; json?: boolean }) => {
      if (opts.reader !== 'own' && opts.reader !== 'all') return fail(`--reader must be own or all, not ${opts.reader}`);
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
      return studyReport(opts.coordinator, opts.token, opts.study, opts.reader ?? 'own', opts.json);
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

interface Bound {
  epsilon: number | null;
  delta: number | null;
  figure: string;
  reason: string;
}
interface ReaderBody {
  reader: string;
  clientLevel: Bound | null;
  recordLevel: Bound | null;
}
interface StudyReportBody {
  state: string;
  stopReason: string | null;
  dp: boolean;
  accountant: string | null;
  delta: number | null;
  budgetEpsilon: number | null;
  central: unknown;
  spentEpsilon: number;
  rounds: Array<{ round: number; epsilonRound: number; epsilonTotal: number; noiseMultiplier: number; samplingRate: number; clipNorm: number | null }>;
  nodes: Array<{ name: string; region: string; dpSgd: { epsilonTotal: number; delta: number } | null }>;
  bound: ReaderBody;
  readers: ReaderBody[];
}

/** One guarantee against one reader: the epsilon, or "no bound" with the reason. */
function boundLine(what: string, b: Bound | null): string {
  if (!b) return `    ${what}: not run in this study\n`;
  if (b.epsilon === null) return `    ${what}: no bound: ${b.reason}\n`;
  return `    ${what}: epsilon ${b.epsilon.toFixed(4)} at delta ${b.delta} (${b.figure}): ${b.reason}\n`;
}

async function studyReport(coordinator: string, token: string, study: string, reader: string, json?: boolean) {
  const url = new URL(`/v1/studies/${encodeURIComponent(study)}/privacy`, coordinator);
  if (reader === 'all') url.searchParams.set('reader', 'all');
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) return fail(`the coordinator answered ${res.status}: ${await res.text()}`, 1);
  const report = (await res.json()) as StudyReportBody;
  if (json) {
    process.stdout.write(JSON.stringify(report) + '\n');
    return;
  }
  const out = (line: string) => process.stdout.write(line);
  // A stopped study says why first: its figures are final.
  if (report.stopReason) out(`study ${study}: ${report.state}: ${report.stopReason}\n`);
  if (!report.dp) {
    // Never "epsilon 0": with no mechanism there is no guarantee at all, for anyone.
    out(`study ${study}: no differential privacy (no central DP, no DP-SGD): models and metrics are released without noise; no epsilon applies to any reader\n`);
    return;
  }
  if (report.central && report.rounds.length) {
    out(`study ${study}: client-level epsilon ${report.spentEpsilon.toFixed(4)}${report.budgetEpsilon ? ` of ${report.budgetEpsilon}` : ''} at delta ${report.delta} (${report.accountant} accountant), against readers who see only the noised models\n`);
  } else if (report.central) out(`study ${study}: central DP at delta ${report.delta} (${report.accountant} accountant), no round charged yet\n`);
  else out(`study ${study}: no central DP (no client-level guarantee); record-level DP-SGD on each node at delta ${report.delta}\n`);
  for (const r of report.rounds) out(`  round ${r.round}: +${r.epsilonRound.toFixed(4)} = ${r.epsilonTotal.toFixed(4)}  (q=${r.samplingRate}, z=${r.noiseMultiplier.toFixed(4)}, clip ${r.clipNorm ?? '-'})\n`);
  for (const n of report.nodes) if (n.dpSgd) out(`  node ${n.name} (${n.region}): DP-SGD record-level epsilon ${n.dpSgd.epsilonTotal.toFixed(4)} at delta ${n.dpSgd.delta}\n`);
  const views = reader === 'all' ? report.readers : [report.bound];
  for (const v of views) {
    out(`  against ${v.reader === report.bound.reader && reader !== 'all' ? `you (${v.reader})` : v.reader}:\n`);
    out(boundLine('client-level (a whole node)', v.clientLevel));
    out(boundLine('record-level (one row, DP-SGD)', v.recordLevel));
  }
}

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
