import type { StudyConfig } from '../../protocols/messages.ts';
import { modelOutOfRange } from '../../protocols/model-bounds.ts';
import { describeSpecMismatch, specsOf, type TensorSpec, type WeightSet } from '../../protocols/tensors.ts';
import { decodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { Db } from '../db/database.ts';
import { AppError, BadRequestError, ConflictError, ForbiddenError } from '../errors.ts';
import type { Principal } from '../auth/principal.ts';
import { authorizeModelRead } from '../auth/visibility.ts';
import { regionHasNode } from '../nodes/repository.ts';
import { findModel, findStudyRow } from './repository.ts';

/**
 * Warm start (issue 9, "quarterly recalibration against actuals is a new study warm-started from
 * the last global model"): `initFrom: { study, version? }` makes a new study's round-0 model a
 * copy of another study's published model instead of the seeded one. The copy is byte-identical
 * (same FMW1 bytes, same sha256), re-signed by the coordinator like every model it publishes.
 *
 * Checked here, in this order, so a refusal never tells a caller more than it may read:
 *  1. the caller may read the source's weights (auth/visibility.ts authorizeModelRead: admin, or
 *     an analyst of a region with a node in it), a 403 naming initFrom.study otherwise;
 *  2. the source study and version exist (404 naming initFrom.study / initFrom.version);
 *  3. the stored bytes hash to the stored sha256 (409: the database was edited), and to
 *     initFrom.sha256 when the caller pinned one (400);
 *  4. same task kind and the same tensors (names and shapes: kind, model and encoded feature
 *     width), 400 naming initFrom and the first tensor that differs;
 *  5. every weight finite and within the new study's bounds.maxAbsWeight (the check every
 *     published model passes, protocols/model-bounds.ts), 400 otherwise.
 */

/** The source a study was warm-started from, as its config, audit entry and lineage record it. */
export interface InitSource {
  study: string;
  version: number;
  sha256: string;
}

export interface WarmStart {
  source: InitSource;
  /** The source model's exact bytes: the new study's version 0. */
  bytes: Uint8Array;
  /** Things that fit but look wrong (another feature list of the same width, another model config). */
  warnings: string[];
}

const refuse = (field: string, message: string) => new BadRequestError(`${field}: ${message}`, `body.${field}`, 'VALIDATION_FAILED');

/**
 * The model `config.initFrom` names, checked against `config` and readable by `caller`; null when
 * the study has no initFrom (round 0 is then the seeded model, as before).
 *
 * @example
 *   const warm = await loadWarmStart(db, config, principal, studyTensorSpecs(config));
 *   const bytes = warm?.bytes ?? encodeWeights(initialWeights(specs, config.seed));
 */
export async function loadWarmStart(db: Db, config: StudyConfig, caller: Principal, expected: TensorSpec[]): Promise<WarmStart | null> {
  const want = config.initFrom;
  if (!want) return null;
  try {
    await authorizeModelRead(caller, want.study, (region) => regionHasNode(db, want.study, region));
  } catch (err) {
    if (err instanceof ForbiddenError) throw new AppError(403, 'FORBIDDEN', `initFrom.study: ${err.message}`, 'body.initFrom.study');
    throw err;
  }
  const row = await findStudyRow(db, want.study);
  if (!row) throw new AppError(404, 'NOT_FOUND', `initFrom.study: study ${want.study} does not exist`, 'body.initFrom.study');
  const version = want.version ?? row.latest_model_version;
  const model = await findModel(db, want.study, version);
  if (!model) throw new AppError(404, 'NOT_FOUND', `initFrom.version: study ${want.study} has no model version ${version} (its latest is ${row.latest_model_version})`, 'body.initFrom.version');
  const bytes = new Uint8Array(model.weights);
  const sha256 = sha256Hex(bytes);
  const named = `the model of study ${want.study} version ${version}`;
  if (sha256 !== model.sha256) throw new ConflictError('INIT_FROM_CORRUPT', `initFrom: ${named} hashes to ${sha256}, but the coordinator recorded ${model.sha256}: its stored weights were changed`, 'body.initFrom');
  if (want.sha256 !== undefined && want.sha256 !== sha256) throw refuse('initFrom.sha256', `${named} has sha256 ${sha256}, not the pinned ${want.sha256}`);
  const source = sourceConfig(row.config);
  if (source.taskKind !== config.task.kind) throw refuse('initFrom', `${named} is a ${source.taskKind} model and this study is ${config.task.kind}: a warm start needs the same task kind, model and features`);
  checkWeights(named, decodeStored(named, bytes), config, expected);
  return { source: { study: want.study, version, sha256 }, bytes, warnings: lookAlikeWarnings(want.study, source, config) };
}

/** The source study's task, model and features, read loosely (an old stored config must not fail the read). */
function sourceConfig(stored: unknown) {
  const c = (stored ?? {}) as { task?: { kind?: string }; model?: unknown; features?: unknown };
  return { taskKind: c.task?.kind ?? 'binary', model: c.model, features: c.features };
}

function decodeStored(named: string, bytes: Uint8Array): WeightSet {
  try {
    return decodeWeights(bytes);
  } catch (err) {
    throw new ConflictError('INIT_FROM_CORRUPT', `initFrom: ${named} cannot be decoded: ${(err as Error).message}`, 'body.initFrom');
  }
}

/** Same tensors as the new study's round-0 model, and within its weight bound. */
function checkWeights(named: string, weights: WeightSet, config: StudyConfig, expected: TensorSpec[]): void {
  const mismatch = describeSpecMismatch(expected, specsOf(weights));
  if (mismatch) throw refuse('initFrom', `${named} does not fit this study (${config.task.kind}, model ${config.model.kind}): ${mismatch}; a warm start needs the same task kind, model and encoded feature width`);
  // bounds: null (the attack demo's legacy mode) still never starts from a non-finite weight.
  const maxAbs = config.bounds?.maxAbsWeight ?? Number.MAX_VALUE;
  const outOfRange = modelOutOfRange(weights, maxAbs);
  if (outOfRange) throw refuse('initFrom', `${named} is outside this study's bounds.maxAbsWeight ${maxAbs}: ${outOfRange}`);
}

/** Same tensors but another model or feature configuration: allowed (the operator may mean it), said. */
function lookAlikeWarnings(study: string, source: ReturnType<typeof sourceConfig>, config: StudyConfig): string[] {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const warnings: string[] = [];
  if (!same(source.features, config.features)) warnings.push(`initFrom: study ${study}'s features differ from this study's (same encoded width): each input of the warm-started model keeps the meaning it had there; check the features' order and encodings`);
  if (!same(source.model, config.model)) warnings.push(`initFrom: study ${study}'s model config differs from this study's (${JSON.stringify(source.model)}) though its tensors fit`);
  return warnings;
}

/** The initFrom a study's stored config records: the resolved version and the weights' sha256. */
export function recordedInitFrom(config: StudyConfig, warm: WarmStart | null): StudyConfig {
  return warm ? { ...config, initFrom: { ...warm.source } } : config;
}
