/**
 * The compliance officer's report, built from an audit export alone (issue 12): for each model
 * version of a study, the nodes that contributed (name, region, jurisdiction, the policy version
 * in force when the round was checked), what privacy it cost and by which mechanism, the model's
 * hash and signer, and every round that was refused or failed, with its reason.
 *
 * Pure: entries in, a structured report out, rendered to Markdown or HTML. The caller verifies
 * the export first (cli/audit-command.ts): a report over an unverified chain would be a report
 * over whatever someone typed into the file.
 *
 * @example
 *   const report = buildAuditReport(entries, { studyId: 'churn-2026q4' });
 *   process.stdout.write(renderAuditReportMarkdown(report));
 */
import type { AuditEntry } from './audit-chain.ts';
import { describeInitFrom } from '../messages.ts';

export interface ReportNode {
  nodeId: string;
  name: string | null;
  region: string | null;
  jurisdiction: string | null;
  keyFingerprint: string | null;
  enrolledAt: string | null;
}

export interface ReportPolicy {
  jurisdiction: string;
  version: number;
  builtIn: boolean | null;
  profileSha256: string | null;
  /** Where the version comes from: the round's own record, or the latest policy.changed entry before it (logs from before 2026-12-02). */
  source: 'round.started' | 'policy.changed' | 'not recorded';
}

export interface ReportContributor extends ReportNode {
  policy: ReportPolicy | null;
  /** The node's record-level DP-SGD spend it reported with the update (epsilon over the study so far). */
  dpSgd: { epsilonRound: number; epsilonTotal: number; delta: number; accountant: string; noiseMultiplier: number; samplingRate: number; steps: number } | null;
  updateSha256: string | null;
  clipped: boolean | null;
}

export interface ReportVersion {
  version: number;
  round: number;
  publishedAt: string;
  modelSha256: string;
  signerFingerprint: string | null;
  bytes: number | null;
  strategy: string | null;
  /** The study's privacy configuration in force for the round (null: no differential privacy). */
  privacy: unknown;
  clientLevel: { accountant: string; delta: number; noiseMultiplier: number; samplingRate: number; epsilonRound: number; epsilonTotal: number } | null;
  contributors: ReportContributor[];
  failures: unknown[];
  validation: { auc: number | null; metrics: unknown } | null;
}

export interface ReportRefusal {
  round: number | null;
  at: string;
  kind: string;
  reason: string;
}

export interface AuditReport {
  studyId: string;
  createdAt: string | null;
  task: string | null;
  model: string | null;
  /** running, completed or stopped, as the log says. */
  state: string;
  stopReason: string | null;
  entriesRead: number;
  lastSeq: number | null;
  versions: ReportVersion[];
  refusals: ReportRefusal[];
  excludedEvaluations: Array<{ round: number | null; nodeId: string; reason: string }>;
  /** Versions asked for with --version that the log does not hold. */
  missingVersions: number[];
  /** The round-0 model's sha256, as study.created recorded it. */
  initialModelSha256: string | null;
  /** A warm start's source (issue 9, initFrom): the study, version and weights' sha256 round 0 was copied from; null: seeded. */
  initializedFrom: { study: string; version: number; sha256: string } | null;
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

/** Every node the log enrolled (for any study: node.enrolled carries the study on the entry). */
function nodesOf(entries: AuditEntry[]): Map<string, ReportNode> {
  const nodes = new Map<string, ReportNode>();
  for (const e of entries) {
    if (e.kind !== 'node.enrolled') continue;
    const d = obj(e.data);
    const nodeId = str(d.nodeId);
    if (!nodeId) continue;
    nodes.set(nodeId, { nodeId, name: str(d.name), region: str(d.region), jurisdiction: str(d.jurisdiction), keyFingerprint: str(d.keyFingerprint), enrolledAt: e.at });
  }
  return nodes;
}

/** The policy version a round checked for a jurisdiction: the round's own record, else the last published change before it. */
function policyFor(jurisdiction: string | null, started: AuditEntry | undefined, entries: AuditEntry[]): ReportPolicy | null {
  if (!jurisdiction) return null;
  const recorded = started ? (obj(started.data).policies as unknown[] | undefined) : undefined;
  if (Array.isArray(recorded)) {
    const p = recorded.map(obj).find((x) => x.jurisdiction === jurisdiction);
    if (p) return { jurisdiction, version: num(p.version) ?? 0, builtIn: typeof p.builtIn === 'boolean' ? p.builtIn : null, profileSha256: str(p.profileSha256), source: 'round.started' };
  }
  const before = started?.seq ?? Number.MAX_SAFE_INTEGER;
  let found: ReportPolicy | null = null;
  for (const e of entries) {
    if (e.seq >= before) break;
    const policy = obj(obj(e.data).policy);
    if (e.kind === 'policy.changed' && policy.jurisdiction === jurisdiction) {
      found = { jurisdiction, version: num(policy.version) ?? 0, builtIn: false, profileSha256: null, source: 'policy.changed' };
    }
  }
  return found ?? { jurisdiction, version: 0, builtIn: null, profileSha256: null, source: 'not recorded' };
}

function reasonOf(e: AuditEntry): string {
  const d = obj(e.data);
  if (Array.isArray(d.violations)) return d.violations.map((v) => str(obj(v).message) ?? JSON.stringify(v)).join('; ');
  return str(d.reason) ?? JSON.stringify(d);
}

function versionOf(published: AuditEntry, byRound: (kind: string) => AuditEntry[], nodes: Map<string, ReportNode>, entries: AuditEntry[]): ReportVersion {
  const d = obj(published.data);
  const round = published.round ?? 0;
  const started = byRound('round.started').find((e) => e.round === round);
  const mechanism = obj(obj(started?.data).mechanism);
  const updates = byRound('update.received').filter((e) => e.round === round);
  const charge = byRound('privacy.charged').find((e) => e.round === round);
  const completed = byRound('round.completed').find((e) => e.round === round);
  const contributorIds = Array.isArray(d.nodes) ? d.nodes.filter((x): x is string => typeof x === 'string') : [];
  const contributors = contributorIds.map((nodeId): ReportContributor => {
    const node = nodes.get(nodeId) ?? { nodeId, name: null, region: null, jurisdiction: null, keyFingerprint: null, enrolledAt: null };
    const update = obj(updates.find((u) => obj(u.data).nodeId === nodeId)?.data);
    const spend = obj(update.dpSgd);
    return {
      ...node,
      policy: policyFor(node.jurisdiction, started, entries),
      dpSgd: update.dpSgd ? { epsilonRound: num(spend.epsilonRound) ?? 0, epsilonTotal: num(spend.epsilonTotal) ?? 0, delta: num(spend.delta) ?? 0, accountant: str(spend.accountant) ?? '?', noiseMultiplier: num(spend.noiseMultiplier) ?? 0, samplingRate: num(spend.samplingRate) ?? 0, steps: num(spend.steps) ?? 0 } : null,
      updateSha256: str(update.sha256),
      clipped: typeof update.clipped === 'boolean' ? update.clipped : null,
    };
  });
  const c = obj(charge?.data);
  return {
    version: num(d.modelVersion) ?? round,
    round,
    publishedAt: published.at,
    modelSha256: str(d.modelSha256) ?? '?',
    signerFingerprint: str(d.signerFingerprint),
    bytes: num(d.bytes),
    strategy: str(mechanism.strategy),
    privacy: mechanism.privacy ?? null,
    clientLevel: charge ? { accountant: str(c.accountant) ?? '?', delta: num(c.delta) ?? 0, noiseMultiplier: num(c.noiseMultiplier) ?? 0, samplingRate: num(c.samplingRate) ?? 0, epsilonRound: num(c.epsilonRound) ?? 0, epsilonTotal: num(c.epsilonTotal) ?? 0 } : null,
    contributors,
    failures: Array.isArray(d.failures) ? d.failures : [],
    validation: completed ? { auc: num(obj(completed.data).validationAuc), metrics: obj(completed.data).validationMetrics ?? null } : null,
  };
}

/** The report for one study (all versions, or only those in `versions`). */
export function buildAuditReport(entries: AuditEntry[], options: { studyId: string; versions?: number[] }): AuditReport {
  const { studyId } = options;
  const mine = entries.filter((e) => e.studyId === studyId);
  const nodes = nodesOf(entries);
  const byKind = new Map<string, AuditEntry[]>();
  for (const e of mine) byKind.set(e.kind, [...(byKind.get(e.kind) ?? []), e]);
  const byRound = (kind: string) => byKind.get(kind) ?? [];
  const created = byRound('study.created')[0];
  const config = obj(obj(created?.data).config);
  const stopped = byRound('study.stopped').at(-1);
  const completed = byRound('study.completed').at(-1);
  let versions = byRound('aggregate.published').map((e) => versionOf(e, byRound, nodes, entries));
  const wanted = options.versions;
  const missingVersions = wanted ? wanted.filter((v) => !versions.some((x) => x.version === v)) : [];
  if (wanted) versions = versions.filter((v) => wanted.includes(v.version));
  const refusals = ['round.refused', 'round.failed', 'study.stopped']
    .flatMap((kind) => byRound(kind))
    .sort((a, b) => a.seq - b.seq)
    .map((e) => ({ round: e.round, at: e.at, kind: e.kind, reason: reasonOf(e) }));
  return {
    studyId,
    createdAt: created?.at ?? null,
    task: str(obj(config.task).kind),
    model: str(obj(config.model).kind) ?? str(config.model),
    state: stopped ? 'stopped' : completed ? 'completed' : created ? 'running' : 'unknown',
    stopReason: stopped ? reasonOf(stopped) : null,
    entriesRead: entries.length,
    lastSeq: entries.at(-1)?.seq ?? null,
    versions,
    refusals,
    excludedEvaluations: byRound('evaluation.excluded').map((e) => ({ round: e.round, nodeId: str(obj(e.data).nodeId) ?? '?', reason: str(obj(e.data).reason) ?? '?' })),
    missingVersions,
    initialModelSha256: str(obj(created?.data).initialModelSha256),
    initializedFrom: initSourceOf(obj(obj(created?.data).initializedFrom)),
  };
}

/** study.created's initializedFrom, read strictly: a lineage claim is all there or not shown. */
function initSourceOf(d: Record<string, unknown>): AuditReport['initializedFrom'] {
  const study = str(d.study);
  const version = num(d.version);
  const sha256 = str(d.sha256);
  return study !== null && version !== null && sha256 !== null ? { study, version, sha256 } : null;
}

/** "initialized from study X version V (sha256 ...)", or the seeded model's hash. */
export function initialModelSummary(r: Pick<AuditReport, 'initializedFrom' | 'initialModelSha256'>): string {
  return r.initializedFrom ? describeInitFrom(r.initializedFrom) : `seeded${r.initialModelSha256 ? ` (sha256 ${r.initialModelSha256})` : ''}`;
}

const fmtDelta = (d: number) => (d > 0 && d < 1e-3 ? d.toExponential() : String(d));

/** One sentence for the privacy of a version: what was charged, by which mechanism, for whom. */
export function privacySummary(v: ReportVersion): string {
  const parts: string[] = [];
  if (v.clientLevel) {
    const c = v.clientLevel;
    parts.push(`client-level (central DP, each partner's whole dataset): epsilon ${c.epsilonRound.toFixed(4)} this round, ${c.epsilonTotal.toFixed(4)} in total at delta ${fmtDelta(c.delta)} (${c.accountant}, noise multiplier ${c.noiseMultiplier.toFixed(3)}, node sampling q ${c.samplingRate})`);
  }
  const spends = v.contributors.filter((c) => c.dpSgd);
  if (spends.length) {
    const max = Math.max(...spends.map((c) => c.dpSgd!.epsilonTotal));
    const s = spends[0].dpSgd!;
    parts.push(`record-level (DP-SGD on each node, one customer's rows): up to epsilon ${max.toFixed(4)} per node so far at delta ${fmtDelta(s.delta)} (${s.accountant}, noise multiplier ${s.noiseMultiplier.toFixed(3)}, q ${s.samplingRate}, ${s.steps} steps this round)`);
  }
  return parts.length ? parts.join('; ') : 'no differential privacy: the model and the released statistics are exact';
}

const fmtPolicy = (p: ReportPolicy | null) =>
  p === null ? 'no jurisdiction on record' : p.source === 'not recorded' ? `${p.jurisdiction}: version not recorded` : `${p.jurisdiction} v${p.version}${p.builtIn ? ' (built-in)' : ''}${p.source === 'policy.changed' ? ' (from the last policy change)' : ''}`;

/**
 * Text from the log inside Markdown: line breaks folded and the characters that would open a table
 * cell, a heading, emphasis or a link escaped, so a node name or stop reason cannot forge a section
 * or a row of the report.
 */
const md = (s: string) => s.replace(/\r\n|\r|\n/g, ' ').replace(/([\\`*_[\]|<>#])/g, '\\$1');
/** Text inside a code span: no backtick, no line break. */
const code = (s: string) => s.replace(/\r\n|\r|\n/g, ' ').replace(/`/g, "'");

/** The report as Markdown (what `fedmark audit report --format md` prints). */
export function renderAuditReportMarkdown(r: AuditReport, header: { verification: string }): string {
  const out: string[] = [];
  out.push(`# Audit report: study ${md(r.studyId)}`, '');
  out.push(`- Verification: ${header.verification}`);
  out.push(`- Study: ${md(r.task ?? '?')} task, model ${md(r.model ?? '?')}, created ${md(r.createdAt ?? '(not in this export)')}; state ${r.state}${r.stopReason ? `: ${md(r.stopReason)}` : ''}`);
  out.push(`- Round-0 model: ${md(initialModelSummary(r))}`);
  out.push(`- Log: ${r.entriesRead} entries read, up to seq ${r.lastSeq ?? '-'}; ${r.versions.length} model version(s) reported`, '');
  if (r.missingVersions.length) out.push(`**Not in this export:** version(s) ${r.missingVersions.join(', ')}`, '');
  for (const v of r.versions) {
    out.push(`## Model version ${v.version} (round ${v.round}, published ${md(v.publishedAt)})`, '');
    out.push(`- Model sha256: \`${code(v.modelSha256)}\`${v.bytes !== null ? ` (${v.bytes} bytes)` : ''}`);
    out.push(`- Signed by coordinator key: \`${code(v.signerFingerprint ?? '(not recorded)')}\``);
    out.push(`- Strategy: ${md(v.strategy ?? '?')}`);
    out.push(`- Privacy: ${md(privacySummary(v))}`);
    if (v.validation) out.push(`- Validation: ${v.validation.auc !== null ? `AUC ${v.validation.auc.toFixed(4)}` : 'no AUC'}${v.validation.metrics ? ` ${md(JSON.stringify(v.validation.metrics))}` : ''}`);
    out.push('', '| node | name | region | jurisdiction | policy in force | DP-SGD epsilon (total) | update sha256 |', '|---|---|---|---|---|---|---|');
    for (const c of v.contributors) {
      out.push(`| \`${code(c.nodeId)}\` | ${md(c.name ?? '?')} | ${md(c.region ?? '?')} | ${md(c.jurisdiction ?? '-')} | ${md(fmtPolicy(c.policy))} | ${c.dpSgd ? c.dpSgd.epsilonTotal.toFixed(4) : '-'} | \`${code((c.updateSha256 ?? '?').slice(0, 16))}\` |`);
    }
    if (v.failures.length) out.push('', `Failures this round: ${md(v.failures.map((f) => JSON.stringify(f)).join('; '))}`);
    out.push('');
  }
  out.push('## Refused, failed or stopped', '');
  if (r.refusals.length === 0) out.push('None.');
  for (const x of r.refusals) out.push(`- ${md(x.at)} round ${x.round ?? '-'} **${md(x.kind)}**: ${md(x.reason)}`);
  if (r.excludedEvaluations.length) {
    out.push('', '## Evaluations excluded', '');
    for (const x of r.excludedEvaluations) out.push(`- round ${x.round ?? '-'} node \`${code(x.nodeId)}\`: ${md(x.reason)}`);
  }
  out.push('');
  return out.join('\n');
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** The same report as a standalone HTML page (no script, no external resource: it is printed and archived). */
export function renderAuditReportHtml(r: AuditReport, header: { verification: string }): string {
  const rows = (v: ReportVersion) =>
    v.contributors
      .map((c) => `<tr><td><code>${esc(c.nodeId)}</code></td><td>${esc(c.name ?? '?')}</td><td>${esc(c.region ?? '?')}</td><td>${esc(c.jurisdiction ?? '-')}</td><td>${esc(fmtPolicy(c.policy))}</td><td>${c.dpSgd ? c.dpSgd.epsilonTotal.toFixed(4) : '-'}</td><td><code>${esc((c.updateSha256 ?? '?').slice(0, 16))}</code></td></tr>`)
      .join('\n');
  const versions = r.versions
    .map(
      (v) => `<section><h2>Model version ${v.version} (round ${v.round}, published ${esc(v.publishedAt)})</h2>
<ul><li>Model sha256: <code>${esc(v.modelSha256)}</code></li><li>Signed by coordinator key: <code>${esc(v.signerFingerprint ?? '(not recorded)')}</code></li>
<li>Strategy: ${esc(v.strategy ?? '?')}</li><li>Privacy: ${esc(privacySummary(v))}</li>${v.validation?.auc != null ? `<li>Validation AUC ${v.validation.auc.toFixed(4)}</li>` : ''}</ul>
<table><thead><tr><th>node</th><th>name</th><th>region</th><th>jurisdiction</th><th>policy in force</th><th>DP-SGD epsilon (total)</th><th>update sha256</th></tr></thead><tbody>
${rows(v)}
</tbody></table></section>`,
    )
    .join('\n');
  const refusals = r.refusals.length ? `<ul>${r.refusals.map((x) => `<li>${esc(x.at)} round ${x.round ?? '-'} <strong>${esc(x.kind)}</strong>: ${esc(x.reason)}</li>`).join('')}</ul>` : '<p>None.</p>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Audit report: study ${esc(r.studyId)}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse;width:100%}th,td{border:1px solid #bbb;padding:.3rem .5rem;text-align:left}code{font-size:12px}</style></head>
<body><h1>Audit report: study ${esc(r.studyId)}</h1>
<ul><li>Verification: ${esc(header.verification)}</li><li>Study: ${esc(r.task ?? '?')} task, model ${esc(r.model ?? '?')}, created ${esc(r.createdAt ?? '(not in this export)')}; state ${esc(r.state)}${r.stopReason ? `: ${esc(r.stopReason)}` : ''}</li>
<li>Round-0 model: ${esc(initialModelSummary(r))}</li>
<li>Log: ${r.entriesRead} entries read, up to seq ${r.lastSeq ?? '-'}</li></ul>
${r.missingVersions.length ? `<p><strong>Not in this export:</strong> version(s) ${r.missingVersions.join(', ')}</p>` : ''}
${versions}
<h2>Refused, failed or stopped</h2>${refusals}
</body></html>
`;
}
