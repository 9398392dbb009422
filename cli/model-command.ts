import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { addCoordinatorOptions, coordinatorClient, type CoordinatorClient, type CoordinatorOptions } from './api-client.ts';
import type { StudyStatus } from '../protocols/messages.ts';
import type { Lineage, PrivacyLineage } from '../models/export-lineage.ts';
import type { ModelStatement } from '../models/export-statement.ts';

/**
 * `fedmark model export|verify` and `fedmark predict` (issue 12): the global model as files people
 * can use (TensorFlow.js LayersModel, preprocessing, lineage), scoring a CSV with them, and
 * checking a model's signature and lineage. Heavy modules (tfjs, openpgp) load inside the actions,
 * so `--help` stays fast.
 */
export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('export the global model for use outside fedmark, and verify an exported or published model');
  registerExport(model);
  registerVerify(model);
  registerPredict(program);
}

const versionParser = (raw: string) => {
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(v) || v < 0) throw new InvalidArgumentError(`--version must be a non-negative integer (a model version), got "${raw}"`);
  return v;
};

interface ExportOptions extends CoordinatorOptions {
  study: string;
  version?: number;
  format: 'tfjs';
  out: string;
  fingerprint?: string;
}

function registerExport(model: Command): void {
  const cmd = model
    .command('export')
    .description("download a study's signed global model, check the coordinator's signature, and write it as a TensorFlow.js LayersModel with its preprocessing and lineage")
    .requiredOption('--study <id>', 'study id')
    .option('--version <v>', 'model version (default: the latest); version r is the model aggregated in round r', versionParser)
    .addOption(new Option('--format <format>', 'export format').choices(['tfjs']).makeOptionMandatory())
    .requiredOption('--out <dir>', 'folder to write model.json, weights.bin, preprocessing.json, lineage.json (and model.fmw, its signature and the coordinator key, for verify)')
    .option('--fingerprint <fpr>', "the coordinator key fingerprint published by the operator: refuse a model signed by any other key");
  addCoordinatorOptions(cmd).action(async (opts: ExportOptions) => {
    const api = coordinatorClient(opts);
    const fetched = await fetchVerifiedModel(api, opts.study, opts.version, opts.fingerprint);
    const lineage = await lineageOf(api, fetched);
    const { lineageProblem } = await import('../models/export-lineage.ts');
    const problem = lineageProblem(lineage);
    if (problem !== null) throw new Error(`refusing to write lineage.json: the coordinator's answers do not fit the lineage schema, ${problem}`);
    const { buildTfjsExport, EXPORT_FILES } = await import('../models/export-tfjs.ts');
    const built = await buildTfjsExport(lineage.config, fetched.bytes);
    mkdirSync(opts.out, { recursive: true });
    const write = (file: string, data: string | Uint8Array) => writeFileSync(join(opts.out, file), data);
    write(EXPORT_FILES.modelJson, JSON.stringify(built.modelJson, null, 2) + '\n');
    write(EXPORT_FILES.weights, built.weights);
    write(EXPORT_FILES.preprocessing, JSON.stringify(built.preprocessing, null, 2) + '\n');
    write(EXPORT_FILES.signedModel, fetched.bytes);
    write(EXPORT_FILES.signature, fetched.signature);
    write(EXPORT_FILES.coordinatorKey, fetched.key.publicKey);
    write(EXPORT_FILES.statement, fetched.statementBytes);
    write(EXPORT_FILES.statementSignature, fetched.statementSignature);
    write(EXPORT_FILES.lineage, JSON.stringify(lineage, null, 2) + '\n');
    const summary = { out: opts.out, studyId: lineage.study.id, modelVersion: lineage.modelVersion, round: lineage.round, modelSha256: lineage.modelSha256, fingerprint: lineage.coordinator.fingerprint, files: Object.values(EXPORT_FILES) };
    if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stdout.write(`exported model v${lineage.modelVersion} of study ${lineage.study.name} (${lineage.study.id}), sha256 ${lineage.modelSha256}, signed by coordinator key ${lineage.coordinator.fingerprint}, to ${opts.out}\n` + `load it with tf.loadLayersModel('file://${join(opts.out, EXPORT_FILES.modelJson)}') (see README, "Use the model"), score a CSV with fedmark predict --model ${opts.out}\n`);
  });
}

interface VerifyOptions extends CoordinatorOptions {
  model?: string;
  study?: string;
  version?: number;
  fingerprint?: string;
  key?: string;
  allowUnsignedLineage?: boolean;
}

function registerVerify(model: Command): void {
  const cmd = model
    .command('verify')
    .description("check a model's signature and weights and print its lineage: an export folder offline (--model), or a study's published model online (--study)")
    .option('--model <dir>', 'export folder (fedmark model export): checked offline, no coordinator needed')
    .option('--study <id>', "study id: download its model and check it against the coordinator's key")
    .option('--version <v>', 'with --study: model version (default: the latest)', versionParser)
    .option('--fingerprint <fpr>', 'the coordinator key fingerprint published by the operator; without it (or --key), --model trusts the key inside the folder')
    .option('--key <file>', "with --model: the coordinator's armored public key to check the signature with (instead of the folder's)")
    .option('--allow-unsigned-lineage', 'with --model: accept an export from before signed model statements, printing its lineage as unverified (the weights are still checked)')
    .addHelpText('after', '\nExit codes: 0 verified, 1 a mismatch (the reason is printed: a changed weight, a wrong key, another hash) or the coordinator cannot be read, 2 --model/--study/--key/--version given together wrongly.');
  addCoordinatorOptions(cmd).action(async (opts: VerifyOptions) => {
    // Usage mistakes exit 2, so that a script can tell them from a model that fails its checks (1).
    const usage = (message: string) => cmd.error(`fedmark model verify: ${message}`, { exitCode: 2 });
    if ((opts.model === undefined) === (opts.study === undefined)) usage('give either --model DIR (an export, offline) or --study ID (online)');
    if (opts.model !== undefined && opts.version !== undefined) usage('--version goes with --study; an export folder holds one version');
    if (opts.study !== undefined && opts.key !== undefined) usage("--key goes with --model; online, the key is the coordinator's (pin it with --fingerprint)");
    if (opts.study !== undefined && opts.allowUnsignedLineage) usage('--allow-unsigned-lineage goes with --model; online, the coordinator serves a signed statement');
    let lineage: Lineage;
    let trustNote: string;
    let statement: ModelStatement | null;
    try {
      if (opts.model !== undefined) {
        const { verifyExportFolder } = await import('../models/export-lineage.ts');
        const publicKey = opts.key === undefined ? undefined : readKeyFile(opts.key);
        const verified = await verifyExportFolder(opts.model, { publicKey, fingerprint: opts.fingerprint }, { allowUnsignedLineage: opts.allowUnsignedLineage });
        lineage = verified.lineage;
        statement = verified.statement;
        trustNote = verified.pinned ? `coordinator key ${verified.fingerprint} (${opts.key ? '--key' : 'matches --fingerprint'})` : `coordinator key ${verified.fingerprint} from the folder itself (pass --fingerprint or --key to check it against the published one)`;
      } else {
        const api = coordinatorClient(opts);
        const fetched = await fetchVerifiedModel(api, opts.study!, opts.version, opts.fingerprint);
        lineage = await lineageOf(api, fetched);
        statement = fetched.statement;
        trustNote = `coordinator key ${fetched.key.fingerprint} as served by ${api.url}${opts.fingerprint ? ' (matches --fingerprint)' : ' (pass --fingerprint to pin it)'}`;
      }
    } catch (err) {
      if (!(err instanceof VerificationFailure) && (err as Error).name !== 'ExportVerificationError') throw err;
      process.stderr.write(`FAILED: ${(err as Error).message}\n`);
      process.exitCode = 1;
      return;
    }
    printLineage(lineage, statement, trustNote, opts.json);
  });
}

function readKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`--key ${path}: cannot read it (${(err as Error).message})`);
  }
}

/**
 * Prints a verified model's lineage in two parts: what the coordinator's signed statement covers
 * (study, version, round, model hash, configuration hence name, task, model, privacy mechanisms),
 * and what it does not (participants, rounds, epsilon, metrics: as the coordinator's API reported
 * them at export time). Without a statement (an old export read with --allow-unsigned-lineage)
 * everything but the weights is unverified.
 */
function printLineage(lineage: Lineage, statement: ModelStatement | null, trustNote: string, json?: boolean): void {
  const { config: _config, signature: _signature, ...shown } = lineage;
  if (json) {
    process.stdout.write(JSON.stringify({ ok: true, trust: trustNote, lineageSigned: statement !== null, statement, notSigned: ['participants', 'rounds', 'privacy.epsilon', 'privacy.dpSgdEpsilon', 'privacy.accountant', 'privacy.delta', 'privacy.budgetEpsilon'], ...shown }) + '\n');
    return;
  }
  const out = (line: string) => process.stdout.write(line + '\n');
  out(`OK: model v${lineage.modelVersion} of study ${lineage.study.name} (${lineage.study.id}), sha256 ${lineage.modelSha256}`);
  out(`signed by ${trustNote}`);
  if (statement) out(`signed statement: study ${statement.studyId}, model v${statement.modelVersion}, round ${statement.round}, config sha256 ${statement.configSha256} (study name, task, model, features and encoding, privacy mechanisms)`);
  else out('UNVERIFIED LINEAGE: this export predates signed model statements; only the weights are checked, the study id, version, round and configuration below are as written in lineage.json');
  out(`round ${lineage.round}; strategy ${(lineage.strategy as { name?: string }).name ?? '?'}; ${(lineage.task as { kind?: string }).kind ?? '?'} task, ${(lineage.model as { kind?: string }).kind ?? '?'} model`);
  out(`privacy: ${lineage.privacy.mechanisms.join('; ')}`);
  if (lineage.initializedFrom) out(lineage.initializedFrom);
  out("not signed: as reported by the coordinator's API at export time");
  const names = lineage.participants.map((p) => (p.name ? `${p.name}${p.region ? ` (${p.region})` : ''}` : p.id));
  out(`  participants (${names.length}): ${names.join(', ') || 'none'}`);
  const p = lineage.privacy;
  if (p.epsilon !== null || p.dpSgdEpsilon !== null) {
    out(`  epsilon: ${p.epsilon !== null ? `client-level ${p.epsilon.toFixed(3)}` : 'client-level not visible'}${p.budgetEpsilon !== null ? ` of a budget of ${p.budgetEpsilon}` : ''}${p.dpSgdEpsilon !== null ? `, record-level (DP-SGD) up to ${p.dpSgdEpsilon.toFixed(3)}` : ''}${p.delta !== null ? `, delta ${p.delta}` : ''}`);
  }
  const last = lineage.rounds.find((r) => r.round === lineage.round);
  if (last?.validationMetrics) out(`  validation at round ${last.round}: ${Object.entries(last.validationMetrics).map(([k, v]) => `${k} ${v === null ? 'n/a' : +v.toFixed(4)}`).join(', ')}`);
}

/** A published model that fails a check: wrong hash, wrong or missing signature, unpinned key. */
class VerificationFailure extends Error {}

interface FetchedModel {
  studyId: string;
  version: number;
  bytes: Uint8Array;
  sha256: string;
  signature: string;
  key: { fingerprint: string; publicKey: string };
  status: StudyStatus;
  url: string;
  statement: ModelStatement;
  /** The statement's exact signed bytes and the coordinator's armored signature over them. */
  statementBytes: Uint8Array;
  statementSignature: string;
}

/** Downloads a model and checks its hash and the coordinator's signature (and the pin, if any). */
async function fetchVerifiedModel(api: CoordinatorClient, studyId: string, version: number | undefined, pin: string | undefined): Promise<FetchedModel> {
  const { verifyArtifact } = await import('../protocols/crypto/index.ts');
  const { sha256Hex } = await import('../protocols/weights-codec.ts');
  const key = await api.get<{ fingerprint: string; publicKey: string }>('/v1/coordinator/key');
  if (pin !== undefined && pin.toLowerCase() !== key.fingerprint) throw new VerificationFailure(`the coordinator at ${api.url} serves key ${key.fingerprint}, not the pinned --fingerprint ${pin}`);
  const status = await api.get<StudyStatus>(`/v1/studies/${encodeURIComponent(studyId)}`);
  const res = await api.raw(`/v1/studies/${encodeURIComponent(studyId)}/${version === undefined ? 'model' : `models/${version}`}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const sha256 = sha256Hex(bytes);
  const v = Number(res.headers.get('fedmark-model-version'));
  const claimed = res.headers.get('fedmark-sha256');
  if (claimed !== sha256) throw new VerificationFailure(`model v${v} of study ${studyId}: the body hashes to ${sha256}, the coordinator says ${claimed}`);
  const header = res.headers.get('fedmark-model-signature');
  if (!header) throw new VerificationFailure(`model v${v} of study ${studyId} comes without a signature`);
  const signature = Buffer.from(header, 'base64').toString('utf8');
  if (!(await verifyArtifact(bytes, signature, key.publicKey))) throw new VerificationFailure(`model v${v} of study ${studyId} (sha256 ${sha256}) is not signed by the coordinator key ${key.fingerprint}`);
  const statement = await fetchedStatement(res.headers, { studyId, version, headerVersion: v, sha256, key, status });
  return { studyId, version: statement.statement.modelVersion, bytes, sha256, signature, key, status, url: api.url, ...statement };
}

/**
 * The signed statement served with a model, checked: by the coordinator's key, for this model's
 * hash, the study and version asked for (the latest: the status's latest version, so an older
 * model passed off as the latest is refused), and the configuration the lineage will hold.
 */
async function fetchedStatement(headers: Headers, m: { studyId: string; version: number | undefined; headerVersion: number; sha256: string; key: { fingerprint: string; publicKey: string }; status: StudyStatus }) {
  const { checkStatement, MODEL_STATEMENT_HEADERS } = await import('../models/export-statement.ts');
  const rawStatement = headers.get(MODEL_STATEMENT_HEADERS.statement);
  const rawSignature = headers.get(MODEL_STATEMENT_HEADERS.signature);
  if (!rawStatement || !rawSignature) throw new VerificationFailure(`model v${m.headerVersion} of study ${m.studyId} comes without a signed model statement (${MODEL_STATEMENT_HEADERS.statement}): the coordinator predates signed statements, or something between removed it`);
  const statementBytes = new Uint8Array(Buffer.from(rawStatement, 'base64'));
  const statementSignature = Buffer.from(rawSignature, 'base64').toString('utf8');
  const expectedVersion = m.version ?? m.status.latestModelVersion;
  let statement;
  try {
    statement = await checkStatement(statementBytes, statementSignature, m.key.publicKey, { studyId: m.studyId, modelVersion: expectedVersion, modelSha256: m.sha256, config: m.status.config, fingerprint: m.key.fingerprint, source: "the coordinator's API" });
  } catch (err) {
    throw new VerificationFailure(`model of study ${m.studyId} (${m.version === undefined ? `the latest, v${expectedVersion} by the study's status` : `v${m.version}`}, served as v${m.headerVersion}): ${(err as Error).message}`);
  }
  if (statement.modelVersion !== m.headerVersion) throw new VerificationFailure(`model of study ${m.studyId}: the signed statement says version ${statement.modelVersion}, the fedmark-model-version header ${m.headerVersion}`);
  return { statement, statementBytes, statementSignature };
}

/** lineage.json of a verified model: its round, the rounds before, participants, privacy. */
async function lineageOf(api: CoordinatorClient, m: FetchedModel): Promise<Lineage> {
  const { initialModelLine, privacyMechanisms } = await import('../models/export-lineage.ts');
  const { StudyConfig } = await import('../protocols/messages.ts');
  const config = StudyConfig.parse(m.status.config);
  const rounds = m.status.rounds.filter((r) => r.round >= 1 && r.round <= m.version).sort((a, b) => a.round - b.round);
  const ids = [...new Set(rounds.flatMap((r) => r.participants))];
  const nodes = new Map(m.status.nodes.map((n) => [n.id, n]));
  return {
    format: 'fedmark-lineage',
    version: 1,
    study: { id: m.status.id, name: m.status.name },
    modelVersion: m.version,
    round: m.version,
    modelSha256: m.sha256,
    signature: m.signature,
    coordinator: { url: m.url, fingerprint: m.key.fingerprint },
    task: config.task,
    model: config.model,
    strategy: config.strategy,
    privacy: { mechanisms: privacyMechanisms(config), ...(await privacyFigures(api, m)) },
    participants: ids.map((id) => ({ id, name: nodes.get(id)?.name ?? null, region: nodes.get(id)?.region ?? null })),
    rounds: rounds.map((r) => ({ round: r.round, participants: r.participants, updatesReceived: r.updatesReceived, validationMetrics: r.validationMetrics ?? null })),
    exportedAt: new Date().toISOString(),
    config,
    initializedFrom: initialModelLine(config),
  };
}

interface PrivacyBody {
  accountant: string | null;
  delta: number | null;
  budgetEpsilon: number | null;
  central: unknown;
  rounds: Array<{ round: number; epsilonTotal: number }>;
  nodes: Array<{ dpSgd: { rounds: Array<{ round: number; epsilonTotal: number }> } | null }>;
}

/** Epsilon spent up to the model's round, as far as the token may read the privacy report. */
async function privacyFigures(api: CoordinatorClient, m: FetchedModel): Promise<Omit<PrivacyLineage, 'mechanisms'>> {
  let report: PrivacyBody;
  try {
    report = await api.get<PrivacyBody>(`/v1/studies/${encodeURIComponent(m.studyId)}/privacy`);
  } catch {
    // Not readable with this token: the lineage says so with nulls rather than failing the export.
    return { accountant: null, delta: null, budgetEpsilon: null, epsilon: null, dpSgdEpsilon: null };
  }
  const upTo = <T extends { round: number }>(rows: T[]) => rows.filter((r) => r.round <= m.version);
  // Under central DP, a model before any charged round (version 0) has spent nothing yet.
  const central = upTo(report.rounds ?? []).at(-1)?.epsilonTotal ?? (report.central ? 0 : null);
  const dpSgd = (report.nodes ?? []).flatMap((n) => upTo(n.dpSgd?.rounds ?? [])).map((r) => r.epsilonTotal);
  return { accountant: report.accountant, delta: report.delta, budgetEpsilon: report.budgetEpsilon, epsilon: central, dpSgdEpsilon: dpSgd.length ? Math.max(...dpSgd) : null };
}

interface PredictOptions {
  model: string;
  data: string;
  out: string;
  idColumn?: string;
  json?: boolean;
}

function registerPredict(program: Command): void {
  program
    .command('predict')
    .description('score a CSV with an exported model (fedmark model export): the same encoding as the nodes, then the model; writes the input columns plus `score`')
    .requiredOption('--model <dir>', 'export folder (model.json, weights.bin, preprocessing.json)')
    .requiredOption('--data <file>', 'CSV to score, with a header row naming the feature columns (the target column is not needed)')
    .requiredOption('--out <file>', 'CSV to write: the input columns (or only --id-column) and `score`: the probability of the positive class (binary) or the prediction on the target\'s scale (regression)')
    .option('--id-column <column>', 'write only this column and `score`')
    .option('--json', 'print a JSON summary on stdout (rows, encoding report, metrics when the CSV holds the target)')
    .action(async (opts: PredictOptions) => runPredict(opts));
}

async function runPredict(opts: PredictOptions): Promise<void> {
  const { readCsvTable, writeCsvTable } = await import('../models/csv-table.ts');
  const { loadExport, scoreTable } = await import('../models/predict.ts');
  const { DataError } = await import('../models/errors.ts');
  const loaded = await loadExport(opts.model);
  let table;
  let scored;
  try {
    table = readCsvTable({ path: opts.data });
    if (opts.idColumn !== undefined && !table.header.includes(opts.idColumn)) throw new DataError('missing-column', `line 1: --id-column ${JSON.stringify(opts.idColumn)} is not a column (columns: ${table.header.join(', ')})`, 1, opts.idColumn);
    if (opts.idColumn === undefined && table.header.includes('score')) throw new DataError('duplicate-column', 'line 1: the CSV already has a "score" column; rename it or pass --id-column', 1, 'score');
    scored = scoreTable(loaded, table);
  } catch (err) {
    // DataError messages name the line and column; the file name makes them self-contained.
    if (err instanceof DataError && !err.message.startsWith(opts.data)) throw new Error(`${opts.data}: ${err.message}`);
    throw err;
  }
  const at = opts.idColumn === undefined ? -1 : table.header.indexOf(opts.idColumn);
  const header = at < 0 ? [...table.header, 'score'] : [opts.idColumn!, 'score'];
  const rows = table.rows.map((r, i) => [...(at < 0 ? r : [r[at]]), String(scored.scores[i])]);
  writeCsvTable(opts.out, header, rows);
  loaded.model.dispose();
  const summary = { out: opts.out, rows: rows.length, task: loaded.preprocessing.output.kind, missingFilled: scored.report.missingFilled, unseenCategories: scored.report.unseenCategories, metrics: scored.metrics ?? null };
  if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    process.stdout.write(`scored ${rows.length} rows into ${opts.out}\n`);
    if (scored.metrics) process.stdout.write(`against the target column: ${Object.entries(scored.metrics).map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
  }
}
