import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { describeInitFrom, Id, StudyConfig, type InitFrom, type RoundSummary, type StudyStatus } from '../protocols/messages.ts';
import { addCoordinatorOptions, coordinatorClient, CoordinatorRefusal, type CoordinatorClient, type CoordinatorOptions } from './api-client.ts';
import { registerStudyInit } from './study-init.ts';

/**
 * `fedmark study init|create|ls|status|watch|stop` (issue 12): an operator's studies from the
 * command line, through the coordinator's API (cli/api-client.ts). `init` is in study-init.ts.
 *
 * Exit codes: 0 done; 1 an error (a refusal names the coordinator's code and field); 2 a study
 * file that does not parse or validate (naming the file, line and column, and the field);
 * 3 `watch` saw the study stop early (the reason is printed), or `create --dry-run` found rules
 * the study would break.
 */
export function registerStudyCommands(program: Command): void {
  const study = program.command('study').description('create, list, follow and stop studies on a coordinator');
  registerStudyInit(study);
  registerCreate(study);
  registerList(study);
  registerStatus(study);
  registerWatch(study);
  registerStop(study);
}

/** Exit code of a study file that does not parse or validate. */
const EXIT_BAD_FILE = 2;
/** Exit code of a study that stopped early (watch) or would be refused (create --dry-run). */
const EXIT_STOPPED = 3;

/** A study file that does not parse or validate: the message names file:line:column and the field. */
export class StudyFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StudyFileError';
  }
}

const print = (text: string): void => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
const printJson = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);

/** Runs an action; a bad study file exits 2 with its message, anything else goes to main's handler (exit 1). */
const action =
  <A extends unknown[]>(fn: (...args: A) => Promise<number | void>) =>
  async (...args: A) => {
    try {
      const code = await fn(...args);
      if (code) process.exitCode = code;
    } catch (err) {
      if (!(err instanceof StudyFileError)) throw err;
      process.stderr.write(`fedmark: ${err.message}\n`);
      process.exitCode = EXIT_BAD_FILE;
    }
  };

// ---- study files ------------------------------------------------------------------------------

/** A study file read: its raw value (sent as is: the coordinator parses it again) and how to find a field's line. */
export interface StudyFile {
  path: string;
  raw: unknown;
  /** "file:line:column" of the value at `path` (or of its nearest parent that exists). */
  where(path: ReadonlyArray<string | number>): string;
}

/**
 * Reads a study file, YAML or JSON (JSON is YAML), and validates it with the API's schema
 * (StudyConfig). A syntax error names the line and column; a schema error names the field path
 * and the line of the value at fault.
 *
 * @example
 *   const file = readStudyFile('study.yaml'); // StudyFileError "study.yaml:12:18: rounds: Too small: ..."
 */
export function readStudyFile(path: string): StudyFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new StudyFileError(`--config ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = syntax.linePos?.[0];
    throw new StudyFileError(`${path}${pos ? `:${pos.line}:${pos.col}` : ''}: ${syntax.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  const where = (fieldPath: ReadonlyArray<string | number>) => `${path}:${locate(doc, lineCounter, fieldPath)}`;
  const raw = doc.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new StudyFileError(`${path}:1:1: a study file is a mapping of fields (name, model, features, rounds, ...)`);
  const parsed = StudyConfig.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.path.map(String).join('.') || '(the study)';
    throw new StudyFileError(`${where(issue.path as Array<string | number>)}: ${field}: ${issue.message}`);
  }
  return { path, raw, where };
}

/** line:column of the value at `path`, or of the nearest parent that exists (a missing field: its mapping). */
function locate(doc: Document, lineCounter: LineCounter, path: ReadonlyArray<string | number>): string {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (node && range && (n === 0 || isMap(node) || isSeq(node) || typeof node === 'object')) {
      const { line, col } = lineCounter.linePos(range[0]);
      return `${line}:${col}`;
    }
  }
  return '1:1';
}

// ---- create -----------------------------------------------------------------------------------

function registerCreate(study: Command) {
  addCoordinatorOptions(
    study
      .command('create')
      .description('create a study from a YAML or JSON file (validated here first); --dry-run prints the plan (policies of the planned jurisdictions, privacy) and creates nothing')
      .requiredOption('--config <file>', 'the study file, YAML or JSON (fields of the API\'s study config; `fedmark study init` writes one)')
      .option('--dry-run', 'print what creation would do (POST /v1/studies/plan) and create nothing; exits 3 when the study breaks a planned jurisdiction\'s policy')
      .option('--init-from <STUDY[:VERSION]>', "warm start (quarterly recalibration): round 0 is that study's global model, its latest version unless :VERSION is given; the same task kind, model and features are required; replaces initFrom in the file", parseInitFrom),
  ).action(
    action(async (opts: CoordinatorOptions & { config: string; dryRun?: boolean; initFrom?: InitFrom }) => {
      const file = withInitFrom(readStudyFile(opts.config), opts.initFrom);
      const api = coordinatorClient(opts);
      try {
        if (opts.dryRun) {
          const plan = await api.post<Plan>('/v1/studies/plan', file.raw);
          if (opts.json) printJson(plan);
          else print(formatPlan(plan, file));
          return plan.wouldCreate ? 0 : EXIT_STOPPED;
        }
        const created = await api.post<{ id: string; modelSha256: string; initializedFrom?: Required<InitFrom>; warnings?: string[] }>('/v1/studies', file.raw);
        if (opts.json) printJson(created);
        else print([`created study ${created.id} from ${file.path} (round-0 model ${created.modelSha256.slice(0, 12)}${created.initializedFrom ? `, ${describeInitFrom(created.initializedFrom)}` : ''})`, ...(created.warnings ?? []).map((w) => `warning: ${w}`)].join('\n'));
      } catch (err) {
        // A refusal of the flag's source names the flag, not a line the file does not have.
        if (opts.initFrom && err instanceof CoordinatorRefusal && err.field?.startsWith('body.initFrom')) throw new CoordinatorRefusal(err.status, err.code, `--init-from ${opts.initFrom.study}${opts.initFrom.version === undefined ? '' : `:${opts.initFrom.version}`}: ${err.message}`, err.field);
        throw withFileLine(err, file);
      }
    }),
  );
}

/**
 * `--init-from STUDY[:VERSION]`: a study id, and a version after the last ':' when that part is
 * digits (ids may contain ':' themselves: `a:b` is study `a`, version... only if `b` is digits).
 */
export function parseInitFrom(value: string): InitFrom {
  const m = /^(.*):(\d+)$/.exec(value);
  const study = m ? m[1] : value;
  if (!Id.safeParse(study).success) throw new InvalidArgumentError(`"${study}" is not a study id (letters, digits and . _ : ~ -); expected STUDY or STUDY:VERSION`);
  const version = m ? Number(m[2]) : undefined;
  if (version !== undefined && !Number.isSafeInteger(version)) throw new InvalidArgumentError(`version ${m![2]} is not an integer`);
  return { study, ...(version === undefined ? {} : { version }) };
}

/** The study file with --init-from in place of its initFrom field (the file's other fields as written). */
function withInitFrom(file: StudyFile, initFrom: InitFrom | undefined): StudyFile {
  if (!initFrom) return file;
  return { ...file, raw: { ...(file.raw as Record<string, unknown>), initFrom } };
}

/** A coordinator refusal naming a body field: the same message with the file's line for that field. */
function withFileLine(err: unknown, file: StudyFile): unknown {
  if (!(err instanceof CoordinatorRefusal) || !err.field?.startsWith('body')) return err;
  const path = err.field.split('.').slice(1).map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  return new CoordinatorRefusal(err.status, err.code, `${file.where(path)}: ${err.field.replace(/^body\.?/, '') || '(the study)'}: ${err.message}`, err.field);
}

interface Violation {
  jurisdiction: string;
  version: number;
  rule: string;
  message: string;
  field: string;
}
interface Plan {
  name: string;
  task: string;
  model: string;
  strategy: string;
  rounds: number;
  minNodesPerRound: number;
  jurisdictions: Array<{ jurisdiction: string; policy: { version: number; description: string } | null; violations: Violation[] }>;
  violations: Violation[];
  privacy: {
    dp: boolean;
    mechanisms: string[];
    accountant: string | null;
    delta: number | null;
    central: { noiseMultiplier: number; accountedNoiseMultiplier: number; nodeSamplingRate: number; epsilonPerRound: number | null; epsilonTotal: number | null; budgetEpsilon: number | null; roundsWithinBudget: number | null } | null;
    dpSgd: { noiseMultiplier: number; samplingRate: number; stepsPerRound: number; epsilonPerRound: number | null; epsilonTotal: number | null } | null;
    evaluation: { bins: number; noiseMultiplier: number; epsilonPerEvaluation: number | null } | null;
    noiseSwamp: { noiseNorm: number; signalMax: number; expectedNodes: number } | null;
  };
  warnings: string[];
  wouldCreate: boolean;
  /** The round-0 model creation would publish: the seeded one, or a warm start's source (initFrom). */
  initialModel?: { from: 'seed'; seed: number; sha256: string } | { from: 'study'; study: string; version: number; sha256: string };
}

const eps = (e: number | null) => (e === null ? 'unbounded' : e.toFixed(4));

/** The plan as an operator reads it: verdict, each jurisdiction's profile and broken rules, the privacy plan, warnings. */
function formatPlan(plan: Plan, file: StudyFile): string {
  const out = [
    `plan for study "${plan.name}" (${plan.task}, ${plan.model}, ${plan.strategy}, ${plan.rounds} rounds, at least ${plan.minNodesPerRound} nodes a round): ${plan.wouldCreate ? 'would be created' : `would be REFUSED (${plan.violations.length} policy rule${plan.violations.length === 1 ? '' : 's'} broken)`}; nothing was created`,
  ];
  out.push(plan.jurisdictions.length ? 'planned jurisdictions:' : 'planned jurisdictions: none (add `jurisdictions: [EU-GDPR, ...]` to check the study against their policies now)');
  for (const j of plan.jurisdictions) {
    const profile = j.policy ? `${j.jurisdiction} v${j.policy.version}${j.policy.description ? ` (${j.policy.description})` : ''}` : `${j.jurisdiction} (no profile on this coordinator)`;
    out.push(`  ${profile}: ${j.violations.length ? `breaks ${j.violations.length} rule${j.violations.length === 1 ? '' : 's'}` : 'ok'}`);
    for (const v of j.violations) out.push(`    - rule ${v.rule} (${file.where(v.field.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)))} ${v.field}): ${v.message}`);
  }
  const p = plan.privacy;
  if (!p.dp) out.push('privacy: no differential privacy (every release is exact)');
  else {
    out.push(`privacy: ${p.mechanisms.join(' + ')}; ${p.accountant} accountant, delta ${p.delta}`);
    const c = p.central;
    if (c) out.push(`  central: noise multiplier ${c.noiseMultiplier} (charged ${c.accountedNoiseMultiplier.toFixed(4)}), node sampling ${c.nodeSamplingRate}; epsilon per round ${eps(c.epsilonPerRound)}, total over ${plan.rounds} rounds ${eps(c.epsilonTotal)}${c.budgetEpsilon !== null ? `; budget ${c.budgetEpsilon}${c.roundsWithinBudget !== null ? ` pays for ${c.roundsWithinBudget} of ${plan.rounds} rounds` : ''}` : '; no budget'}`);
    const d = p.dpSgd;
    if (d) out.push(`  DP-SGD on each node: noise multiplier ${d.noiseMultiplier}, sampling ${d.samplingRate}, ${d.stepsPerRound} steps a round; record-level epsilon per round ${eps(d.epsilonPerRound)}, total ${eps(d.epsilonTotal)} (training only)`);
    if (p.evaluation) out.push(`  evaluation: ${p.evaluation.bins}-bin histograms, noise multiplier ${p.evaluation.noiseMultiplier}, epsilon ${eps(p.evaluation.epsilonPerEvaluation)} per evaluation on each node's ledger`);
  }
  const m = plan.initialModel;
  if (m) out.push(m.from === 'study' ? `round-0 model: ${describeInitFrom(m)}` : `round-0 model: seeded (seed ${m.seed}, sha256 ${m.sha256})`);
  for (const w of plan.warnings) out.push(`warning: ${w}`);
  return out.join('\n');
}

// ---- ls, status --------------------------------------------------------------------------------

interface StudyListEntry {
  id: string;
  name: string;
  state: string;
  task: string;
  model: string | null;
  roundsDone: number;
  roundsPlanned: number | null;
  createdAt: string;
  stopReason: string | null;
}

/** Rows as a left-aligned text table. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

function registerList(study: Command) {
  addCoordinatorOptions(study.command('ls').description('list the studies: id, name, kind/model, state, rounds done/planned, created (and why a stopped study ended)')).action(
    action(async (opts: CoordinatorOptions) => {
      const { studies } = await coordinatorClient(opts).get<{ studies: StudyListEntry[] }>('/v1/studies');
      if (opts.json) return printJson(studies);
      if (studies.length === 0) return print('no studies');
      const rows = studies.map((s) => [s.id, s.name, `${s.task}/${s.model ?? '?'}`, s.state, `${s.roundsDone}/${s.roundsPlanned ?? '?'}`, s.createdAt.replace('T', ' ').slice(0, 19), s.stopReason ?? '']);
      print(table(['ID', 'NAME', 'KIND/MODEL', 'STATE', 'ROUNDS', 'CREATED', 'STOP REASON'], rows));
    }),
  );
}

interface PrivacyBody {
  dp: boolean;
  accountant: string | null;
  delta: number | null;
  budgetEpsilon: number | null;
  spentEpsilon: number;
}

/** What `status` shows (and prints with --json). */
export interface StudyStatusSummary {
  id: string;
  name: string;
  state: StudyStatus['state'];
  stopReason: string | null;
  stoppedBy: string | null;
  stoppedAt: string | null;
  currentRound: number;
  roundsDone: number;
  roundsPlanned: number;
  roundsFailed: number;
  /** The open round's phase, or null. */
  openPhase: string | null;
  nodes: number;
  /** Nodes invited to the latest round. */
  participants: number;
  lastMetrics: { round: number; meanLoss: number | null; validationAuc: number | null; metrics: Record<string, number | null> | null } | null;
  privacy: { dp: boolean; accountant: string | null; delta: number | null; spentEpsilon: number; budgetEpsilon: number | null } | null;
  /** A warm start's source (initFrom: study, version, weights' sha256), or null for a seeded round 0. */
  initializedFrom: InitFrom | null;
}

/** Summarizes a study's status (and its privacy report, when the token may read it). */
export function summarize(status: StudyStatus, privacy: PrivacyBody | null): StudyStatusSummary {
  const closed = status.rounds.filter((r) => r.phase === 'completed' || r.phase === 'failed');
  const lastCompleted = [...status.rounds].reverse().find((r) => r.phase === 'completed');
  const latest = status.rounds[status.rounds.length - 1];
  return {
    id: status.id,
    name: status.name,
    state: status.state,
    stopReason: status.stopReason ?? null,
    stoppedBy: status.stoppedBy ?? null,
    stoppedAt: status.stoppedAt ?? null,
    currentRound: status.currentRound,
    roundsDone: closed.length,
    roundsPlanned: status.config.rounds,
    roundsFailed: closed.filter((r) => r.phase === 'failed').length,
    openPhase: latest && (latest.phase === 'fit' || latest.phase === 'evaluate') ? latest.phase : null,
    nodes: status.nodes.length,
    participants: latest?.participants.length ?? 0,
    lastMetrics: lastCompleted ? { round: lastCompleted.round, meanLoss: lastCompleted.meanLoss, validationAuc: lastCompleted.validationAuc, metrics: lastCompleted.validationMetrics ?? null } : null,
    privacy: privacy ? { dp: privacy.dp, accountant: privacy.accountant, delta: privacy.delta, spentEpsilon: privacy.spentEpsilon, budgetEpsilon: privacy.budgetEpsilon } : null,
    initializedFrom: status.config.initFrom ?? null,
  };
}

async function fetchSummary(api: CoordinatorClient, studyId: string): Promise<StudyStatusSummary> {
  const status = await api.get<StudyStatus>(`/v1/studies/${encodeURIComponent(studyId)}`);
  // The privacy report is a separate read; a token that may not read it still gets the rest.
  const privacy = await api.get<PrivacyBody>(`/v1/studies/${encodeURIComponent(studyId)}/privacy`).catch(() => null);
  return summarize(status, privacy);
}

const num = (v: number | null | undefined, digits = 4) => (v === null || v === undefined ? '-' : v.toFixed(digits));

function formatSummary(s: StudyStatusSummary): string {
  const out = [`study ${s.id} "${s.name}": ${s.state}${s.openPhase ? ` (round ${s.currentRound} in ${s.openPhase})` : ''}`];
  if (s.state === 'stopped') out.push(`stopped${s.stoppedBy ? ` by ${s.stoppedBy}` : ''}${s.stoppedAt ? ` at ${s.stoppedAt}` : ''}: ${s.stopReason ?? '(no reason recorded)'}`);
  out.push(`rounds: ${s.roundsDone}/${s.roundsPlanned} done${s.roundsFailed ? ` (${s.roundsFailed} failed)` : ''}`);
  if (s.initializedFrom) out.push(`round-0 model: ${describeInitFrom(s.initializedFrom)}`);
  out.push(`nodes: ${s.nodes} enrolled, ${s.participants} in the latest round`);
  const m = s.lastMetrics;
  if (m) {
    const extra = Object.entries(m.metrics ?? {}).filter(([k]) => k !== 'auc' && k !== 'n').map(([k, v]) => `${k} ${num(v)}`).join(', ');
    out.push(`last metrics (round ${m.round}): mean local loss ${num(m.meanLoss)}, validation AUC ${num(m.validationAuc)}${extra ? `, ${extra}` : ''}`);
  } else out.push('last metrics: none yet');
  const p = s.privacy;
  if (p) out.push(p.dp ? `privacy spent: epsilon ${num(p.spentEpsilon)}${p.budgetEpsilon !== null ? ` of a budget of ${p.budgetEpsilon}` : ''} (delta ${p.delta}, ${p.accountant} accountant)` : 'privacy: no differential privacy');
  return out.join('\n');
}

function registerStatus(study: Command) {
  addCoordinatorOptions(
    study.command('status').description("a study's state, rounds, last metrics, participants, privacy spent, and the stop reason of a stopped study").requiredOption('--study <id>', 'study id'),
  ).action(
    action(async (opts: CoordinatorOptions & { study: string }) => {
      const summary = await fetchSummary(coordinatorClient(opts), opts.study);
      if (opts.json) printJson(summary);
      else print(formatSummary(summary));
    }),
  );
}

// ---- watch --------------------------------------------------------------------------------------

/** One round's progress as watch shows it: nodes reported of expected in its phase, and the seconds left to the fit deadline. */
export function roundProgress(r: RoundSummary, config: StudyConfig, now = Date.now()) {
  const expected = r.participants.length;
  const reported = r.updatesReceived ?? 0;
  const deadline = new Date(r.startedAt).getTime() + config.roundDeadlineSeconds * 1000;
  const secondsLeft = r.phase === 'fit' ? Math.max(0, Math.round((deadline - now) / 1000)) : null;
  return { round: r.round, phase: r.phase, reported, expected, secondsLeft };
}

function progressLine(p: ReturnType<typeof roundProgress>, total: number): string {
  const left = p.secondsLeft === null ? '' : `, ${p.secondsLeft}s to the deadline`;
  return `round ${p.round}/${total} ${p.phase}: ${p.reported}/${p.expected} nodes reported${left}`;
}

function registerWatch(study: Command) {
  addCoordinatorOptions(
    study
      .command('watch')
      .description('follow a study live (a progress bar per round on a terminal, plain lines otherwise) until it ends; exits 0 when it completes, 3 with the reason when it is stopped')
      .requiredOption('--study <id>', 'study id')
      .option('--wait <seconds>', 'longest a single long poll is held (the coordinator caps it)', '25'),
  ).action(
    action(async (opts: CoordinatorOptions & { study: string; wait: string }) => {
      const wait = Number(opts.wait);
      if (!Number.isFinite(wait) || wait <= 0 || wait > 120) throw new Error(`--wait must be a number of seconds in (0, 120], got "${opts.wait}"`);
      return watchStudy(coordinatorClient(opts), opts.study, { wait, json: Boolean(opts.json) });
    }),
  );
}

/** The live view: one cli-progress bar per round on a terminal (stderr), refreshed every second for the deadline. */
async function progressBars(total: number) {
  const { default: cliProgress } = await import('cli-progress');
  const multibar = new cliProgress.MultiBar(
    { format: 'round {round}/{total} {phase} [{bar}] {value}/{total} nodes {left}', hideCursor: true, clearOnComplete: false, stopOnComplete: false, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<number, import('cli-progress').SingleBar>();
  return {
    show(p: ReturnType<typeof roundProgress>) {
      const payload = { round: p.round, total, phase: p.phase.padEnd(8), left: p.secondsLeft === null ? '' : `${p.secondsLeft}s to the deadline` };
      let bar = bars.get(p.round);
      if (!bar) bars.set(p.round, (bar = multibar.create(Math.max(1, p.expected), p.reported, payload)));
      bar.setTotal(Math.max(1, p.expected));
      bar.update(p.reported, payload);
    },
    stop: () => multibar.stop(),
  };
}

/**
 * Follows a study with long polls (GET /v1/studies/:id?wait=S&seen=N: the coordinator answers at
 * the study's next change) until it ends; then prints the summary. 0 when it completed,
 * EXIT_STOPPED (with the reason on stderr) when it stopped.
 */
async function watchStudy(api: CoordinatorClient, studyId: string, opts: { wait: number; json: boolean }): Promise<number> {
  const path = `/v1/studies/${encodeURIComponent(studyId)}`;
  let status = await api.get<StudyStatus>(path);
  const bars = !opts.json && process.stderr.isTTY ? await progressBars(status.config.rounds) : undefined;
  const printed = new Map<number, string>();
  const show = () => {
    for (const r of status.rounds) {
      const p = roundProgress(r, status.config);
      if (bars) bars.show(p);
      else {
        // Plain lines: one per change of a round (the deadline's countdown alone is not a change).
        const key = `${p.phase} ${p.reported}/${p.expected}`;
        if (printed.get(r.round) === key) continue;
        printed.set(r.round, key);
        if (opts.json) printJson({ event: 'round', ...p, failureReason: r.failureReason, validationAuc: r.validationAuc });
        else print(progressLine(p, status.config.rounds) + (r.failureReason ? ` (${r.failureReason})` : ''));
      }
    }
  };
  const ticker = bars ? setInterval(show, 1000) : undefined;
  const done = status.rounds.filter((r) => r.phase === 'completed' || r.phase === 'failed').length;
  if (opts.json) printJson({ event: 'start', id: status.id, name: status.name, state: status.state, roundsDone: done, roundsPlanned: status.config.rounds });
  else print(`watching study ${status.id} "${status.name}": ${status.state}, ${done}/${status.config.rounds} rounds done`);
  try {
    show();
    while (status.state === 'running') {
      // Only the rounds not yet closed are asked for (?fromRound): a closed round never changes, so
      // a poll costs what changed, not every round so far; the rest are kept from earlier answers.
      const next = await api.get<StudyStatus>(`${path}?wait=${opts.wait}&seen=${status.changeCount ?? 0}&fromRound=${firstOpenRound(status.rounds)}`);
      status = { ...next, rounds: mergeRounds(status.rounds, next.rounds) };
      show();
    }
  } finally {
    if (ticker) clearInterval(ticker);
    bars?.stop();
  }
  const summary = await fetchSummary(api, studyId);
  if (opts.json) printJson({ event: 'end', ...summary });
  else print(formatSummary(summary));
  if (summary.state !== 'stopped') return 0;
  process.stderr.write(`fedmark: study ${studyId} stopped: ${summary.stopReason ?? '(no reason recorded)'}\n`);
  return EXIT_STOPPED;
}

/** The first round not closed (completed or failed), or the one after the last: where a follower's next poll starts. */
export function firstOpenRound(rounds: ReadonlyArray<{ round: number; phase: string }>): number {
  const open = rounds.find((r) => r.phase !== 'completed' && r.phase !== 'failed');
  return open?.round ?? (rounds.length > 0 ? rounds[rounds.length - 1].round + 1 : 0);
}

/** The rounds kept, with those of a later answer (from some round on) taking their place, in round order. */
export function mergeRounds<R extends { round: number }>(kept: readonly R[], later: readonly R[]): R[] {
  const from = later.length > 0 ? later[0].round : Number.POSITIVE_INFINITY;
  const byRound = new Map(kept.filter((r) => r.round < from).map((r) => [r.round, r] as const));
  for (const r of later) byRound.set(r.round, r);
  return [...byRound.values()].sort((a, b) => a.round - b.round);
}

// ---- stop -----------------------------------------------------------------------------------------

function registerStop(study: Command) {
  addCoordinatorOptions(
    study
      .command('stop')
      .description('stop a running study for good (admin): its open round closes without publishing a model; the reason shows in every view; stopping a stopped study changes nothing')
      .requiredOption('--study <id>', 'study id')
      .option('--reason <text>', 'why (shown in every view of the study, audited)'),
  ).action(
    action(async (opts: CoordinatorOptions & { study: string; reason?: string }) => {
      const result = await coordinatorClient(opts).post<{ id: string; state: string; stopReason: string | null; stoppedBy: string | null; changed: boolean; closedRound: { round: number; phase: string } | null }>(
        `/v1/studies/${encodeURIComponent(opts.study)}/stop`,
        opts.reason === undefined ? {} : { reason: opts.reason },
      );
      if (opts.json) return printJson(result);
      if (!result.changed) return print(`study ${result.id} had already ended: ${result.state}${result.stopReason ? `: ${result.stopReason}` : ''}`);
      const closed = result.closedRound ? `; round ${result.closedRound.round} closed (${result.closedRound.phase === 'failed' ? 'failed, no model published' : 'its evaluation pooled as it stood'})` : '';
      print(`study ${result.id} stopped by ${result.stoppedBy}: ${result.stopReason}${closed}`);
    }),
  );
}
