import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { RoundSummary, StudyStatus, type StudyConfigInput } from '../protocols/messages.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { decodeWeights, encodeWeights } from '../protocols/weights-codec.ts';
import { childLauncher } from './launcher.ts';
import { childLog } from './child-log.ts';
import { seedPgliteDir } from './pglite-template.ts';
import { coordinatorMemoryEnv, parseResourcesLine, REPORT_RESOURCES_ENV, RESOURCES_MESSAGE, type ProcessResources } from './process-resources.ts';

/**
 * The demo's federation, shared by every model kind's demo (cli/demo.ts for binary and regression,
 * cli/demo-forecast.ts, cli/demo-recommend.ts): a coordinator process and one node process per
 * partition on loopback, the study followed to its end with a line per round, the final global
 * weights downloaded, and the audit log exported and verified as an auditor would. The caller
 * prepares the data (one CSV per node, already written) and compares the models afterwards.
 * The children ALWAYS stop before runFederation returns or throws: nothing for the caller to close.
 */

const DEMO_MARKER = '.fedmark-demo';

/** One node of the demo: its partition's CSV (already written) and how the progress lines name it. */
export interface FederationNode {
  name: string;
  /** The node's CSV, already written (by convention OUT/nodes/NAME/data.csv). */
  dataFile: string;
  /** Rows in dataFile, for the progress line. */
  rows: number;
  /** The partition's values (a region's states...): the region named on the node's enrollment token (the node name when empty). */
  values: string[];
  /** Flags for this node only, after the plan's nodeFlags (e.g. `['--attack', 'scale']`). */
  flags?: string[];
  /** Said after the row count in the "node processes started" line (e.g. `ATTACKER: scale`). */
  note?: string;
}

/** What a round's line says about the global model, from the kind's pooled validation metrics. */
export type RoundMetricsText<F extends object> = (metrics: Record<string, number | null> | null, round: RoundSummary) => { text: string; fields?: F };

export interface FederationPlan<F extends object = Record<string, never>> {
  /** The study to create (its privacy section, if any, makes the run follow the privacy report). */
  studyConfig: StudyConfigInput;
  nodes: FederationNode[];
  /** The demo's output folder, from prepareDemoOut: logs/, coordinator-db/, ledgers/, audit/, global-model.* go there. */
  outDir: string;
  /** PostgreSQL for the coordinator (`fedmark demo --database-url`); the embedded PGlite in outDir when absent. */
  databaseUrl?: string;
  /** Extra flags for every `fedmark node` (e.g. `['--personalize']`). */
  nodeFlags?: string[];
  /** Where a progress line goes. */
  say: (line: string) => void;
  /** Lines said once the nodes are started (model, privacy settings...). */
  intro?: string[];
  /** Called once round 1 has completed (the demo warms up what it needs afterwards while the rounds run). */
  afterRoundOne?: () => void;
  /** The round line's text (and the round's JSON fields) from the round's pooled validation metrics. */
  roundMetrics: RoundMetricsText<F>;
}

/** One finished round as the demo's JSON reports it (`fields` from roundMetrics sit after validationAuc). */
export type FederationRound<F extends object = Record<string, never>> = { round: number; phase: string; nodes: number; invited: number; meanLoss: number | null; validationAuc: number | null } & Partial<F> & {
  seconds: number;
  durationSeconds: number | null;
  failureReason: string | null;
  epsilonRound?: number;
  epsilonTotal?: number;
  dpSgdEpsilonTotal?: number;
};

export interface PrivacyReportBody {
  spentEpsilon: number;
  rounds: Array<{ round: number; epsilonRound: number; epsilonTotal: number }>;
  nodes: Array<{ name: string; dpSgd: { epsilonTotal: number; rounds: Array<{ round: number; epsilonRound: number; epsilonTotal: number }> } | null }>;
}

export interface FederationAudit {
  dir: string;
  ok: boolean;
  entries: number | null;
  checkpoints: number | null;
  /** Why verification failed (null when ok). */
  message: string | null;
}

export interface FederationResult<F extends object = Record<string, never>> {
  studyId: string;
  url: string;
  rounds: Array<FederationRound<F>>;
  /** The study's last status (state, stopReason, every round's validationMetrics...). */
  status: StudyStatus;
  /** The last completed round as the coordinator sent it, with fields the status schema does not know (e.g. personalized metrics); null if none completed. */
  lastRound: Record<string, unknown> | null;
  /** The final global weights, also written to OUT/global-model.fmw (with OUT/global-model.json). */
  weights: WeightSet;
  modelVersion: number;
  modelPath: string;
  /** The study's privacy report at the end (studies with a privacy section only). */
  privacyReport?: PrivacyReportBody;
  /** Seconds from the start of runFederation to the end of the study (not the download or audit). */
  seconds: number;
  /** performance.now() when the study ended, for a caller that times from its own start. */
  endedAt: number;
  audit: FederationAudit;
  /** Seconds from the start of runFederation to the end of round 1 (process start-up, enrollment and round 1: everything before round 2). */
  roundOneSeconds: number | null;
  /** What the child processes reported as they exited (cli/process-resources.ts): null for one that did not report. */
  resources: { coordinator: ProcessResources | null; nodes: Array<ProcessResources | null> };
  /** Seconds from the start of runFederation to each step, for a start-up breakdown. */
  timeline: FederationTimeline;
}

/** Seconds since runFederation started (null: the step was not reached). */
export interface FederationTimeline {
  coordinatorListening: number | null;
  studyCreated: number | null;
  nodesStarted: number | null;
  /** When the coordinator started round 1 (its own clock, the same machine's). */
  roundOneStarted: number | null;
  roundOneCompleted: number | null;
  studyEnded: number | null;
  modelDownloaded: number | null;
  auditVerified: number | null;
  childrenStopped: number | null;
}

/**
 * Runs the plan's study between real processes and returns once the study has ended, its model is
 * downloaded and its audit log verified. Throws if a child dies or the coordinator refuses the study;
 * the children are stopped (and awaited) either way.
 */
export async function runFederation<F extends object = Record<string, never>>(plan: FederationPlan<F>): Promise<FederationResult<F>> {
  const started = performance.now();
  const startedAtMs = Date.now();
  const since = () => (performance.now() - started) / 1000;
  const timeline: FederationTimeline = { coordinatorListening: null, studyCreated: null, nodesStarted: null, roundOneStarted: null, roundOneCompleted: null, studyEnded: null, modelDownloaded: null, auditVerified: null, childrenStopped: null };
  const { outDir, say } = plan;
  mkdirSync(join(outDir, 'logs'), { recursive: true });
  const children = new ChildSet();
  try {
    const { databaseUrl } = plan;
    say(databaseUrl ? '  starting the coordinator on PostgreSQL ...' : '  starting the coordinator (embedded PostgreSQL: its first start can take a minute on a busy machine) ...');
    const adminToken = randomBytes(24).toString('base64url');
    // The bundle and the embedded database's initialized cluster (a cached copy: cli/pglite-template.ts) side by side.
    const [launcher] = await Promise.all([childLauncher(), databaseUrl ? requireNewDatabase(databaseUrl) : seedPgliteDir(join(outDir, 'coordinator-db'))]);
    const coordinator = children.spawn(launcher, ['coordinator', '--port', '0', '--data-dir', join(outDir, 'coordinator-db')], join(outDir, 'logs', 'coordinator.log'), {
      FEDMARK_ADMIN_TOKEN: adminToken,
      // The demo's secrets are made up for this run; a real deployment keeps them in a secret store.
      FEDMARK_KEY_PASSPHRASE: randomBytes(24).toString('base64url'),
      FEDMARK_KEY_DIR: join(outDir, 'coordinator-keys'),
      DATABASE_URL: databaseUrl ?? '',
      // Two malloc arenas, mmap over 256 KB, 8 MB semi-spaces: why and what each saved there.
      ...coordinatorMemoryEnv(),
    });
    // PGlite's start (WebAssembly PostgreSQL, migrations) took over 60 s on 2 cores running other suites too.
    const url = await coordinator.waitFor('coordinator listening', (line) => (line.msg === 'coordinator listening' ? String(line.url) : undefined), 180_000);
    timeline.coordinatorListening = since();
    say(`  coordinator ${url} (${databaseUrl ? `PostgreSQL ${databaseUrl.replace(/\/\/[^@/]*@/, '//***@')}` : `embedded PGlite in ${join(outDir, 'coordinator-db')}`}); logs in ${join(outDir, 'logs')}`);
    const api = adminApi(url, adminToken);
    const study = (await api.post('/v1/studies', plan.studyConfig)) as { id: string; warnings?: string[] };
    // The coordinator's warnings at creation (e.g. client-level DP noise that will swamp 10 nodes).
    for (const warning of study.warnings ?? []) say(`  WARNING: ${warning}`);
    timeline.studyCreated = since();
    const nodes = await startNodes(plan, children, launcher, api, url, study.id);
    timeline.nodesStarted = since();
    for (const line of plan.intro ?? []) say(line);
    const followed = await followStudy(plan, children, api, study.id);
    const endedAt = performance.now();
    timeline.studyEnded = since();
    const firstRound = followed.status.rounds.find((r) => r.round === 1);
    if (firstRound) timeline.roundOneStarted = (Date.parse(firstRound.startedAt) - startedAtMs) / 1000;
    timeline.roundOneCompleted = followed.roundOneCompleted === null ? null : (followed.roundOneCompleted - started) / 1000;
    // The model download and the audit export ask the coordinator side by side.
    const [downloaded, audit] = await Promise.all([
      downloadModel(plan, api, study.id, followed.status.latestModelVersion).finally(() => (timeline.modelDownloaded = since())),
      exportAudit(api, url, outDir).finally(() => (timeline.auditVerified = since())),
    ]);
    // Stopped here (not only in finally) so their exit reports are in: nodes exit by themselves at the study's end.
    await children.stopAll();
    timeline.childrenStopped = since();
    const resources = { coordinator: children.resourcesOf(coordinator.child), nodes: nodes.map((n) => children.resourcesOf(n)) };
    const { roundOneCompleted: _, ...rest } = followed;
    return { studyId: study.id, url, ...rest, ...downloaded, seconds: (endedAt - started) / 1000, endedAt, audit, roundOneSeconds: timeline.roundOneCompleted, resources, timeline };
  } finally {
    await children.stopAll();
  }
}

/** Enrolls and starts one node process per plan node. */
async function startNodes<F extends object>(plan: FederationPlan<F>, children: ChildSet, launcher: Launcher, api: AdminApi, url: string, studyId: string): Promise<ChildProcess[]> {
  const { outDir, nodes } = plan;
  // All tokens asked for at once, each node started as soon as its token is in (not one round trip after another).
  const started = await Promise.all(
    nodes.map(async (p) => {
      // The operator names each node's jurisdiction on its token; the node states the same law.
      // The demo's partners are all under CCPA (US data; no DP required, aggregates of 2 or more).
      const { token } = (await api.post('/v1/enrollment-tokens', { studyId, nodeName: p.name, region: p.values.length ? p.values.join('+') : p.name, jurisdiction: 'US-CA-CCPA' })) as { token: string };
      const args = ['node', '--coordinator', url, '--token', token, '--data', p.dataFile, '--state-dir', join(outDir, 'nodes', p.name, 'state'), '--ledger-dir', join(outDir, 'ledgers'), '--jurisdiction', 'US-CA-CCPA', ...(plan.nodeFlags ?? []), ...(p.flags ?? [])];
      // The passphrase is made up here from 24 random bytes: declared random, its S2K needs no stretching (client-node/identity.ts).
      return children.spawn(launcher, args, join(outDir, 'logs', `node-${p.name}.log`), { FEDMARK_NODE_KEY_PASSPHRASE: randomBytes(24).toString('base64url'), FEDMARK_NODE_KEY_PASSPHRASE_RANDOM: '1' }).child;
    }),
  );
  plan.say(`  ${nodes.length} node processes started: ${nodes.map((p) => `${p.name} (${p.rows} rows${p.note ? `, ${p.note}` : ''})`).join(', ')}`);
  return started;
}

/** Long-polls the study until it ends, saying a line per finished round (and the nodes' start-up before round 1). */
async function followStudy<F extends object>(plan: FederationPlan<F>, children: ChildSet, api: AdminApi, studyId: string) {
  const { say, nodes } = plan;
  const total = plan.studyConfig.rounds;
  const privacy = plan.studyConfig.privacy !== undefined && plan.studyConfig.privacy !== null;
  const rounds: Array<FederationRound<F>> = [];
  let lastReported = 0;
  let roundClock = performance.now();
  let status: ReturnType<typeof FollowedStatus.parse> | undefined;
  let raw: { rounds?: Array<Record<string, unknown>> } = {};
  let privacyReport: PrivacyReportBody | undefined;
  let startup = '';
  let roundOneCompleted: number | null = null;
  for (;;) {
    // Long-polls: the coordinator answers as soon as the study changes, with the rounds not yet
    // reported only (?fromRound): a poll costs what changed, not every round so far (issue 13: this
    // process's parse of every round at every change grew to a node's CPU a round by round 50).
    // The study's config is not parsed here (the plan has it): the full status is read once at the end.
    raw = (await api.get(`/v1/studies/${studyId}${status ? `?wait=5&seen=${status.changeCount ?? 0}&fromRound=${lastReported + 1}` : ''}`)) as typeof raw;
    status = FollowedStatus.parse(raw);
    // Until round 1 starts, say how far the nodes are (each loads TensorFlow.js and its data first).
    if (lastReported === 0 && status.rounds.length === 0) {
      const line = `  ${status.nodes.length}/${nodes.length} nodes enrolled, ${status.nodes.filter((n) => n.state === 'ready').length}/${nodes.length} ready`;
      if (line !== startup) say((startup = line));
    }
    if (privacy && status.rounds.some((r) => r.round > lastReported && (r.phase === 'completed' || r.phase === 'failed'))) privacyReport = (await api.get(`/v1/studies/${studyId}/privacy`)) as PrivacyReportBody;
    for (const r of status.rounds) {
      if (r.round <= lastReported || (r.phase !== 'completed' && r.phase !== 'failed')) continue;
      const seconds = (performance.now() - roundClock) / 1000;
      roundClock = performance.now();
      if (r.round === 1) {
        roundOneCompleted = roundClock;
        plan.afterRoundOne?.();
      }
      lastReported = r.round;
      // Nodes that took part: updates the round aggregated, not nodes it invited.
      const nodesIn = r.phase === 'completed' ? r.updatesReceived : 0;
      const spent = privacyLine(privacyReport, r.round);
      // The kind's pooled metrics of the global model on the nodes' held-out rows.
      const metrics = plan.roundMetrics(r.validationMetrics, r);
      rounds.push({ round: r.round, phase: r.phase, nodes: nodesIn, invited: r.participants.length, meanLoss: r.meanLoss, validationAuc: r.validationAuc, ...(metrics.fields ?? {}), seconds, durationSeconds: roundDuration(r), failureReason: r.failureReason, ...(spent.fields ?? {}) } as FederationRound<F>);
      say(
        r.phase === 'failed'
          ? `round ${String(r.round).padStart(3)}/${total}  FAILED: ${r.failureReason}`
          : `round ${String(r.round).padStart(3)}/${total}  nodes ${nodesIn}/${nodes.length}  mean local loss ${fmt(r.meanLoss)}  ${metrics.text}  ${seconds.toFixed(2)}s${spent.text}`,
      );
    }
    // `stopped` (its budget, a policy, an operator) ends the federation too: said with its reason.
    if (status.state === 'stopped') say(`study stopped: ${status.stopReason ?? '(no reason recorded)'}`);
    if (status.state !== 'running') break;
    children.throwIfOneFailed(join(plan.outDir, 'logs'));
  }
  // The study ended: its whole status, every round and the config, as callers read it.
  raw = (await api.get(`/v1/studies/${studyId}`)) as typeof raw;
  const lastRound = [...(raw.rounds ?? [])].reverse().find((r) => r.phase === 'completed') ?? null;
  return { rounds, status: StudyStatus.parse(raw), lastRound, roundOneCompleted, ...(privacyReport ? { privacyReport } : {}) };
}

/** A followed study's status as this loop reads it: its config left unparsed (the plan has it). */
const FollowedStatus = StudyStatus.omit({ config: true });

/** The final global weights, written to OUT/global-model.fmw with a JSON note of what they are. */
async function downloadModel<F extends object>(plan: FederationPlan<F>, api: AdminApi, studyId: string, version: number) {
  const weights = decodeWeights(await api.getBytes(`/v1/studies/${studyId}/model`));
  const modelPath = join(plan.outDir, 'global-model.fmw');
  writeFileSync(modelPath, encodeWeights(weights));
  writeFileSync(join(plan.outDir, 'global-model.json'), JSON.stringify({ studyId, version, model: plan.studyConfig.model, features: plan.studyConfig.features, format: 'fedmark weights codec FMW1 (protocols/weights-codec.ts)' }, null, 2));
  return { weights, modelVersion: version, modelPath };
}

/** The auditor's side: export the log through the API with an auditor token, verify it offline. */
async function exportAudit(api: AdminApi, url: string, outDir: string): Promise<FederationAudit> {
  const auditor = (await api.post('/v1/tokens', { role: 'auditor', name: 'demo auditor' })) as { token: string };
  const dir = join(outDir, 'audit');
  const { exportFromCoordinator } = await import('../coordinator/audit/audit-export-sources.ts');
  await exportFromCoordinator({ coordinator: url, token: auditor.token, out: dir });
  const { verifyAuditExport } = await import('../protocols/audit/audit-export.ts');
  const verified = await verifyAuditExport(dir);
  return verified.ok ? { dir, ok: true, entries: verified.entries, checkpoints: verified.checkpoints, message: null } : { dir, ok: false, entries: null, checkpoints: null, message: verified.message };
}

/** Issue 13's figures for fedmark, as the demos' JSON reports them (their names are kept by the bench). */
export interface SpeedFigures {
  /** Median of the round lines' seconds over rounds 2 onwards (round 1 carries the start-up); null with fewer than 2 rounds. */
  medianRoundSeconds: number | null;
  /** Seconds from the federation's start (coordinator and node processes starting) to round 1's end. */
  roundOneSeconds: number | null;
  /** Peak RSS of the coordinator process (VmHWM), MB; null if it did not report. */
  coordinatorPeakRssMb: number | null;
  /** The largest peak RSS over the node processes (VmHWM), MB; null if none reported. */
  nodePeakRssMb: number | null;
  /** CPU seconds of the coordinator, and of all nodes together, over their lives. */
  coordinatorCpuSeconds: number | null;
  nodeCpuSeconds: number | null;
  /** Seconds from the federation's start to each step (cli/demo-federation.ts FederationTimeline). */
  timeline: FederationTimeline;
}

export function speedFigures(federation: Pick<FederationResult, 'roundOneSeconds' | 'resources' | 'timeline'> & { rounds: Array<{ round: number; phase: string; seconds: number }> }): SpeedFigures {
  const later = federation.rounds.filter((r) => r.round >= 2 && r.phase === 'completed').map((r) => r.seconds);
  const nodes = federation.resources.nodes.filter((r): r is ProcessResources => r !== null);
  return {
    medianRoundSeconds: median(later),
    roundOneSeconds: federation.roundOneSeconds,
    coordinatorPeakRssMb: federation.resources.coordinator?.peakRssMb ?? null,
    nodePeakRssMb: nodes.length ? Math.max(...nodes.map((n) => n.peakRssMb)) : null,
    coordinatorCpuSeconds: federation.resources.coordinator?.cpuSeconds ?? null,
    nodeCpuSeconds: nodes.length ? nodes.reduce((a, n) => a + n.cpuSeconds, 0) : null,
    timeline: federation.timeline,
  };
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The progress line of an exported audit log (the demos print it last). */
export function auditLine(audit: FederationAudit): string {
  return `audit log exported to ${audit.dir} (${audit.ok ? `${audit.entries} entries, ${audit.checkpoints} signed checkpoints, verified OK` : `verification FAILED: ${audit.message}`}); check it yourself: npx fedmark audit verify ${audit.dir}`;
}

/**
 * The demo's output folder, emptied: each run starts clean (a stale database would resume an old
 * study), but only a folder an earlier demo made is ever deleted: `--out .` must not wipe a repository.
 */
export function prepareDemoOut(out: string | undefined): string {
  const outDir = resolve(out ?? join('.fedmark', 'demo'));
  if (existsSync(outDir) && readdirSync(outDir).length > 0) {
    if (!existsSync(join(outDir, DEMO_MARKER)) && outDir !== resolve(join('.fedmark', 'demo'))) throw new Error(`--out ${outDir} exists and was not made by fedmark demo; give an empty or new folder`);
    rmSync(outDir, { recursive: true, force: true });
  }
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, DEMO_MARKER), 'made by fedmark demo; deleted and rewritten by the next run\n');
  return outDir;
}

/** Seconds from the round's start to its close, as the coordinator recorded them (no process start-up in it, unlike `seconds`). */
function roundDuration(r: { startedAt: string; closedAt: string | null }): number | null {
  return r.closedAt === null ? null : (Date.parse(r.closedAt) - Date.parse(r.startedAt)) / 1000;
}

function privacyLine(report: PrivacyReportBody | undefined, round: number): { text: string; fields?: Record<string, number> } {
  if (!report) return { text: '' };
  const central = report.rounds.find((r) => r.round === round);
  const node = Math.max(0, ...report.nodes.map((n) => n.dpSgd?.rounds.find((r) => r.round === round)?.epsilonTotal ?? 0));
  const parts: string[] = [];
  const fields: Record<string, number> = {};
  if (central) {
    parts.push(`eps +${central.epsilonRound.toFixed(3)} = ${central.epsilonTotal.toFixed(3)}`);
    fields.epsilonRound = central.epsilonRound;
    fields.epsilonTotal = central.epsilonTotal;
  }
  if (node > 0) {
    parts.push(`DP-SGD eps ${node.toFixed(3)}/node`);
    fields.dpSgdEpsilonTotal = node;
  }
  return { text: parts.length ? `  ${parts.join('  ')}` : '', fields };
}

/** A metric in a table or round line: 4 decimals, or a dash when missing. */
export function fmt(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '   -  ' : v.toFixed(4);
}

/** A value on the target's own scale (dollars...): 4 significant digits, at least 2 decimals below 100. */
export function fmtValue(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '   -  ';
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

type Launcher = Awaited<ReturnType<typeof childLauncher>>;
type AdminApi = ReturnType<typeof adminApi>;

/**
 * The demo's child processes, stopped however the demo ends: a normal return or a throw (stopAll
 * in runFederation's finally), Ctrl-C or kill (signal handlers), a crash (the exit handler), a
 * closed stdout (`npm start | head`: EPIPE). A demo killed outright (SIGKILL) cannot stop them, so
 * each child also watches its stdin, a pipe from this process, and shuts down when it closes
 * (FEDMARK_EXIT_WITH_PARENT, cli/main.ts).
 */
class ChildSet {
  private readonly children: ChildProcess[] = [];
  /** Resolves once the child has exited AND its stdout is read to the end (its exit report included). */
  private readonly closed = new Map<ChildProcess, Promise<void>>();
  private readonly resources = new Map<ChildProcess, ProcessResources>();
  private static readonly SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  private readonly kill = () => {
    for (const c of this.children) if (!exited(c)) c.kill('SIGTERM');
  };
  private readonly onSignal = () => {
    this.kill();
    process.exit(130);
  };
  private readonly onBrokenPipe = (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    this.kill();
    process.exit(141);
  };

  constructor() {
    process.once('exit', this.kill);
    for (const signal of ChildSet.SIGNALS) process.once(signal, this.onSignal);
    process.stdout.on('error', this.onBrokenPipe);
  }

  /** Starts `fedmark <args>` with its output going to a log file, and lets the caller wait for a log line. */
  spawn(launcher: Launcher, args: string[], logFile: string, env: Record<string, string>) {
    const started = spawnChild(launcher, args, logFile, { ...env, [REPORT_RESOURCES_ENV]: '1' });
    this.children.push(started.child);
    this.closed.set(started.child, new Promise((r) => started.child.once('close', () => r())));
    started.onLine(RESOURCES_MESSAGE, (line) => {
      const resources = parseResourcesLine(line);
      if (resources) this.resources.set(started.child, resources);
    });
    return started;
  }

  /** What the child reported as it exited (cli/process-resources.ts), once stopAll has returned. */
  resourcesOf(child: ChildProcess): ProcessResources | null {
    return this.resources.get(child) ?? null;
  }

  throwIfOneFailed(logs: string): void {
    for (const c of this.children) if (exited(c) && c.exitCode !== 0) throw new Error(`a demo process exited (${c.exitCode ?? c.signalCode}); see ${logs}`);
  }

  /** SIGTERM to every live child, then waits for them all; unhooks the process listeners (a process running several demos must not pile them up). */
  async stopAll(): Promise<void> {
    this.kill();
    await Promise.all(this.children.map((c) => this.closed.get(c)));
    process.off('exit', this.kill);
    process.stdout.off('error', this.onBrokenPipe);
    for (const signal of ChildSet.SIGNALS) process.off(signal, this.onSignal);
  }
}

/**
 * `--database-url` must name a database no coordinator has used: the demo makes a new coordinator
 * key each run, and the audit export it verifies trusts the database's first key, so a second
 * demo's log would not verify against the first one's key.
 */
async function requireNewDatabase(url: string): Promise<void> {
  const pg = await import('pg');
  const client = new pg.default.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  const where = url.replace(/\/\/[^@/]*@/, '//***@');
  try {
    await client.connect();
    const { rows } = await client.query<{ used: boolean }>(`select to_regclass('audit_log') is not null as used`);
    if (rows[0]?.used) throw new Error(`--database-url ${where} already holds a fedmark coordinator's tables: give the demo a new, empty database (createdb NAME), since each demo makes its own coordinator key`);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('--database-url')) throw err;
    throw new Error(`--database-url ${where}: cannot connect (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  } finally {
    await client.end().catch(() => {});
  }
}

function exited(c: ChildProcess): boolean {
  return c.exitCode !== null || c.signalCode !== null;
}

function spawnChild(launcher: Launcher, args: string[], logFile: string, env: Record<string, string>) {
  // stdin is a pipe the child watches (FEDMARK_EXIT_WITH_PARENT): when this process dies, however, it closes.
  const profile = process.env.FEDMARK_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.FEDMARK_CPU_PROF_DIR}`] : [];
  // stdout and stderr are the log file itself: the child writes its lines there, not through this
  // process (child-log.ts reads back only the lines waited for).
  const fd = openSync(logFile, 'w');
  let child: ChildProcess;
  try {
    child = spawn(launcher.command, [...profile, ...launcher.prefix, ...args], { env: { ...process.env, ...env, FEDMARK_EXIT_WITH_PARENT: '1' }, stdio: ['pipe', fd, fd] });
  } finally {
    closeSync(fd); // the child holds its own copy
  }
  const log = childLog(logFile);
  child.once('exit', () => log.drain());
  return {
    child,
    /** Calls `watch` with every JSON line containing `marker` the child logs (read at the latest when it exits). */
    onLine(marker: string, watch: (line: Record<string, unknown>) => void): void {
      log.onLine(marker, watch);
    },
    waitFor<T>(marker: string, match: (line: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T> {
      const ready = log.waitFor(marker, match, () => new Error(`timed out waiting for ${args[0]} to start; see ${logFile}`), timeoutMs);
      const died = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`${args[0]} exited with code ${code} before it was ready; see ${logFile}`))));
      died.catch(() => undefined); // only its race below reports it
      return Promise.race([ready, died]);
    },
  };
}

function adminApi(url: string, token: string) {
  const headers = { authorization: `Bearer ${token}` };
  const check = async (res: Response) => {
    if (!res.ok) throw new Error(`coordinator answered ${res.status}: ${await res.text()}`);
    return res;
  };
  return {
    async post(path: string, body: unknown) {
      return (await check(await fetch(url + path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) }))).json();
    },
    async get(path: string) {
      return (await check(await fetch(url + path, { headers }))).json();
    },
    async getBytes(path: string) {
      return new Uint8Array(await (await check(await fetch(url + path, { headers }))).arrayBuffer());
    },
  };
}
