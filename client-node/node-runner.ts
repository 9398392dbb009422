import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isDeepStrictEqual } from 'node:util';
import { encodedWidth, FeatureSpec } from '../protocols/feature-spec.ts';
import type { DataReport, StudyConfig, Task, UpdateMeta } from '../protocols/messages.ts';
import { scoreHistogram } from '../protocols/metrics.ts';
import { modelTensorSpecs } from '../protocols/model-spec.ts';
import { decodeWeights, encodeWeights, sha256Hex } from '../protocols/weights-codec.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import {
  createModel,
  DataError,
  encodeTable,
  evaluateModel,
  getWeights,
  initBackend,
  readCsvTable,
  readFeatureSpecFile,
  setWeights,
  splitRows,
  subset,
  trainLocal,
  type EncodedData,
} from '../models/index.ts';
import { CoordinatorClient, CoordinatorRefusal } from './coordinator-client.ts';
import { NodePrivacyLedger } from './privacy-ledger.ts';
import { checkStudyAgainstPolicy, consentFilter, DEFAULT_POLICIES, featureColumns, PolicyProfile, privacyFacts, stricterOf } from '../protocols/policy/jurisdiction-policy.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { fingerprintOf, loadOrCreateIdentity, loadPublicKey, verifyArtifact, verifyKeyRotation } from '../protocols/crypto/index.ts';
import { trainDpSgd } from '../models/dp-sgd.ts';
import { dpSgdStepsPerRound } from '../protocols/privacy/study-privacy.ts';
import type { NodeConfig } from './config.ts';
import type { DataErrorKind } from '../models/errors.ts';

interface Credentials {
  coordinator: string;
  nodeId: string;
  apiKey: string;
  studyId: string;
  name: string;
  region: string;
  /** The jurisdiction the coordinator enrolled this node under (absent in credentials saved before it was recorded). */
  jurisdiction?: string;
  /** The coordinator key this node trusts (pinned at enrollment, moved only by a verified rotation). */
  coordinatorPublicKey: string;
  coordinatorFingerprint: string;
}

interface LoadedData {
  mtimeMs: number;
  train: EncodedData;
  validation: EncodedData;
  /** What is sent to the coordinator: counts only. */
  report: DataReport;
  /** Rows of the positive class: for this node's own log, never sent. */
  positives: number;
}

export interface NodeRunSummary {
  nodeId: string;
  roundsTrained: number;
  evaluations: number;
  bytesSent: number;
}

/**
 * The client node: enrolls once, then pulls tasks, trains on its own rows and sends back only
 * model weights and counts. Nothing here ever serializes a row.
 */
export async function runNode(config: NodeConfig, log: Logger, signal?: AbortSignal): Promise<NodeRunSummary> {
  // First, before anything is created or sent: a node that does not know which law its data
  // falls under must not train on it.
  const localPolicy = loadNodePolicy(config);
  const backend = await initBackend(config.backend);
  log.info({ backend }, 'tensorflow backend');
  mkdirSync(config.stateDir, { recursive: true });
  const client = new CoordinatorClient(config.coordinator, (what, attempt, err) =>
    log.warn({ what, attempt, err: describeNetworkError(err) }, 'retrying'),
  );
  const identity = await loadOrCreateIdentity(join(config.stateDir, 'identity'), { name: 'fedmark node', passphrase: config.keyPassphrase, expiresInSeconds: NODE_KEY_LIFETIME_SECONDS });
  log.info({ fingerprint: identity.fingerprint, created: identity.created }, 'node identity');
  const credentials = await loadOrEnroll(config, client, log, identity.publicKeyArmored, localPolicy.jurisdiction);
  client.authenticate(credentials.apiKey, identity.privateKey);
  let coordinatorKey = await loadPublicKey(credentials.coordinatorPublicKey);

  const { config: study } = await client.study();
  const localSpec = config.spec ? readFeatureSpecFile(config.spec) : undefined;
  if (localSpec && !isDeepStrictEqual(FeatureSpec.parse(localSpec), study.features)) {
    const message = `the local spec ${config.spec} differs from study ${credentials.studyId}'s feature spec; refusing to train`;
    await client.reportStatus({ state: 'data-error', message });
    throw new Error(message);
  }

  /**
   * The policy this node applies: its own profile combined with the version in force on the
   * coordinator, rule by rule the stricter (stricterOf). The coordinator can thus tighten what
   * the node accepts (a newer version of the law's profile) but never loosen it, so its answer
   * needs no trust; when it cannot be read, the node's own profile applies alone.
   */
  async function effectivePolicy(): Promise<PolicyProfile> {
    let remote: Awaited<ReturnType<CoordinatorClient['policy']>>;
    try {
      remote = await client.policy();
    } catch (err) {
      log.warn({ jurisdiction: localPolicy.jurisdiction, err: err instanceof Error ? err.message : String(err) }, "cannot read the coordinator's policy profile; applying this node's own");
      return localPolicy;
    }
    if (!remote.policy || remote.jurisdiction !== localPolicy.jurisdiction) {
      log.warn({ local: localPolicy.jurisdiction, coordinator: remote.jurisdiction }, "the coordinator has no profile for this node's jurisdiction; applying this node's own");
      return localPolicy;
    }
    if (remote.policy.version !== localPolicy.version || !isDeepStrictEqual(remote.policy, localPolicy)) {
      log.warn({ jurisdiction: localPolicy.jurisdiction, localVersion: localPolicy.version, coordinatorVersion: remote.policy.version }, "this node's policy profile differs from the coordinator's; applying the stricter of both, rule by rule");
    }
    return stricterOf(localPolicy, remote.policy);
  }
  let policy = await effectivePolicy();
  log.info({ jurisdiction: policy.jurisdiction, version: policy.version, dpRequired: policy.dpRequired, forbidden: policy.forbiddenFeatureCategories }, 'node policy');
  const model = createModel(study.model, encodedWidth(study.features));
  const specs = modelTensorSpecs(study.model, encodedWidth(study.features));
  const summary: NodeRunSummary = { nodeId: credentials.nodeId, roundsTrained: 0, evaluations: 0, bytesSent: 0 };
  let data: LoadedData | undefined;
  let lastError: string | undefined;
  let lastMtime = -1;
  let ceilingReached = false;
  /**
   * A node that cannot train (no usable data, a refused study, its privacy ceiling, a model it
   * will not load) waits longer after each such task, up to idleBackoffMaxSeconds, instead of
   * asking again at once: it told the coordinator its state, and a tight loop of signed requests
   * would only load the coordinator until the round's deadline.
   */
  let idleStreak = 0;
  async function backOff(reason: string) {
    idleStreak++;
    const seconds = Math.min(config.idleBackoffMaxSeconds, 2 ** Math.min(idleStreak - 1, 16));
    log.debug({ reason, seconds, idleStreak }, 'backing off');
    await pause(seconds * 1000, signal);
  }
  /** Sends a state only when it changed: a refusal repeated every task says nothing new. */
  let lastReported = '';
  async function report(status: Parameters<CoordinatorClient['reportStatus']>[0]) {
    const key = JSON.stringify([status.state, status.message ?? null]);
    if (status.state !== 'ready' && key === lastReported) return;
    await client.reportStatus(status);
    lastReported = key;
  }

  /** (Re)reads the CSV when it changed; a file that cannot be read means no training until it is fixed. */
  async function refreshData() {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(config.data).mtimeMs;
    } catch {
      mtimeMs = -2;
    }
    if (mtimeMs === lastMtime || ceilingReached) return;
    lastMtime = mtimeMs;
    try {
      data = loadData(config.data, study, mtimeMs, policy);
      lastError = undefined;
      log.info({ file: config.data, ...data.report, positives: data.positives, trainRows: data.train.n, validationRows: data.validation.n }, 'data loaded');
      await report({ state: 'ready', data: data.report });
    } catch (err) {
      data = undefined;
      lastError = `${config.data}: ${err instanceof Error ? err.message : String(err)}`;
      // The full message (which may quote a cell) stays in the node's own log; the coordinator
      // gets where the problem is and what kind it is, never a value from the file.
      log.error({ file: config.data, error: lastError }, 'data file cannot be used; not training until it is fixed');
      await report({ state: 'data-error', message: describeDataError(err) });
    }
  }

  /** Follows the coordinator's key rotations from the pinned key, each announcement verified by its predecessor. */
  async function followRotations(): Promise<boolean> {
    const info = await client.coordinatorKey();
    let moved = false;
    for (const rotation of info.rotations) {
      const next = await verifyKeyRotation(rotation.announcement, coordinatorKey);
      if (!next) continue;
      coordinatorKey = await loadPublicKey(next.newPublicKeyArmored);
      credentials.coordinatorPublicKey = next.newPublicKeyArmored;
      credentials.coordinatorFingerprint = next.fingerprint;
      moved = true;
      log.info({ from: next.oldFingerprint, to: next.fingerprint }, 'coordinator key rotation verified; now trusting the new key');
    }
    if (moved) saveCredentials(config.stateDir, credentials);
    return moved;
  }

  // The model a node evaluates at the end of round r is the one it trains from in round r+1:
  // kept (verified, by hash) so it is downloaded and checked once, not twice.
  let lastModel: { sha256: string; weights: WeightSet } | undefined;

  /** Downloads a global model and loads nothing the coordinator's key did not sign. */
  async function fetchGlobal(task: Task) {
    if (lastModel?.sha256 === task.modelSha256) return lastModel.weights;
    const weights = await downloadVerified(task);
    lastModel = { sha256: task.modelSha256, weights };
    return weights;
  }

  async function downloadVerified(task: Task) {
    const { bytes, signature } = await client.downloadModel(task.studyId, task.modelVersion);
    const sha = sha256Hex(bytes);
    if (sha !== task.modelSha256) throw new ModelSignatureError(`global model v${task.modelVersion} hash ${sha} does not match the task's ${task.modelSha256}; refusing to load it`);
    let verified = signature !== null && (await verifyArtifact(bytes, signature, coordinatorKey));
    if (!verified && signature !== null && (await followRotations())) verified = await verifyArtifact(bytes, signature, coordinatorKey);
    if (!verified) throw new ModelSignatureError(`global model v${task.modelVersion} of study ${task.studyId} is not signed by the coordinator key ${credentials.coordinatorFingerprint}; refusing to load it`);
    return decodeWeights(bytes, { expected: specs });
  }

  while (!signal?.aborted) {
    await refreshData();
    let task: Task | undefined;
    const asked = performance.now();
    try {
      task = await client.nextTask(config.pollSeconds);
    } catch (err) {
      if (err instanceof CoordinatorRefusal && err.status === 401) throw new Error(`the coordinator no longer accepts this node's key: ${err.message}`);
      // An outage longer than the client's retries: a daemon waits and tries again.
      log.warn({ err: describeNetworkError(err) }, 'cannot reach the coordinator; retrying in 5 s');
      await new Promise((r) => setTimeout(r, 5000));
      continue;
    }
    if (!task) {
      if (config.exitWhenDone && (await client.study().catch(() => undefined))?.state === 'completed') break;
      // A coordinator that answers "no task" at once (a short long-poll, or --poll-seconds 0)
      // is asked at most about once a second.
      await pause(1000 - (performance.now() - asked), signal);
      continue;
    }
    if (task.kind === 'fit') {
      // The profile in force may have changed since the last round: reread it (and the data,
      // whose forbidden features depend on it) before deciding anything.
      const next = await effectivePolicy();
      if (!isDeepStrictEqual(next, policy)) {
        log.info({ jurisdiction: next.jurisdiction, version: next.version }, 'node policy changed; rereading the data');
        policy = next;
        lastMtime = -1;
        await refreshData();
      }
    }
    if (!data) {
      log.warn({ round: task.round, error: lastError }, 'task skipped: no usable data');
      await backOff('no usable data');
      continue;
    }
    try {
      if (task.kind === 'fit') {
        // The node's own policy check, whatever the coordinator decided (forbidden features are
        // not a refusal: they were dropped from this node's data when it was loaded).
        const violations = checkStudyAgainstPolicy(task.config, policy, privacyFacts(task.config)).filter((v) => v.rule !== 'forbidden-feature');
        if (violations.length > 0) {
          const message = `refusing to train: ${violations.map((v) => v.message).join('; ')}`;
          log.warn({ round: task.round, violations }, message);
          await report({ state: 'policy-refused', message, data: data.report });
          ceilingReached = true;
          await backOff('policy refused');
          continue;
        }
        const dpSgd = task.config.privacy?.dpSgd;
        const accountant = task.config.privacy?.accountant ?? 'rdp';
        const ledger = NodePrivacyLedger.in(config.stateDir, accountant, config.maxEpsilonDelta);
        const spend = dpSgd ? { studyId: task.studyId, round: task.round, samplingRate: dpSgd.samplingRate, noiseMultiplier: dpSgd.noiseMultiplier, steps: dpSgdStepsPerRound(dpSgd) } : undefined;
        // The partner's ceiling, checked here before any training, whatever the coordinator says.
        if (config.maxEpsilon !== undefined) {
          const after = spend ? ledger.epsilonIf(spend) : Number.POSITIVE_INFINITY;
          if (after > config.maxEpsilon) {
            const message = spend
              ? `round ${task.round} would bring this node's data to epsilon ${after.toFixed(4)} (delta ${config.maxEpsilonDelta}), over its ceiling of ${config.maxEpsilon}; refusing to train`
              : `study ${task.studyId} does not run DP-SGD, so training would spend unbounded epsilon; this node's ceiling is ${config.maxEpsilon}; refusing to train`;
            log.warn({ round: task.round, epsilonAfter: after, ceiling: config.maxEpsilon }, message);
            await report({ state: 'privacy-ceiling', message, data: data.report });
            ceilingReached = true;
            await backOff('privacy ceiling');
            continue;
          }
        }
        setWeights(model, await fetchGlobal(task));
        const started = performance.now();
        let result: { loss: number; numExamples: number; steps: number };
        let privacy: UpdateMeta['dpSgd'];
        if (dpSgd && spend) {
          // Recorded before the update can leave: a crash after sending must not forget the spend.
          const before = ledger.epsilon();
          ledger.record(spend);
          const total = ledger.epsilon();
          const dp = await trainDpSgd(model, data.train, dpSgd);
          result = { loss: Number.isFinite(dp.loss) ? dp.loss : 0, numExamples: data.train.n, steps: dp.steps };
          privacy = { accountant, delta: config.maxEpsilonDelta, epsilonRound: total - before, epsilonTotal: total, noiseMultiplier: dpSgd.noiseMultiplier, samplingRate: dpSgd.samplingRate, steps: dp.steps, clipNorm: dpSgd.clipNorm };
          log.info({ round: task.round, epsilonRound: privacy.epsilonRound, epsilonTotal: total, delta: config.maxEpsilonDelta, clippedFraction: dp.clippedFraction, accountant }, 'DP-SGD privacy spent');
        } else {
          result = await trainLocal(model, data.train, task.config.training, { seed: task.config.training.seed + task.round });
        }
        const trainSeconds = (performance.now() - started) / 1000;
        const weights = getWeights(model);
        const body = encodeWeights(weights);
        const meta: UpdateMeta = { numExamples: result.numExamples, loss: result.loss, steps: result.steps, trainSeconds, data: data.report, ...(privacy ? { dpSgd: privacy } : {}) };
        const receipt = await client.submitUpdate(task.studyId, task.round, meta, body, coordinatorKey);
        summary.roundsTrained++;
        summary.bytesSent += body.length;
        // What left this node, said plainly: sizes and tensor names, never values or rows.
        log.info({ round: task.round, bytes: body.length, sha256: receipt.sha256, tensors: weights.map((w) => `${w.name}[${w.shape.join('x')}]`), numExamples: result.numExamples, loss: result.loss, trainSeconds }, 'sent model update');
      } else {
        setWeights(model, await fetchGlobal(task));
        const evaluation = evaluateModel(model, data.validation);
        const histogram = scoreHistogram(evaluation.scores, data.validation.y);
        await client.submitEvaluation(task.studyId, task.round, { numExamples: data.validation.n, loss: Number.isFinite(evaluation.loss) ? evaluation.loss : 0, histogram });
        summary.evaluations++;
        log.info({ round: task.round, validationRows: data.validation.n, localAuc: evaluation.auc }, 'sent evaluation (score histogram)');
      }
      idleStreak = 0;
    } catch (err) {
      if (err instanceof CoordinatorRefusal) log.warn({ round: task.round, kind: task.kind, status: err.status, code: err.code, reason: err.message }, 'coordinator refused');
      else if (err instanceof ModelSignatureError) log.error({ round: task.round, kind: task.kind, reason: err.message }, 'refused an unsigned or wrongly signed global model');
      // Not the coordinator's refusal: log it and carry on with the next task (a daemon must
      // survive a bad moment; the coordinator's deadline handles a round this node missed).
      else log.error({ round: task.round, kind: task.kind, err: err instanceof Error ? err.message : String(err) }, 'task failed');
      // The same task would come back at once and fail the same way.
      await backOff(err instanceof Error ? err.constructor.name : 'task failed');
    }
  }
  return summary;
}

/** Waits `ms` (nothing when <= 0), or less if `signal` aborts. */
async function pause(ms: number, signal?: AbortSignal) {
  if (ms <= 0 || signal?.aborted) return;
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}

/** A node without a jurisdiction or policy: it does not start (the message says what to give). */
export class NodePolicyRequiredError extends Error {}

/** The node's own profile: its --policy file, or the built-in one of its --jurisdiction. Required. */
export function loadNodePolicy(config: Pick<NodeConfig, 'policy' | 'jurisdiction'>): PolicyProfile {
  if (config.policy) {
    let profile: PolicyProfile;
    try {
      profile = PolicyProfile.parse(JSON.parse(readFileSync(config.policy, 'utf8')));
    } catch (err) {
      throw new NodePolicyRequiredError(`the policy file ${config.policy} cannot be used: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (config.jurisdiction && config.jurisdiction !== profile.jurisdiction) throw new NodePolicyRequiredError(`--jurisdiction ${config.jurisdiction} contradicts the policy file ${config.policy}, which is for ${profile.jurisdiction}`);
    return profile;
  }
  if (!config.jurisdiction) {
    throw new NodePolicyRequiredError(
      `this node has no jurisdiction: give --jurisdiction NAME (FEDMARK_NODE_JURISDICTION; built in: ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}) or --policy FILE. A node does not train on data without knowing which law it falls under.`,
    );
  }
  const builtIn = DEFAULT_POLICIES.find((p) => p.jurisdiction === config.jurisdiction);
  if (!builtIn) throw new NodePolicyRequiredError(`no built-in policy for jurisdiction ${config.jurisdiction} (built in: ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}); give --policy FILE`);
  return builtIn;
}

/**
 * Reads the node's CSV for a study: rows without consent for the study's purpose are left out,
 * features the node's policy forbids are zeroed (their information never reaches the model),
 * and the counts of both go into the report; the rows themselves never leave.
 */
function loadData(path: string, study: StudyConfig, mtimeMs: number, policy?: PolicyProfile): LoadedData {
  let table = readCsvTable({ path });
  let droppedNoConsent: number | undefined;
  if (study.consent) {
    const col = table.header.indexOf(study.consent.column);
    if (col < 0) throw new DataError('consent-column-missing', `the study needs consent column "${study.consent.column}", which ${path} does not have`, 1, study.consent.column);
    const { keep, dropped } = consentFilter(table.rows.map((r) => r[col]), study.consent.purpose, policy ?? { consentFor: { basic: ['basic', 'personalization'], personalization: ['personalization'] } });
    droppedNoConsent = dropped;
    const rows = keep.map((i) => table.rows[i]);
    const lines = keep.map((i) => table.lineOf(i));
    table = { header: table.header, rows, lineOf: (i: number) => lines[i] };
  }
  const all = encodeTable(table, study.features);
  const forbidden = policy ? study.features.features.filter((f) => f.category && policy.forbiddenFeatureCategories.includes(f.category)).map((f) => f.name) : [];
  if (forbidden.length > 0) {
    const columns = featureColumns(study.features);
    for (const name of forbidden) {
      const { offset, width } = columns.get(name)!;
      for (let r = 0; r < all.n; r++) all.x.fill(0, r * all.width + offset, r * all.width + offset + width);
    }
  }
  if (all.n === 0) throw new DataError('no-usable-rows', `no usable rows in ${path}${droppedNoConsent ? ` (${droppedNoConsent} left out for lack of consent)` : ''}`, 1);
  all.report = { ...all.report, ...(droppedNoConsent !== undefined ? { droppedNoConsent } : {}), ...(forbidden.length ? { droppedFeatures: forbidden } : {}) };
  const fraction = study.training.validationFraction;
  const [trainIdx, validationIdx] = fraction > 0 ? splitRows(all.n, [1 - fraction, fraction], study.training.seed, all.y) : [Array.from({ length: all.n }, (_, i) => i), []];
  if (trainIdx.length === 0) throw new DataError('no-usable-rows', `no usable rows in ${path} to train on after the validation split`, 1);
  // What the coordinator hears: counts of rows and of fixes, never a label statistic (the class
  // balance stays in this node's own log).
  const { positives: _classBalance, ...report } = all.report;
  return { mtimeMs, train: subset(all, trainIdx), validation: subset(all, validationIdx), report, positives: all.report.positives };
}

/** How each kind of data problem is named to the coordinator (every kind has words: the map is total). */
const DATA_ERROR_WORDS: Record<DataErrorKind, string> = {
  'csv-syntax': 'CSV syntax error',
  'empty-file': 'empty file',
  'duplicate-column': 'duplicate column name',
  'field-count': 'wrong number of fields',
  'missing-column': 'a column of the study is missing',
  'non-numeric': 'text in a numeric column',
  'missing-label': 'a row without a label',
  'consent-column-missing': 'consent column missing',
  'no-usable-rows': 'no usable rows',
};

/**
 * A data problem in words that carry no value from the file: line, column name, kind. The kind
 * was set where the error was thrown; the message (which may quote a cell, the path or column
 * names) is never looked at.
 */
/**
 * fetch() reports every network failure as "fetch failed" and keeps the reason (a refused
 * connection, an untrusted certificate, a DNS failure) in `cause`: a partner reading the log needs
 * the reason, so it is spelled out.
 */
export function describeNetworkError(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e && parts.length < 4; e = (e as { cause?: unknown }).cause) {
    if (!(e instanceof Error)) {
      parts.push(String(e));
      break;
    }
    const code = (e as { code?: unknown }).code;
    parts.push(typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
  }
  return parts.join(': ') || String(err);
}

export function describeDataError(err: unknown): string {
  if (!(err instanceof DataError)) return 'the data file cannot be read (details in the node log)';
  return `line ${err.line}${err.column ? `, column ${err.column}` : ''}: ${DATA_ERROR_WORDS[err.kind]} (details in the node's own log)`;
}

/** Node keys expire after a year; rotate with CoordinatorClient.rotateKey (a request signed by the old key). */
export const NODE_KEY_LIFETIME_SECONDS = 365 * 24 * 3600;

export class ModelSignatureError extends Error {}

function saveCredentials(stateDir: string, credentials: Credentials) {
  // The API key is a secret: readable by this user only.
  writeFileSync(join(stateDir, 'credentials.json'), JSON.stringify(credentials, null, 2), { mode: 0o600 });
}

async function loadOrEnroll(config: NodeConfig, client: CoordinatorClient, log: Logger, publicKey: string, jurisdiction: string): Promise<Credentials> {
  const file = join(config.stateDir, 'credentials.json');
  if (existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as Credentials;
    if (saved.coordinator === config.coordinator) {
      // The coordinator judges this node by the jurisdiction it enrolled under; a node now run
      // under another would check studies against a law the coordinator does not apply to it.
      if (saved.jurisdiction && saved.jurisdiction !== jurisdiction) throw new NodePolicyRequiredError(`this node enrolled under jurisdiction ${saved.jurisdiction} but now runs with ${jurisdiction}; run it with its enrolled jurisdiction or enroll again with a new token`);
      log.info({ nodeId: saved.nodeId, studyId: saved.studyId }, 'using saved node credentials');
      return saved;
    }
  }
  if (!config.token) throw new Error(`no saved credentials in ${config.stateDir} and no --token to enroll with`);
  const enrolled = await client.enroll(config.token, publicKey, jurisdiction);
  if (config.coordinatorKey) {
    const expected = await fingerprintOf(readFileSync(config.coordinatorKey, 'utf8'));
    if (expected !== enrolled.coordinatorFingerprint) throw new Error(`the coordinator presented key ${enrolled.coordinatorFingerprint}, not the pinned ${expected} from ${config.coordinatorKey}; refusing to work with it`);
  }
  const credentials: Credentials = { coordinator: config.coordinator, ...enrolled, jurisdiction: enrolled.jurisdiction ?? jurisdiction };
  saveCredentials(config.stateDir, credentials);
  log.info({ nodeId: enrolled.nodeId, studyId: enrolled.studyId, name: enrolled.name, region: enrolled.region, jurisdiction: credentials.jurisdiction }, 'enrolled');
  return credentials;
}

/** Reloads this node's saved identity and credentials for a one-off action (withdraw, rotate). */
async function savedNode(config: NodeConfig) {
  const file = join(config.stateDir, 'credentials.json');
  if (!existsSync(file)) throw new Error(`no saved credentials in ${config.stateDir}: this node never enrolled`);
  const credentials = JSON.parse(readFileSync(file, 'utf8')) as Credentials;
  const identity = await loadOrCreateIdentity(join(config.stateDir, 'identity'), { name: 'fedmark node', passphrase: config.keyPassphrase, expiresInSeconds: NODE_KEY_LIFETIME_SECONDS });
  const client = new CoordinatorClient(config.coordinator);
  client.authenticate(credentials.apiKey, identity.privateKey);
  return { credentials, identity, client };
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
  const staging = join(config.stateDir, 'identity.next');
  const next = await loadOrCreateIdentity(staging, { name: 'fedmark node', passphrase: config.keyPassphrase, expiresInSeconds: NODE_KEY_LIFETIME_SECONDS });
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
  renameSync(staging, join(config.stateDir, 'identity'));
  log.info({ nodeId: credentials.nodeId, oldFingerprint: identity.fingerprint, newFingerprint: next.fingerprint }, 'node key rotated');
  return result;
}
