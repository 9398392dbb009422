import { mkdirSync, renameSync } from 'node:fs';
import { openTableSource } from '../models/table-sources.ts';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { encodedWidth, FeatureSpec } from '../protocols/feature-spec.ts';
import type { EvaluationReport, RiddenEvaluation, StudyConfig, Task } from '../protocols/messages.ts';
import { initBackend } from '../models/backend.ts';
import { readFeatureSpecFile } from '../models/infer-spec.ts';
import { nodeKindFor, sharedKindSpecs } from '../models/kinds/index.ts';
import type { NodeModelKind } from '../models/kinds/kind.ts';
import { CoordinatorClient, CoordinatorRefusal } from './coordinator-client.ts';
import type { NodeConfig } from './config.ts';
import { DataSource, type LoadedData } from './data.ts';
import { GlobalModels, ModelRejectedError, ModelSignatureError } from './global-model.ts';
import { CoordinatorTrust, loadIdentity, loadOrEnroll, savedNode } from './identity.ts';
import { checkFitTask, loadNodePolicy, PolicyInForce, type FitPermission } from './policy.ts';
import { NodeStoppedError, type NodeStopReason } from './config.ts';
import { checkStudyAgainstPolicy, privacyFacts, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { attackEvaluation, attackUpdate } from './attack.ts';
import { Release, type Released, type StatusFacts } from './release.ts';
import { seal, sendEvaluation, sendUpdate } from './send.ts';
import { BackOff, describeNetworkError, evaluationTaskOf, pause, pollTask, refuseForBudget } from './task.ts';
import { witnessCheckpoint } from './witness.ts';
import { LedgerCeilingError, NodePrivacyLedger } from './privacy-ledger.ts';
import { evaluate, train, TrainingFailedError } from './train.ts';
import { personalize, personalizesAt, withPersonalized } from './personalize.ts';

/**
 * The client node. Each task goes through the same stages, each in its own module:
 *
 *   task      task.ts        what the coordinator asks next: train (fit) or evaluate
 *   policy    policy.ts      may this node train for it? its law (the stricter of its own profile
 *                            and the coordinator's) and its privacy ceiling, whatever the
 *                            coordinator decided
 *   data      data.ts        its CSV for the study, reread when the file changes
 *   train     train.ts       through the study's model kind, from the verified global model
 *                            (global-model.ts) under the strategy's instructions; the privacy
 *                            ledger is charged before training
 *   release   release.ts     the only code that builds what leaves about the data: the fields the
 *                            study's release list names, nothing else
 *   seal      send.ts        the weights, encrypted to the pinned coordinator key, signed
 *   send      send.ts        to the coordinator (coordinator-client.ts signs every request)
 *
 * Enrollment, key pinning and the coordinator's key rotations are in identity.ts. Nothing here
 * ever serializes a row.
 */

export { NodePolicyRequiredError, loadNodePolicy } from './policy.ts';
export { describeDataError } from './data.ts';
export { describeNetworkError } from './task.ts';
export { ModelRejectedError, ModelSignatureError } from './global-model.ts';
export { TrainingFailedError } from './train.ts';
export { NodeStoppedError, NODE_EXIT_CODES } from './config.ts';
export { NODE_KEY_LIFETIME_SECONDS } from './identity.ts';

export interface NodeRunSummary {
  nodeId: string;
  roundsTrained: number;
  evaluations: number;
  bytesSent: number;
}

export async function runNode(config: NodeConfig, log: Logger, signal?: AbortSignal): Promise<NodeRunSummary> {
  // First, before anything is created or sent: a node that does not know which law its data
  // falls under must not train on it.
  const localPolicy = loadNodePolicy(config);
  log.info({ backend: await initBackend(config.backend) }, 'tensorflow backend');
  const { client, credentials, trust } = await connect(config, localPolicy.jurisdiction, log);

  // A study that cannot run for this node is said at once, loudly (NodeStoppedError), not after
  // an idle wait that ends in `roundsTrained 0` and exit code 0.
  const first = await readStudy(client, log);
  const study = first.config;
  const summary: NodeRunSummary = { nodeId: credentials.nodeId, roundsTrained: 0, evaluations: 0, bytesSent: 0 };
  if ((await studyOutcome(client, first, log, true)) === 'done' && config.exitWhenDone) return summary;
  const report = statusReporter(client, Release.of(study));
  await refuseAnotherSpec(config, study, credentials.studyId, report);
  const policies = new PolicyInForce(localPolicy, client, log);
  let policy = await policies.current();
  log.info({ jurisdiction: policy.jurisdiction, version: policy.version, dpRequired: policy.dpRequired, forbidden: policy.forbiddenFeatureCategories }, 'node policy');
  await refuseForbiddenStudy(first, policy, report, log);

  const kind = nodeKindFor(study);
  const model = kind.createModel(study, encodedWidth(study.features));
  const globals = new GlobalModels(client, trust, sharedKindSpecs(study, kind, model));
  const data = new DataSource(openTableSource({ data: config.data, table: config.dataTable, query: config.dataQuery, batchRows: config.dataBatchRows, refreshSeconds: config.dataRefreshSeconds, delimiter: config.delimiter }), study, report, log, credentials.studyId);
  const backOff = new BackOff(config.idleBackoffMaxSeconds, log, signal);

  // Set after the node refused a model or its training diverged: it reports `ready` again before
  // its next task, so it is asked again (and refuses again at once if the model is the same one).
  let rejoin = false;
  // The next task as the last update's receipt brought it (the update request waited for it):
  // worked on without polling for it.
  let carried: Task | undefined;
  while (!signal?.aborted) {
    await data.refresh(policy);
    if (rejoin && data.current) rejoin = !(await reportSafely(report, { state: 'ready', data: data.current.report }, log));

    // 1. Task.
    const asked = performance.now();
    const next = carried ? { task: carried } : await pollTask(client, config.pollSeconds, log).catch((err: unknown) => revokedOr(client, err, log));
    carried = undefined;
    if ('unreachable' in next) {
      await pause(5000, signal);
      continue;
    }
    if ('none' in next) {
      // No task: has the study ended (exit 0 after taking part; a NodeStoppedError otherwise)?
      if ((await idleOutcome(client, log)) === 'done' && config.exitWhenDone) break;
      // A coordinator that answers "no task" at once (a short long-poll, or --poll-seconds 0)
      // is asked at most about once a second.
      await pause(1000 - (performance.now() - asked), signal);
      continue;
    }
    const { task } = next;
    await witnessCheckpoint(config.stateDir, task, trust, log); // keeps the coordinator's signed audit checkpoint (never fails the task)

    // 2. Policy (in force now; read again only when the task names another version): it may have
    // changed since the last round; the data's forbidden features depend on it, so a new one
    // rereads the data before anything is decided.
    if (task.kind === 'fit') {
      const latest = await policies.current(task);
      if (!isDeepStrictEqual(latest, policy)) {
        log.info({ jurisdiction: latest.jurisdiction, version: latest.version }, 'node policy changed; rereading the data');
        policy = latest;
        data.invalidate();
        await data.refresh(policy);
      }
    }

    // 3. Data.
    const loaded = data.current;
    if (!loaded) {
      log.warn({ round: task.round, error: data.lastError }, 'task skipped: no usable data');
      await backOff.wait('no usable data');
      continue;
    }

    const work: TaskWork = { config, client, trust, kind, model, globals, loaded, report, summary, log };
    try {
      if (task.kind === 'fit') {
        // 'with-next-fit': the previous round's evaluation rides on this task (same model, one
        // download); computed first, whatever this node's permission to train says, and sent with
        // the update when the coordinator takes it there (Task.evaluate.withUpdate), else alone now.
        const owed = task.evaluate ? await owedEvaluation(work, task) : undefined;
        if (owed === 'refused') {
          await backOff.wait('privacy-ceiling');
          continue;
        }
        const permission = checkFitTask(task, policy, config, loaded.report.rows);
        if (!permission.allowed) {
          if (owed) await sendAlone(work, owed);
          log.warn({ round: task.round, ...permission.details }, permission.message);
          await report({ state: permission.state, message: permission.message, data: loaded.report });
          await stopIfFinal(permission, client, log);
          data.frozen = true;
          await backOff.wait(permission.state);
          continue;
        }
        carried = await fitAndSend(work, task, permission, owed);
      } else await evaluateAndSend(work, task);
      backOff.reset();
    } catch (err) {
      if (err instanceof NodeStoppedError) throw err;
      if (err instanceof CoordinatorRefusal) log.warn({ round: task.round, kind: task.kind, status: err.status, code: err.code, reason: err.message }, 'coordinator refused');
      else if (err instanceof ModelSignatureError) log.error({ round: task.round, kind: task.kind, reason: err.message }, 'refused an unsigned or wrongly signed global model');
      else if (err instanceof ModelRejectedError || err instanceof TrainingFailedError) {
        // Said to the coordinator, so the round does not wait for this node; nothing was sent.
        const state = err instanceof ModelRejectedError ? 'model-rejected' : 'training-failed';
        log.error({ round: task.round, kind: task.kind, state, reason: err.message }, state === 'model-rejected' ? 'refused a signed global model with out-of-range weights' : 'local training failed');
        rejoin = await reportSafely(report, { state, message: err.message, data: loaded.report }, log);
      } else if (err instanceof LedgerCeilingError) await refuseForBudget(report, task, err, log); // nothing was released (task.ts)
      // Not the coordinator's refusal: log it and carry on with the next task (a daemon must
      // survive a bad moment; the coordinator's deadline handles a round this node missed).
      else log.error({ round: task.round, kind: task.kind, err: err instanceof Error ? err.message : String(err) }, 'task failed');
      // The same task would come back at once and fail the same way.
      await backOff.wait(err instanceof Error ? err.constructor.name : 'task failed');
    }
  }
  return summary;
}

/** What a task's work needs: the node's connection, model, verified global models and this task's data. */
interface TaskWork {
  config: NodeConfig;
  client: CoordinatorClient;
  trust: CoordinatorTrust;
  kind: NodeModelKind;
  model: ReturnType<NodeModelKind['createModel']>;
  globals: GlobalModels;
  loaded: LoadedData;
  report: (s: StatusFacts) => Promise<void>;
  summary: NodeRunSummary;
  log: Logger;
}

/**
 * 4. Train (the ledger is charged inside, before training), 5. release, 6. seal, 7. send, with the
 * previous round's evaluation riding on the update when there is one (`owed`). If the update does
 * not carry it through (training failed, the request was refused before the evaluation was
 * judged), the evaluation goes alone: it is idempotent on the coordinator's side.
 */
async function fitAndSend(w: TaskWork, task: Task, permission: Extract<FitPermission, { allowed: true }>, owed?: ComputedEvaluation): Promise<Task | undefined> {
  let sent: Awaited<ReturnType<typeof trainAndSend>> | undefined;
  try {
    sent = await trainAndSend(w, task, permission, owed);
  } finally {
    if (owed) await settleOwed(w, owed, sent?.receipt.evaluation);
  }
  const { receipt, sealed, weights, meta, facts } = sent;
  w.summary.roundsTrained++;
  w.summary.bytesSent += sealed.plainBytes;
  // What left this node, said plainly: sizes, tensor names and the released fields, never values or rows.
  w.log.info({ round: task.round, bytes: sealed.plainBytes, sha256: receipt.sha256, tensors: weights.map((t) => `${t.name}[${t.shape.join('x')}]`), released: Object.keys(meta), numExamples: facts.numExamples, loss: facts.loss, trainSeconds: facts.trainSeconds }, 'sent model update');
  return receipt.nextTask;
}

async function trainAndSend(w: TaskWork, task: Task, permission: Extract<FitPermission, { allowed: true }>, owed: ComputedEvaluation | undefined) {
  const { config, client, loaded, log } = w;
  const release = Release.of(task.config);
  let trained = await train(w.kind, w.model, loaded, task, await w.globals.fetch(task), { ledger: permission.ledger, spend: permission.spend, delta: config.maxEpsilonDelta }, log);
  if (config.attack) trained = attackUpdate(config.attack, trained, await w.globals.fetch(task)); // demos and tests only (attack.ts)
  const meta = release.update({ ...trained.facts, data: loaded.report });
  const weights = release.weights(trained.weights);
  const sealed = await seal(client, weights, w.trust);
  // The answer waits (as a task poll would) for this node's next task, and brings it.
  const receipt = await sendUpdate(client, task, meta, sealed, owed && { round: owed.task.round, report: owed.report }, config.pollSeconds);
  return { receipt, sealed, weights, meta, facts: trained.facts };
}

/** An evaluation computed and released, not yet sent: its (evaluate) task, the released report, and the figures for the log. */
interface ComputedEvaluation {
  task: Task;
  report: Released<EvaluationReport>;
  evaluation: Awaited<ReturnType<typeof evaluate>>;
}

/**
 * Evaluate: the global model on this node's validation rows, 5. release. Under DP the evaluation
 * is noised and charged to this data source's ledger first.
 */
async function computeEvaluation(w: TaskWork, task: Task): Promise<ComputedEvaluation> {
  const { config, loaded, log } = w;
  const release = Release.of(task.config);
  const ledger = release.dp ? NodePrivacyLedger.for(config, task.config.privacy?.accountant ?? 'rdp', config.maxEpsilonDelta, config.maxEpsilon) : undefined;
  let evaluation = evaluate(w.kind, w.model, loaded, await w.globals.fetch(task), ledger ? { ledger, task } : undefined, log);
  // --personalize, final round: a fine-tuned copy kept here; its statistics join the report (personalize.ts).
  if (personalizesAt(config, task)) {
    const global = await w.globals.fetch(task);
    evaluation = await withPersonalized(evaluation, () => personalize(w.kind, task, loaded, global, config, release, ledger, log), task, log);
  }
  if (config.attack) evaluation = attackEvaluation(config.attack, evaluation); // demos and tests only (attack.ts)
  return { task, report: release.evaluation(evaluation), evaluation };
}

/** Evaluate, 5. release, 7. send (an evaluate task). */
async function evaluateAndSend(w: TaskWork, task: Task): Promise<void> {
  const computed = await computeEvaluation(w, task);
  await sendEvaluation(w.client, task, computed.report);
  noteSent(w, computed, false);
}

function noteSent(w: TaskWork, { task, evaluation }: ComputedEvaluation, withUpdate: boolean): void {
  w.summary.evaluations++;
  w.log.info({ round: task.round, validationRows: evaluation.numExamples, loss: evaluation.loss, kind: evaluation.stats.kind, ...(withUpdate ? { withUpdate } : {}), ...(evaluation.spent ? { noised: true, ...evaluation.spent } : {}) }, 'sent evaluation (sufficient statistics)');
}

/**
 * The evaluation a fit task carries (Task.evaluate), computed as a standalone evaluate task is: kept
 * to ride on the update when the coordinator takes it there (withUpdate), else sent alone now. A
 * privacy ceiling stops it ('refused': the node said so, and trains no more either).
 */
async function owedEvaluation(w: TaskWork, task: Task): Promise<ComputedEvaluation | 'refused' | undefined> {
  const owed = evaluationTaskOf(task);
  let computed: ComputedEvaluation;
  try {
    computed = await computeEvaluation(w, owed);
  } catch (err) {
    if (!(err instanceof LedgerCeilingError)) throw err;
    await refuseForBudget(w.report, owed, err, w.log); // nothing was released (task.ts)
    return 'refused';
  }
  if (task.evaluate?.withUpdate) return computed;
  await sendAlone(w, computed);
  return undefined;
}

/** An owed evaluation sent on its own. The coordinator refusing it (its round closed at its deadline meanwhile) does not stop the training. */
async function sendAlone(w: TaskWork, computed: ComputedEvaluation): Promise<void> {
  try {
    await sendEvaluation(w.client, computed.task, computed.report);
    noteSent(w, computed, false);
  } catch (err) {
    if (!(err instanceof CoordinatorRefusal)) throw err;
    refusedEvaluation(w, computed, err);
  }
}

function refusedEvaluation(w: TaskWork, { task }: ComputedEvaluation, refusal: { status: number; code: string; message: string }): void {
  w.log.warn({ round: task.round, status: refusal.status, code: refusal.code, reason: refusal.message }, 'coordinator refused the evaluation; training goes on');
}

/**
 * After the update request: the ridden evaluation's outcome as the receipt states it, or, when
 * there is none (no receipt: training failed, the request was refused or never answered), the
 * evaluation sent alone. Never throws: the update's own outcome is what the caller reports.
 */
async function settleOwed(w: TaskWork, owed: ComputedEvaluation, outcome: RiddenEvaluation | undefined): Promise<void> {
  if (outcome?.refused) return refusedEvaluation(w, owed, outcome.refused);
  if (outcome) return noteSent(w, owed, true);
  await sendAlone(w, owed).catch((err: unknown) => w.log.warn({ round: owed.task.round, err: describeNetworkError(err) }, 'could not send the evaluation'));
}

/** Logs why the node stops, at error level, and returns the error that ends it (its exit code says the class). */
function stopped(log: Logger, reason: NodeStopReason, message: string): NodeStoppedError {
  const err = new NodeStoppedError(reason, message);
  log.error({ stop: reason, exitCode: err.exitCode }, err.message);
  return err;
}

/**
 * A failed request: when the coordinator no longer accepts this node's credentials (401: its
 * enrollment was revoked), the node stops; anything else is rethrown. task.ts reports a 401 as a
 * plain Error, so the study is asked again to tell.
 */
async function revokedOr(client: CoordinatorClient, err: unknown, log: Logger): Promise<never> {
  const refusal = err instanceof CoordinatorRefusal ? err : await client.study().then(() => undefined, (e: unknown) => e);
  if (refusal instanceof CoordinatorRefusal && refusal.status === 401) throw stopped(log, 'enrollment-revoked', `the coordinator no longer accepts this node (its enrollment was revoked): ${refusal.message}`);
  throw err;
}

/** The node's study as the coordinator states it; a revoked node stops here. */
async function readStudy(client: CoordinatorClient, log: Logger) {
  return client.study().catch((err: unknown) => revokedOr(client, err, log));
}

type StudyState = Awaited<ReturnType<CoordinatorClient['study']>>;

/**
 * Whether the study still has work for this node: `running`, or `done` (it completed after this
 * node took part in a round, as the coordinator counts them: a restarted node too). A study that
 * was stopped, or completed before this node took part, and a node that withdrew, stop the node.
 */
async function studyOutcome(client: CoordinatorClient, study: StudyState, log: Logger, atStart = false): Promise<'running' | 'done'> {
  // While the study runs, the node's own record is read once, at start (an idle poll costs one request, not two).
  if (study.state === 'running' && !atStart) return 'running';
  const me = await client.me().catch((err: unknown) => revokedOr(client, err, log));
  if (me.state === 'withdrawn' || me.state === 'revoked') throw stopped(log, 'enrollment-revoked', `node ${me.name} (${me.id}) ${me.state === 'withdrawn' ? 'withdrew from' : 'was revoked from'} study ${study.studyId}${me.message ? `: ${me.message}` : ''}`);
  if (study.state === 'running') return 'running';
  const why = study.stopReason ? `: ${study.stopReason}` : '';
  if (study.state === 'completed' && me.rounds > 0) {
    log.info({ studyId: study.studyId, rounds: me.rounds, ...(study.stopReason ? { stopReason: study.stopReason } : {}) }, 'study completed');
    return 'done';
  }
  if (study.state === 'completed') throw stopped(log, 'study-ended', `study ${study.studyId} completed before this node took part in a round${why}; this node has nothing to do`);
  // Any other state (`stopped`, or one added later) is an early end.
  throw stopped(log, 'study-ended', `study ${study.studyId} is ${study.state}: it ended early${why || ' (no reason given)'}; this node took part in ${me.rounds} round${me.rounds === 1 ? '' : 's'}`);
}

/** The study's outcome after a poll with no task; an unreachable coordinator is no outcome (`running`: poll again). */
async function idleOutcome(client: CoordinatorClient, log: Logger): Promise<'running' | 'done'> {
  try {
    return await studyOutcome(client, await readStudy(client, log), log);
  } catch (err) {
    if (err instanceof NodeStoppedError) throw err;
    log.warn({ err: describeNetworkError(err) }, "cannot read the study's state; polling again");
    return 'running';
  }
}

/**
 * Refuses at start a study this node's policy forbids (forbidden features excepted: they are
 * dropped from its data): it could never train for it. Said to the coordinator, then the node stops.
 */
async function refuseForbiddenStudy(study: StudyState, policy: PolicyProfile, report: (s: StatusFacts) => Promise<void>, log: Logger) {
  const violations = checkStudyAgainstPolicy(study.config, policy, privacyFacts(study.config)).filter((v) => v.rule !== 'forbidden-feature');
  if (violations.length === 0) return;
  const message = `refusing to train: ${violations.map((v) => `${v.message} (rule ${v.rule})`).join('; ')}`;
  await reportSafely(report, { state: 'policy-refused', message }, log);
  throw stopped(log, 'policy-refused', `${message} (study ${study.studyId})`);
}

/**
 * After a refused fit task: a policy refusal is final (the study will not change), and so is a
 * privacy refusal before this node ever trained (its ledger only grows); a ceiling reached
 * mid-study leaves the node to finish the study's evaluations.
 */
async function stopIfFinal(permission: Extract<FitPermission, { allowed: false }>, client: CoordinatorClient, log: Logger) {
  if (permission.state === 'policy-refused') throw stopped(log, 'policy-refused', permission.message);
  if ((await client.me()).rounds === 0) throw stopped(log, 'privacy-refused', `${permission.message} (before this node's first round)`);
}

/** A status report that must not end the daemon when the coordinator cannot be reached: true when it was sent. */
async function reportSafely(report: (s: StatusFacts) => Promise<void>, status: StatusFacts, log: Logger): Promise<boolean> {
  try {
    await report(status);
    return true;
  } catch (err) {
    log.warn({ state: status.state, err: describeNetworkError(err) }, 'could not report the node status; will retry');
    return false;
  }
}

/** Identity, enrollment (or saved credentials) and the pinned coordinator key. */
async function connect(config: NodeConfig, jurisdiction: string, log: Logger) {
  mkdirSync(config.stateDir, { recursive: true });
  const client = new CoordinatorClient(config.coordinator, (what, attempt, err) => log.warn({ what, attempt, err: describeNetworkError(err) }, 'retrying'));
  const identity = await loadIdentity(config);
  log.info({ fingerprint: identity.fingerprint, created: identity.created }, 'node identity');
  const credentials = await loadOrEnroll(config, client, log, identity.publicKeyArmored, jurisdiction);
  client.authenticate(credentials.apiKey, identity.privateKey);
  const trust = await CoordinatorTrust.pinned(credentials, client, config.stateDir, log);
  return { client, credentials, trust };
}

/**
 * Status reports, through the release step (their `data` only if the study releases it); a state
 * is sent only when it changed: a refusal repeated every task says nothing new.
 */
function statusReporter(client: CoordinatorClient, release: Release) {
  let lastReported = '';
  return async (status: StatusFacts) => {
    const key = JSON.stringify([status.state, status.message ?? null]);
    if (status.state !== 'ready' && key === lastReported) return;
    await client.reportStatus(release.status(status));
    lastReported = key;
  };
}

/** A --spec that differs from the study's: this node's data is not what the study expects. */
async function refuseAnotherSpec(config: NodeConfig, study: StudyConfig, studyId: string, report: (s: StatusFacts) => Promise<void>) {
  const localSpec = config.spec ? readFeatureSpecFile(config.spec) : undefined;
  if (localSpec && !isDeepStrictEqual(FeatureSpec.parse(localSpec), study.features)) {
    const message = `the local spec ${config.spec} differs from study ${studyId}'s feature spec; refusing to train`;
    await report({ state: 'data-error', message });
    throw new Error(message);
  }
}

/** `fedmark node --withdraw`: leave the study for good; the coordinator logs it and excludes the node. */
export async function withdrawNode(config: NodeConfig, reason: string | undefined, log: Logger): Promise<void> {
  const { client, credentials } = await savedNode(config);
  await client.withdraw(reason);
  log.info({ nodeId: credentials.nodeId, studyId: credentials.studyId, reason }, 'withdrew from the study');
}

/**
 * `fedmark node --rotate-key`: a new key pair; the request registering it is signed by the old
 * key, which is then retired (kept, renamed, for the record).
 */
export async function rotateNodeKey(config: NodeConfig, log: Logger): Promise<{ fingerprint: string }> {
  const { client, identity, credentials } = await savedNode(config);
  // Staged first, promoted only once the coordinator has it: a run cut short is finished by the next.
  const next = await loadIdentity(config, 'identity.next');
  let result: { fingerprint: string };
  try {
    result = await client.rotateKey(next.publicKeyArmored);
  } catch (err) {
    // The coordinator may already hold the staged key (its answer to an earlier run was lost):
    // then the old key is refused and the staged one is accepted.
    if (!(err instanceof CoordinatorRefusal) || err.status !== 403) throw err;
    const probe = new CoordinatorClient(config.coordinator);
    probe.authenticate(credentials.apiKey, next.privateKey);
    await probe.study();
    result = { fingerprint: next.fingerprint };
  }
  renameSync(join(config.stateDir, 'identity'), join(config.stateDir, `identity.retired-${identity.fingerprint}`));
  renameSync(join(config.stateDir, 'identity.next'), join(config.stateDir, 'identity'));
  log.info({ nodeId: credentials.nodeId, oldFingerprint: identity.fingerprint, newFingerprint: next.fingerprint }, 'node key rotated');
  return result;
}
