import {
  DataReport,
  DP_UPDATE_COUNT,
  EVALUATION_RELEASE,
  EvaluationReport,
  NodeStatusReport,
  ReleaseList,
  releaseMechanism,
  STATUS_RELEASE,
  UPDATE_META_RELEASE,
  UpdateMeta,
  type NodePrivacySpend,
  type ReleaseField,
  type StudyConfig,
} from '../protocols/messages.ts';
import { isNoised, modelKind, statsRows, type EvaluationStats, type KindName } from '../protocols/model-kinds/kind.ts';
import { hasDp, type StudyPrivacy } from '../protocols/privacy/study-privacy.ts';
import { specsOf, type WeightSet } from '../protocols/tensors.ts';

/**
 * The release step: the ONLY code that builds what leaves this node about its data (an update's
 * metadata, an evaluation report, the `data` of a status report). It takes everything the node
 * knows and keeps, field by field, only what the study's `release` list names (RELEASE_FIELDS in
 * protocols/messages.ts); the result is parsed with the protocol's strict schemas, so nothing
 * else can ride along. The weights ('update.weights', required) go through here too: only the
 * tensors the study's model kind shares leave (all of them for binary and regression; a kind
 * with per-user factors keeps those); then they are sealed and sent by the coordinator client.
 *
 *   the model's shared tensors    update.weights          (required)
 *   UpdateMeta.numExamples        update.numExamples      (required)
 *   UpdateMeta.loss               update.loss
 *   UpdateMeta.steps              update.steps
 *   UpdateMeta.trainSeconds       update.trainSeconds
 *   UpdateMeta.data               update.data
 *   UpdateMeta.dpSgd              update.dpSgd
 *   EvaluationReport.numExamples  evaluation.numExamples  (required)
 *   EvaluationReport.stats        evaluation.stats        (required)
 *   EvaluationReport.loss         evaluation.loss
 *   EvaluationReport.personalized evaluation.personalized (--personalize, final round; personalize.ts)
 *   NodeStatusReport.data         status.data
 *   NodeStatusReport.state/message: the node's state and why, in words with no value from its
 *   data (describeDataError, policy and ceiling refusals): protocol, not a release.
 *
 * Under DP (issue 10; RELEASE_UNDER_DP in protocols/messages.ts) a field leaves only if it is
 * noised (the weights, evaluation.stats and the count derived from it), public by construction
 * (update.numExamples is the constant 1, update.dpSgd) or declared public by the study.
 */

export { DP_UPDATE_COUNT, EVALUATION_RELEASE, STATUS_RELEASE, UPDATE_META_RELEASE };


declare const released: unique symbol;
/** A message built by the release step; the coordinator client sends nothing else. */
export type Released<T> = T & { readonly [released]: true };

/** What the node knows after training (more than it may say). */
export interface TrainedFacts {
  numExamples: number;
  loss: number;
  steps: number;
  trainSeconds: number;
  /** The node's DP-SGD spending this round, when it trained with DP-SGD. */
  dpSgd?: NodePrivacySpend;
  /** The counts of its data (possibly with local-only extras: only DataReport's fields are kept). */
  data: DataReport;
}

/** What the node knows after evaluating a global model. */
export interface EvaluatedFacts {
  /** Under DP: the sum of the noised counts, clamped at 0 (never the node's row count). */
  numExamples: number;
  /** Under DP: what this evaluation cost the node's ledger (logged on the node; not sent). */
  spent?: { epsilonEvaluation: number; epsilonTotal: number };
  /** Absent when it was not finite. */
  loss?: number;
  stats: EvaluationStats;
  /** `--personalize`: the node's fine-tuned copy on the same rows (its weights stay on the node: personalize.ts). */
  personalized?: Omit<EvaluatedFacts, 'loss' | 'personalized'>;
}

/** A status the node wants to report, with the counts of its data when it has them. */
export interface StatusFacts {
  state: NodeStatusReport['state'];
  message?: string;
  data?: DataReport;
}

export class Release {
  /** The study's declared list, checked (the required fields are on it, no name twice). */
  readonly fields: ReadonlySet<ReleaseField>;

  constructor(
    list: readonly ReleaseField[],
    private readonly kind: KindName = 'binary',
    /** The study's privacy config: under DP only noised, public or declared-public fields leave (RELEASE_UNDER_DP). */
    private readonly privacy?: StudyPrivacy,
  ) {
    const fields = ReleaseList.parse([...list]);
    // The study schema refuses a DP study that releases an exact field not declared public; the
    // node holds to it again, whatever the coordinator sends.
    this.fields = new Set(fields.filter((f) => releaseMechanism(privacy, f) !== 'exact' || !hasDp(privacy)));
  }

  static of(study: Pick<StudyConfig, 'release'> & Partial<Pick<StudyConfig, 'task' | 'privacy'>>): Release {
    return new Release(study.release, study.task?.kind ?? 'binary', study.privacy);
  }

  /** Does the study run DP (its counts are then public constants or noised, never exact)? */
  get dp(): boolean {
    return hasDp(this.privacy);
  }

  /** An update's weights: the tensors the study's model kind shares, and no other. */
  weights(trained: WeightSet): Released<WeightSet> {
    const kind = modelKind(this.kind);
    const shared = new Set(kind.sharedTensors(specsOf(trained)).map((s) => s.name));
    // Node-local tensors (recommendation's user_factors) never leave, whatever sharedTensors says.
    const local = new Set(kind.nodeLocalTensors ?? []);
    return trained.filter((t) => shared.has(t.name) && !local.has(t.name)) as Released<WeightSet>;
  }

  allows(field: ReleaseField): boolean {
    return this.fields.has(field);
  }

  /** The metadata beside an update's weights. */
  update(facts: TrainedFacts): Released<UpdateMeta> {
    const meta: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(UPDATE_META_RELEASE) as Array<[keyof UpdateMeta, ReleaseField]>) {
      if (!this.allows(field)) continue;
      // Under DP the count is the public constant 1 (updates weigh the same): never the row count.
      const value = key === 'data' ? dataReport(facts.data) : key === 'numExamples' && this.dp ? DP_UPDATE_COUNT : facts[key];
      if (value !== undefined) meta[key] = value;
    }
    return UpdateMeta.parse(meta) as Released<UpdateMeta>;
  }

  /** An evaluation of a global model: the model kind's sufficient statistics (noised under DP). */
  evaluation(facts: EvaluatedFacts): Released<EvaluationReport> {
    if (this.dp && !isNoised(facts.stats)) throw new Error('under DP an evaluation leaves only as noised statistics (client-node/train.ts evaluate with the ledger)');
    if (this.dp && facts.numExamples !== statsRows(facts.stats)) throw new Error('under DP the evaluation count is the sum of the noised counts');
    const p = facts.personalized;
    if (p && this.dp && (!isNoised(p.stats) || p.numExamples !== statsRows(p.stats))) throw new Error('under DP a personalized evaluation leaves only as noised statistics, counted as their sum');
    const report: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(EVALUATION_RELEASE) as Array<[keyof EvaluationReport, ReleaseField]>) {
      // The personalized part: its count and statistics only (what it cost stays in the node's log).
      const value = key === 'personalized' && p ? { numExamples: p.numExamples, stats: p.stats } : facts[key];
      if (this.allows(field) && value !== undefined) report[key] = value;
    }
    return EvaluationReport.parse(report) as Released<EvaluationReport>;
  }

  /** A status report: the state and its message always, the data's counts only if released. */
  status(facts: StatusFacts): Released<NodeStatusReport> {
    const report: NodeStatusReport = { state: facts.state };
    if (facts.message !== undefined) report.message = facts.message;
    if (facts.data && this.allows(STATUS_RELEASE.data)) report.data = dataReport(facts.data);
    return NodeStatusReport.strict().parse(report) as Released<NodeStatusReport>;
  }
}

/** Only DataReport's own fields (counts), whatever else the node keeps beside them. */
function dataReport(data: DataReport): DataReport {
  const { rows, droppedNoConsent, droppedFeatures, missingFilled, unseenCategories } = data;
  return DataReport.parse({
    rows,
    ...(droppedNoConsent !== undefined ? { droppedNoConsent } : {}),
    ...(droppedFeatures !== undefined ? { droppedFeatures } : {}),
    missingFilled,
    unseenCategories,
  });
}
