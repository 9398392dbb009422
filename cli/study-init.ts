import { InvalidArgumentError, Option, type Command } from 'commander';
import YAML from 'yaml';
import { defaultRelease, StudyConfig } from '../protocols/messages.ts';
import type { PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { calibrateSigma, computeEpsilon } from '../protocols/privacy/index.ts';
import { NOISE_MULTIPLIER_FLOOR } from '../protocols/privacy/calibrate.ts';
import { addSpecOptions, describePlan, planSpec, specPlanOptions, type SpecPlan } from './spec-command.ts';

/**
 * `fedmark study init --data data.csv --target T`: a complete study YAML on stdout, every field
 * of StudyConfig spelled out with a one-line comment and its default, the inferred feature spec,
 * the flagged columns and the planned jurisdictions as comments. Defaults are never written by
 * hand: each is what StudyConfig fills in when the field is left out (defaultAt), so comments
 * cannot drift from the schema.
 */

/** Rounds a new study plans (StudyConfig has no default: the owner must choose). */
export const INIT_ROUNDS = 20;
/** Clip norm of the central-DP example (the demo's default). */
const INIT_CLIP = 0.5;
/** The total epsilon a DP study plans when no planned profile caps it. */
const INIT_BUDGET = 10;

/** One line per field: what it does and the values it takes. Keyed by dotted path. */
const FIELD_DOCS: Record<string, string> = {
  name: 'The study name shown to operators and partners (1-200 characters).',
  task: 'What the model predicts.',
  'task.kind': 'binary (classification of a yes/no target) or regression (of a numeric target).',
  'task.loss': 'Regression loss: mse, huber (robust to outliers), tweedie (spend-like targets: zeros and a heavy tail), log1p.',
  'task.huberDelta': 'Huber loss threshold in standardized target units (> 0).',
  'task.tweediePower': 'Tweedie power, in (1, 2).',
  model: 'The network every node trains.',
  'model.kind': 'mlp (ReLU hidden layers), logreg or linear (one dense layer).',
  'model.hidden': 'Hidden layer widths of the mlp (1-8 layers, each 1-4096).',
  strategy: 'How the coordinator aggregates updates: fedavg, fedprox (mu), fedavgm, fedadam, fedyogi, fedadagrad, trimmed-mean, median, krum (README, "Strategies").',
  'strategy.name': 'The aggregation strategy (see above); its parameters go beside name, e.g. { name: fedprox, mu: 0.01 }.',
  release: 'What nodes release, by name (RELEASE_FIELDS); the four required ones always. Optional.',
  features: 'The feature spec every node encodes with: columns, scaling, vocabularies (fedmark spec infer).',
  training: 'How each node trains locally in one round.',
  'training.localEpochs': 'Passes over the local data per round (integer 1-1000).',
  'training.batchSize': 'Rows per optimizer step (integer 1-65536).',
  'training.learningRate': 'Local learning rate (> 0, at most 10).',
  'training.optimizer': 'adam or sgd.',
  'training.validationFraction': "Share of each node's rows kept aside to evaluate the global model (0-0.5).",
  'training.seed': 'Seed of local training and of the train/validation split (integer >= 0).',
  'training.idColumn': 'A column holding a stable row id: keys the train/validation split. Optional.',
  rounds: 'Federated rounds (integer 1-100000). Required: no default.',
  minNodesPerRound: 'Fewest updates a round aggregates (integer >= 1).',
  minNodesToStart: 'Nodes enrolled and ready before round 1 opens. Optional; without it, minNodesPerRound.',
  roundDeadlineSeconds: 'Seconds nodes have, from a round\'s start, to submit their update (at most 604800).',
  evaluationDeadlineSeconds: 'Seconds nodes have to report their evaluation of a new model (at most 604800).',
  seed: 'Seed of the round-0 model (integer >= 0).',
  autoAdvance: 'true: the next round opens when one ends; false: an operator starts each round.',
  evaluationSchedule: "with-next-fit: nodes evaluate round r's model at the start of round r+1's fit task, which opens as soon as round r aggregates; own-phase (when absent): an evaluation phase of its own before the next round opens.",
  consent: 'Layered consent: the model\'s purpose (basic or personalization) and the column holding each row\'s consent. Optional.',
  privacy: 'Differential privacy: central (client-level) at the coordinator, DP-SGD on nodes, the study budget. Optional.',
  'privacy.accountant': 'Privacy accountant: rdp or pld.',
  'privacy.delta': 'Delta of the DP guarantees, in (0, 1).',
  'privacy.budgetEpsilon': 'Total client-level epsilon the study may spend; a round that would exceed it is refused.',
  'privacy.central': 'Central DP: node updates clipped, summed and noised at the coordinator.',
  'privacy.central.noiseMultiplier': 'Noise std / clip norm (>= 0.5); calibrate with fedmark privacy sigma.',
  'privacy.central.clipping': 'Clipping of node updates: { kind: fixed, norm } or adaptive.',
  'privacy.central.clipping.kind': 'fixed or adaptive.',
  'privacy.central.clipping.norm': 'L2 norm every update delta is clipped to (> 0).',
  'privacy.central.nodeSamplingRate': 'Probability each ready node is sampled into a round, in (0, 1].',
  bounds: 'Bounds on what one node may claim (README, "Node claims are bounded"); null turns them off (demos only).',
  'bounds.maxExamplesPerNode': "Cap on one node's aggregation weight, in examples.",
  'bounds.maxUpdateNorm': "Cap on the L2 norm of one update's delta (> 0).",
  'bounds.onOversizedUpdate': 'clip (scale down, audited) or refuse (400) an update over maxUpdateNorm.',
  'bounds.maxAbsWeight': 'A global model with any |weight| above this is never published (> 0).',
  jurisdictions: "The partners' jurisdictions (policy profiles); creation is refused if the study breaks one. Optional.",
  initFrom: "Warm start (quarterly recalibration): round 0 is that study's model (latest version unless version: N); same task, model and features. Or: study create --init-from STUDY[:VERSION]. Optional.",
};

type Path = readonly string[];

function getAt(value: unknown, path: Path): unknown {
  let v = value;
  for (const key of path) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  return v;
}

function withoutPath(config: unknown, path: Path): unknown {
  const copy = structuredClone(config) as Record<string, unknown>;
  const parent = getAt(copy, path.slice(0, -1)) as Record<string, unknown> | undefined;
  if (parent) delete parent[path[path.length - 1]];
  return copy;
}

/**
 * The value StudyConfig fills in at `path` when the field is left out of `config` (the field, or
 * failing that its parent object: a discriminant such as task.kind defaults with its object), or
 * undefined when the field is required or optional without a default.
 */
export function defaultAt(config: unknown, path: Path): unknown {
  for (const cut of [path, path.slice(0, -1)]) {
    if (cut.length === 0) continue;
    const parsed = StudyConfig.safeParse(withoutPath(config, cut));
    if (parsed.success) return getAt(parsed.data, path);
  }
  return undefined;
}

/** The central-DP settings the strictest planned profile accepts over `rounds` rounds, or undefined if none needs DP. */
export function centralDpFor(profiles: readonly PolicyProfile[], rounds: number, delta = 1e-5): Record<string, unknown> | undefined {
  const limits = (pick: (p: PolicyProfile) => number | undefined) => profiles.map(pick).filter((v): v is number => v !== undefined);
  const budget = Math.min(INIT_BUDGET, ...limits((p) => p.maxEpsilonTotal));
  let sigma = calibrateSigma({ q: 1, steps: rounds, delta, epsilon: budget });
  const perRound = limits((p) => p.maxEpsilonPerRound);
  if (perRound.length > 0 && computeEpsilon({ q: 1, sigma, steps: 1, delta }) > Math.min(...perRound)) sigma = calibrateSigma({ q: 1, steps: 1, delta, epsilon: Math.min(...perRound) });
  // Rounded up: more noise, never more epsilon than the budget allows.
  const noiseMultiplier = Math.max(NOISE_MULTIPLIER_FLOOR, Math.ceil(sigma * 1000) / 1000);
  return { budgetEpsilon: budget, central: { noiseMultiplier, clipping: { kind: 'fixed', norm: INIT_CLIP }, nodeSamplingRate: 1 } };
}

export interface StudyInitOptions {
  name: string;
  model: 'mlp' | 'logreg' | 'linear';
}

/** The config `study init` writes (values, before comments), parsed once to fill every default in. */
export function initialConfig(plan: SpecPlan, options: StudyInitOptions): Record<string, unknown> {
  const task = { kind: 'kind' in plan.spec.target ? 'regression' : 'binary' };
  const profiles = plan.jurisdictions;
  const minNodes = Math.max(2, ...profiles.map((p) => p.minNodesPerAggregate));
  const needsDp = profiles.filter((p) => p.dpRequired);
  const privacy = needsDp.length > 0 ? centralDpFor(profiles, INIT_ROUNDS) : undefined;
  if (privacy && task.kind === 'regression') {
    throw new InvalidArgumentError(`--task regression cannot run under DP, which ${needsDp.map((p) => p.jurisdiction).join(', ')} requires: plan a binary study, or other jurisdictions`);
  }
  const input = {
    name: options.name,
    task,
    model: { kind: options.model },
    features: plan.spec,
    rounds: INIT_ROUNDS,
    minNodesPerRound: minNodes,
    // Federated evaluation rides on the next round's fit tasks (issue 13): one task poll per node a round.
    evaluationSchedule: 'with-next-fit' as const,
    ...(privacy ? { privacy } : {}),
    ...(profiles.length > 0 ? { jurisdictions: profiles.map((p) => p.jurisdiction) } : {}),
  };
  const parsed = StudyConfig.safeParse(input);
  if (!parsed.success) throw new Error(`study init built an invalid config (a bug): ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  // `release` and `evaluation` are derived (the default release list; how evaluations leave): left out.
  const { release: _release, evaluation: _evaluation, ...full } = parsed.data;
  const training = { ...full.training };
  delete training.idColumn;
  return { ...full, training };
}

/** Commented-out examples of optional fields the config leaves out, by path. */
function optionalExamples(plan: SpecPlan, config: Record<string, unknown>): Record<string, unknown> {
  const idColumn = plan.flagged.find((f) => f.kind === 'id')?.column ?? 'customer_id';
  const consentColumn = plan.spec.features.find((f) => /consent/i.test(f.name))?.name ?? 'consent';
  return {
    // The DP-safe list (noised and public fields): valid with or without the privacy example.
    release: defaultRelease((config.privacy ?? centralDpFor([], INIT_ROUNDS)) as Parameters<typeof defaultRelease>[0]),
    'training.idColumn': idColumn,
    minNodesToStart: config.minNodesPerRound,
    consent: { purpose: 'basic', column: consentColumn },
    privacy: centralDpFor([], INIT_ROUNDS),
    jurisdictions: ['EU-GDPR'],
    initFrom: { study: 'study_LAST_QUARTER', version: 12 },
  };
}

const SCHEMA_ORDER = ['name', 'task', 'model', 'strategy', 'release', 'features', 'training', 'rounds', 'minNodesPerRound', 'minNodesToStart', 'roundDeadlineSeconds', 'evaluationDeadlineSeconds', 'seed', 'autoAdvance', 'evaluationSchedule', 'consent', 'privacy', 'bounds', 'jurisdictions', 'initFrom'];
// idColumn (a commented example) before seed: comments after a nested map's last key belong to the map, not to the next field.
const TRAINING_ORDER = ['localEpochs', 'batchSize', 'learningRate', 'optimizer', 'validationFraction', 'idColumn', 'seed'];

/** `key: value` as YAML lines, indented: nested values in flow style (`[32, 16]`), or in block style below the key. */
function yamlLines(key: string, value: unknown, indent: string, flow: boolean): string[] {
  const keyText = YAML.stringify(key).trimEnd();
  if (flow || value === null || typeof value !== 'object') {
    return [`${indent}${keyText}: ${YAML.stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trimEnd()}`];
  }
  const block = YAML.stringify(value, { lineWidth: 0 }).trimEnd().split('\n');
  return [`${indent}${keyText}:`, ...block.map((l) => `${indent}  ${l}`)];
}

function docFor(path: Path): string {
  const doc = FIELD_DOCS[path.join('.')];
  if (doc === undefined) throw new Error(`study init: no description for field ${path.join('.')} (add it to FIELD_DOCS)`);
  return doc;
}

/** The comment lines above a field: what it is, then its default (or that it has none). */
function commentLines(config: unknown, path: Path, value: unknown, indent: string, note?: string): string[] {
  const lines = [`${indent}# ${docFor(path)}`];
  const fallback = defaultAt(config, path);
  if (fallback !== undefined) lines.push(`${indent}# default: ${JSON.stringify(fallback)}${note ? ` (${note})` : JSON.stringify(fallback) !== JSON.stringify(value) ? ' (set for this study)' : ''}`);
  return lines;
}

function emitMap(out: string[], config: Record<string, unknown>, value: Record<string, unknown>, path: Path, examples: Record<string, unknown>, notes: Record<string, string>): void {
  const indent = '  '.repeat(path.length);
  const order = path.length === 0 ? SCHEMA_ORDER : path.join('.') === 'training' ? TRAINING_ORDER : Object.keys(value);
  for (const key of [...order, ...Object.keys(value).filter((k) => !order.includes(k))]) {
    const p = [...path, key];
    const id = p.join('.');
    if (!(key in value)) {
      if (id in examples && examples[id] !== undefined) out.push(`${indent}# ${docFor(p)}`, ...yamlLines(key, examples[id], '', true).map((l) => `${indent}# ${l}`));
      continue;
    }
    const v = value[key];
    if (id === 'features') out.push(...(notes.features ?? '').split('\n').filter(Boolean).map((l) => `${indent}# ${l}`));
    out.push(...commentLines(config, p, v, indent, notes[id]));
    const nested = v !== null && typeof v === 'object' && !Array.isArray(v) && id !== 'features';
    if (nested) {
      out.push(`${indent}${key}:`);
      emitMap(out, config, v as Record<string, unknown>, p, examples, notes);
    } else out.push(...yamlLines(key, v, indent, id !== 'features'));
  }
}

/** The whole commented YAML `study init` prints. */
export function studyInitYaml(plan: SpecPlan, options: StudyInitOptions): string {
  const config = initialConfig(plan, options);
  const notes: Record<string, string> = {};
  const planned = plan.jurisdictions.map((p) => `${p.jurisdiction} v${p.version}: at least ${p.minNodesPerAggregate} nodes per aggregate${p.dpRequired ? ', central DP required' : ''}${p.maxEpsilonPerRound !== undefined ? `, epsilon <= ${p.maxEpsilonPerRound} per round` : ''}${p.maxEpsilonTotal !== undefined ? `, <= ${p.maxEpsilonTotal} in total` : ''}${p.forbiddenFeatureCategories.length ? `; forbidden categories: ${p.forbiddenFeatureCategories.join(', ')}` : ''}`);
  if (plan.jurisdictions.length > 0) {
    const strictest = Math.max(...plan.jurisdictions.map((p) => p.minNodesPerAggregate));
    if (strictest > 2) notes.minNodesPerRound = `set to ${strictest} for the planned jurisdictions`;
  }
  notes.features = ['Columns to decide about (fedmark spec infer explains each):', ...describePlan(plan).slice(1)].join('\n');
  const out = [
    `# Study config written by \`fedmark study init\` from ${plan.file} (${plan.rows} rows).`,
    '# Every field is spelled out with its default; edit, then: fedmark study create --config <this file>',
    ...(planned.length ? ['# Planned jurisdictions (creation is refused if the study breaks one):', ...planned.map((l) => `#   ${l}`)] : ['# No jurisdiction planned: pass --jurisdiction to check sensitive columns and policies.']),
    '',
  ];
  emitMap(out, config, config, [], optionalExamples(plan, config), notes);
  return `${out.join('\n')}\n`;
}

/** `fedmark study init`: a complete, commented study YAML from a CSV (issue 12). Registered on `study` by cli/study-command.ts. */
export function registerStudyInit(study: Command): void {
  addSpecOptions(
    study
      .command('init')
      .description('write a complete, commented study YAML (every field with its default, the inferred feature spec, flagged columns) to stdout')
      .requiredOption('--data <file>', 'the CSV to infer the feature spec from (data the study owner may look at)'),
  )
    .addOption(new Option('--model <kind>', 'model: mlp (32-16), logreg or linear').choices(['mlp', 'logreg', 'linear']).default('mlp'))
    .option('--name <name>', 'study name (default: the data file name)')
    .option('--json', 'print one JSON object instead: yaml, config, flagged, excluded, missingMarkers')
    .action((opts: Record<string, unknown>) => {
      const plan = planSpec(specPlanOptions(opts.data as string, opts));
      const name = (opts.name as string | undefined) ?? (opts.data as string).replace(/^.*[\\/]/, '').replace(/\.[^.]*$/, '');
      const yaml = studyInitYaml(plan, { name, model: opts.model as StudyInitOptions['model'] });
      for (const line of describePlan(plan)) process.stderr.write(`${line}\n`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ yaml, config: YAML.parse(yaml), flagged: plan.flagged, excluded: plan.excluded, missingMarkers: plan.missingMarkers })}\n`);
      } else process.stdout.write(yaml);
    });
}
