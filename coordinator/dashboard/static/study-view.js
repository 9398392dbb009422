// One study: rounds timeline, metric chart, participants, privacy spend, refusals, audit chain.
// Every panel shows what the API returned for this token, or the API's refusal as it gave it.

import { get, settle } from './api.js';
import { studyPath } from './study-id.js';
import { lineChart } from './charts.js';
import { $, el, fillRows, fixed, numberCell, say, seconds, when } from './dom.js';

// Closed rounds never change: their details are fetched once per tab.
const closedRounds = new Map();
const REFUSAL_STATES = new Set(['data-error', 'privacy-ceiling', 'policy-refused', 'model-rejected', 'training-failed', 'withdrawn', 'revoked']);

/** The metric the study reports: AUC for a binary task, R² for a regression. */
function metricOf(status) {
  if (status.config.task?.kind === 'regression') return { key: 'r2', label: 'validation R\u00b2', pick: (r) => r.validationMetrics?.r2 ?? null };
  return { key: 'auc', label: 'validation AUC', pick: (r) => r.validationMetrics?.auc ?? r.validationAuc ?? null };
}
const isNoised = (r) => r.validationMetrics?.noised === 1;

/** The rounds' details (for the refusals they record), closed ones from the cache. */
async function roundDetails(studyId, rounds, signal) {
  return Promise.all(rounds.map(async (r) => {
    const key = `${studyId}/${r.round}`;
    if (closedRounds.has(key)) return closedRounds.get(key);
    const detail = await settle(get(studyPath(studyId, `/rounds/${r.round}`), { signal }));
    if (detail.value && (detail.value.phase === 'completed' || detail.value.phase === 'failed')) closedRounds.set(key, detail);
    return detail;
  }));
}

/** Forgets cached round details: another token may see other parts of them. */
export const forgetRounds = () => closedRounds.clear();

/** Empties the study view, so nothing of the last study (or the last token's view of it) shows while the next loads. */
export function clearStudy() {
  $('study-title').textContent = 'Loading\u2026';
  delete $('study-title').dataset.state;
  for (const id of ['study-summary', 'study-error', 'stop-reason', 'metric-note', 'privacy-summary', 'participants-note', 'refresh-note']) say(id, '');
  for (const id of ['rounds', 'privacy', 'participants']) fillRows(id, []);
  for (const id of ['metric-chart', 'privacy-chart']) lineChart(id, [], []);
  for (const id of ['audit', 'refusals']) $(id).replaceChildren();
  delete $('audit').dataset.state;
  delete $('privacy-summary').dataset.spent;
}

/** Loads everything the page shows; `wait` long-polls the status for the next change first. */
export async function loadStudy(studyId, { signal, seen } = {}) {
  const query = seen === undefined ? '' : `?wait=20&seen=${seen}`;
  const status = await get(studyPath(studyId, query), { signal });
  const [privacy, audit, details] = await Promise.all([
    settle(get(studyPath(studyId, '/privacy'), { signal })),
    settle(get('/v1/dashboard/audit', { signal })),
    roundDetails(studyId, status.rounds, signal),
  ]);
  return { status, privacy, audit, details };
}

/** Renders a loaded study into the page. */
export function renderStudy({ status, privacy, audit, details }) {
  const metric = metricOf(status);
  $('study-title').textContent = status.name;
  $('study-title').dataset.state = status.state;
  const total = status.config.rounds;
  say('study-summary', `${status.state} \u00b7 round ${status.currentRound} of ${total} \u00b7 ${status.config.task?.kind ?? 'binary'} \u00b7 ${status.config.model.kind} \u00b7 strategy ${status.config.strategy?.name ?? 'fedavg'} \u00b7 ${status.nodes.length} node(s) visible`);
  $('study-summary').dataset.currentRound = String(status.currentRound);
  renderRounds(status, metric);
  renderPrivacy(privacy);
  renderAudit(audit);
  renderParticipants(status, privacy);
  const stop = status.stopReason ?? privacy.value?.stopReason;
  renderRefusals(status, details, stop);
  say('stop-reason', stop ? `Stopped: ${stop}` : '');
}

function renderRounds(status, metric) {
  $('metric-title').textContent = `${metric.label[0].toUpperCase()}${metric.label.slice(1)} over rounds`;
  $('rounds-metric-head').textContent = metric.label;
  const rows = status.rounds.map((r) => el('tr', { dataset: { round: r.round, phase: r.phase } },
    el('td', { class: 'num', dataset: { field: 'round' } }, r.round),
    el('td', { dataset: { field: 'phase' } }, el('span', { class: `pill ${r.phase}` }, r.phase)),
    el('td', { class: 'num', dataset: { field: 'reported' } }, r.updatesReceived === null ? 'hidden' : r.updatesReceived),
    el('td', { class: 'num', dataset: { field: 'invited' } }, r.participants.length),
    numberCell(seconds(r.startedAt, r.closedAt), 1, 'duration'),
    el('td', { class: 'num', dataset: { field: 'metric', value: metric.pick(r) ?? '', noised: isNoised(r) ? '1' : '0' } }, `${fixed(metric.pick(r))}${isNoised(r) ? ' (noised)' : ''}`),
    el('td', { class: 'note' }, r.failureReason ?? (r.hidden ? r.hidden.reason : '')),
  ));
  fillRows('rounds', rows);
  $('rounds-empty').hidden = rows.length > 0;
  const closed = status.rounds.filter((r) => metric.pick(r) !== null);
  const xs = closed.map((r) => r.round);
  lineChart('metric-chart', xs, [
    { label: metric.label, stroke: '#1f6feb', values: closed.map(metric.pick) },
    { label: 'noised', stroke: '#d9480f', pointsOnly: true, values: closed.map((r) => (isNoised(r) ? metric.pick(r) : null)) },
  ], { yLabel: metric.label });
  const noised = closed.filter(isNoised).length;
  say('metric-note', closed.length === 0 ? 'No round has been evaluated yet.' : noised ? `${noised} of ${closed.length} evaluations are noised (DP): circled points.` : 'Evaluations are exact (no DP on evaluations).');
}

function renderPrivacy(privacy) {
  if (privacy.refused) {
    say('privacy-summary', `Not available to this token: ${privacy.refused.message}`);
    fillRows('privacy', []);
    lineChart('privacy-chart', [], []);
    return;
  }
  const p = privacy.value;
  const bound = p.bound?.clientLevel ?? p.bound?.recordLevel;
  const budget = p.budgetEpsilon === null ? 'no budget set' : `budget ${fixed(p.budgetEpsilon, 3)}`;
  const summary = p.dp ? `\u03b5 spent ${fixed(p.spentEpsilon, 3)} (${budget}, \u03b4 ${p.delta}, ${p.accountant} accountant)${bound ? `. Bound against you: ${bound.epsilon === null ? 'none' : `\u03b5 ${fixed(bound.epsilon, 3)}`} \u2014 ${bound.reason}` : ''}` : 'This study runs no differential privacy: no \u03b5 is spent or claimed.';
  say('privacy-summary', summary);
  $('privacy-summary').dataset.spent = String(p.spentEpsilon);
  fillRows('privacy', p.rounds.map((r) => el('tr', { dataset: { round: r.round } }, el('td', { class: 'num' }, r.round), numberCell(r.epsilonRound, 3, 'epsilonRound'), numberCell(r.epsilonTotal, 3, 'epsilonTotal'))));
  const series = [{ label: '\u03b5 total', stroke: '#8250df', values: p.rounds.map((r) => r.epsilonTotal) }];
  if (p.budgetEpsilon !== null) series.push({ label: 'budget', stroke: '#cf222e', values: p.rounds.map(() => p.budgetEpsilon) });
  lineChart('privacy-chart', p.rounds.map((r) => r.round), series, { yLabel: '\u03b5' });
}

function renderAudit(audit) {
  const facts = $('audit');
  if (audit.refused) {
    facts.replaceChildren(el('dt', {}, 'Status'), el('dd', { dataset: { field: 'status' } }, `Not available to this token: ${audit.refused.message}`));
    facts.dataset.state = 'refused';
    return;
  }
  const a = audit.value;
  const c = a.lastCheckpoint;
  facts.dataset.state = a.ok ? 'verified' : 'broken';
  facts.replaceChildren(
    el('dt', {}, 'Chain'), el('dd', { class: a.ok ? 'ok' : 'bad', dataset: { field: 'status' } }, a.ok ? 'verified' : `BROKEN (${a.problem}): ${a.message}`),
    el('dt', {}, 'Entries'), el('dd', { dataset: { field: 'entries' } }, a.entries),
    el('dt', {}, 'Signed checkpoints'), el('dd', { dataset: { field: 'checkpoints' } }, a.checkpoints),
    el('dt', {}, 'Last checkpoint'), el('dd', { dataset: { field: 'lastCheckpoint', seq: c?.seq ?? '' } }, c ? `#${c.number ?? '?'} at entry ${c.seq}, ${when(c.at)}` : 'none yet'),
    el('dt', {}, 'Signed by'), el('dd', { class: 'mono' }, c ? c.coordinatorFingerprint : '\u2014'),
    el('dt', {}, 'Not yet sealed'), el('dd', {}, a.uncheckpointedEntries === null ? '\u2014' : `${a.uncheckpointedEntries} entr${a.uncheckpointedEntries === 1 ? 'y' : 'ies'}`),
  );
}

function renderParticipants(status, privacy) {
  const epsilonOf = new Map((privacy.value?.nodes ?? []).map((n) => [n.nodeId, n.clientLevel?.epsilon]));
  fillRows('participants', status.nodes.map((n) => el('tr', { dataset: { node: n.id, region: n.region } },
    el('td', {}, n.name),
    el('td', {}, n.region),
    el('td', {}, el('span', { class: `pill ${REFUSAL_STATES.has(n.state) ? 'failed' : 'ok'}` }, n.state)),
    el('td', { class: 'num' }, status.rounds.filter((r) => r.participants.includes(n.id)).length),
    epsilonOf.has(n.id) ? numberCell(epsilonOf.get(n.id), 3, 'epsilon') : el('td', { class: 'num muted' }, '\u2014'),
    el('td', { class: 'note' }, n.message ?? ''),
  )));
  const perNode = privacy.value?.nodes?.length ? 'per-node \u03b5 from the privacy report' : 'no per-node privacy figures for this token';
  say('participants-note', `${status.nodes.length} node(s) as the API shows them to this token; ${perNode}.`);
}

function renderRefusals(status, details, stop) {
  const name = new Map(status.nodes.map((n) => [n.id, `${n.name} (${n.region})`]));
  const items = stop ? [`study stopped: ${stop}`] : [];
  for (const n of status.nodes) if (REFUSAL_STATES.has(n.state)) items.push(`${name.get(n.id)}: ${n.state}${n.message ? ` \u2014 ${n.message}` : ''}`);
  for (const r of status.rounds) if (r.phase === 'failed') items.push(`round ${r.round} failed: ${r.failureReason ?? 'no reason recorded'}`);
  for (const d of details) {
    for (const f of d.value?.mechanism?.failures ?? []) items.push(`round ${d.value.round}: ${name.get(f.nodeId) ?? f.nodeId} did not contribute (${f.reason ?? f.state})`);
  }
  const refusedReads = details.filter((d) => d.refused).length;
  if (refusedReads) items.push(`${refusedReads} round record(s) not available to this token`);
  $('refusals').replaceChildren(...(items.length ? items.map((t) => el('li', {}, t)) : [el('li', { class: 'muted' }, 'None: every invited node contributed, and nothing was refused.')]));
}
