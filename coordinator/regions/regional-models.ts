import type { Transaction } from 'kysely';
import { AggregationError, decodeAccumulatorState, WeightedMeanAccumulator } from '../../protocols/aggregation/fedavg.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { evaluationStatsOf, poolStudyEvaluation } from '../rounds/evaluation-pooling.ts';
import { modelOutOfRange } from '../../protocols/model-bounds.ts';
import { specsOf } from '../../protocols/tensors.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { decodeWeightsView, encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { NotFoundError } from '../errors.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { latestPolicies } from '../policies/policy-service.ts';
import {
  dropRegionalAccumulators,
  findRegionalModel,
  findStudyConfigRow,
  insertRegionalModel,
  listKeptUpdateRefs,
  listNodeEvaluations,
  listNodeUpdates,
  listRegionalAccumulators,
  listRegionalModelSummaries,
  listRegionMembers,
  listRoundPhases,
  nodeRegionsAndJurisdictions,
  readKeptUpdate,
} from './repository.ts';

/**
 * Regional models: "one global framework, flexible local execution". Each round, the nodes of a
 * region each train the global model on their own rows; the weighted mean of just those local
 * models (the weights the global aggregate uses: capped example counts, equal under DP-SGD; each
 * update norm-bounded as it was for the global aggregate) is the region's adaptation of the global model to its market, which its regional
 * team (an analyst token of that region) may read beside the global model.
 *
 * What keeps this from leaking one partner's model to a regional team:
 *  - a regional model is published only when at least `max(2, minNodesPerAggregate of every
 *    jurisdiction among the region's contributors)` nodes of that region reported in the round;
 *    otherwise it is withheld, with the reason in the round record;
 *  - under central (client-level) DP no regional model is made at all: only the noised global
 *    aggregate may ever be stored or returned, and a second, separately noised release per region
 *    would need its own accounting;
 *  - no regional running sum is stored at all (issue 13: an update writes O(update), not an 8-byte-a-
 *    parameter sum per region): at close, each region's mean is folded from the round's stored
 *    updates (`round_kept_updates`: node, weight and the form the global fold took, in arrival
 *    order), one region and one update in memory at a time, and the stored updates are dropped
 *    with the round's close. A restart changes nothing: the stored updates are the only input.
 */
const FLOOR_NODES_PER_REGIONAL_MODEL = 2;


/** Whether this study produces regional models (never under central DP: see above). */
export function makesRegionalModels(config: StudyConfig): boolean {
  return config.privacy?.central === undefined;
}

export interface RegionalOutcome {
  region: string;
  /** Nodes of the region whose update is in the round. */
  nodes: number;
  /** Nodes required before the region's model may be published. */
  required: number;
  published: boolean;
  sha256?: string;
  reason?: string;
}

/**
 * At aggregation: folds the model of every region with enough contributors from the round's
 * stored updates, publishes it (signed), withholds the rest, and deletes any legacy running sum.
 */
export async function publishRegionalModels(
  tx: Transaction<Database>,
  input: { studyId: string; round: number; config: StudyConfig; global: WeightSet; keyring: CoordinatorKeyring; contributors: Array<{ node_id: string; num_examples: number }> },
): Promise<RegionalOutcome[]> {
  const { studyId, round } = input;
  if (!makesRegionalModels(input.config) || input.contributors.length === 0) return [];
  const nodes = await nodeRegionsAndJurisdictions(tx, input.contributors.map((c) => c.node_id));
  const policies = await latestPolicies(tx);
  const folding = await regionalFolding(tx, studyId, round);
  const outcomes: RegionalOutcome[] = [];
  for (const region of [...new Set(nodes.map((n) => n.region))].sort()) {
    const members = nodes.filter((n) => n.region === region);
    const required = Math.max(FLOOR_NODES_PER_REGIONAL_MODEL, ...members.map((n) => (n.jurisdiction ? (policies.get(n.jurisdiction)?.minNodesPerAggregate ?? 0) : 0)));
    if (members.length < required) {
      outcomes.push({ region, nodes: members.length, required, published: false, reason: `only ${members.length} node(s) of region ${region} reported; a regional model needs at least ${required}` });
      continue;
    }
    const weights = (await foldRegion(tx, folding, input.global, region, new Set(members.map((m) => m.id)))).mean();
    // The global model's guard holds for a region's model too: never published out of range.
    const outOfRange = input.config.bounds ? modelOutOfRange(weights, input.config.bounds.maxAbsWeight) : undefined;
    if (outOfRange) {
      outcomes.push({ region, nodes: members.length, required, published: false, reason: `model-out-of-range: the regional model's ${outOfRange}` });
      continue;
    }
    const bytes = encodeWeights(weights);
    const sha256 = sha256Hex(bytes);
    const { signature, fingerprint } = await input.keyring.sign(bytes);
    const numExamples = input.contributors.filter((c) => members.some((m) => m.id === c.node_id)).reduce((s, c) => s + c.num_examples, 0);
    await insertRegionalModel(tx, { study_id: studyId, version: round, region, weights: bytes, sha256, bytes: bytes.length, nodes: members.length, num_examples: numExamples, signature, signer_fingerprint: fingerprint });
    outcomes.push({ region, nodes: members.length, required, published: true, sha256 });
  }
  await dropRegionalAccumulators(tx, studyId, round);
  return outcomes;
}

/** What a region's model is folded from: the round's stored updates, and any legacy running sums. */
interface RegionalFolding {
  studyId: string;
  round: number;
  /** The round's stored updates in arrival order (no weights: read one at a time when folded). */
  stored: Array<{ seq: number; node_id: string; weight: number | null }>;
  /** Running sums a coordinator before issue 13 wrote for this round, by region (an upgrade mid-round). */
  legacy: Map<string, Uint8Array>;
}

async function regionalFolding(tx: Transaction<Database>, studyId: string, round: number): Promise<RegionalFolding> {
  const legacy = new Map((await listRegionalAccumulators(tx, studyId, round)).map((r) => [r.region, new Uint8Array(r.state)]));
  return { studyId, round, stored: await listKeptUpdateRefs(tx, studyId, round), legacy };
}

/**
 * The plain weighted mean of the region's local models, whatever the study's strategy: it is the
 * region's adaptation of the global model, not a server step. Each stored update enters as the
 * global fold took it (norm-bounded) with the weight the global fold used (claims.ts
 * aggregationWeight: capped, or 1 under DP-SGD), in arrival order: the same float64 sums as the
 * running sum before issue 13. A legacy running sum already holds the region's first `count`
 * updates; only the region's updates after it (the last ones stored) are folded on top.
 */
async function foldRegion(tx: Transaction<Database>, f: RegionalFolding, global: WeightSet, region: string, members: Set<string>): Promise<WeightedMeanAccumulator> {
  const legacy = f.legacy.get(region);
  const accumulator = legacy ? WeightedMeanAccumulator.fromState(decodeAccumulatorState(legacy)) : new WeightedMeanAccumulator(specsOf(global));
  const stored = f.stored.filter((r) => members.has(r.node_id));
  const missing = members.size - accumulator.count - stored.length;
  if (missing > 0) throw new AggregationError(`round ${f.round}: region ${region} has ${members.size} accepted updates but only ${accumulator.count + stored.length} are stored or summed; kept updates are missing`);
  const specs = specsOf(global);
  for (const ref of stored.slice(stored.length - (members.size - accumulator.count))) {
    if (ref.weight === null) throw new AggregationError(`round ${f.round}: the stored update of node ${ref.node_id} has no weight; its region's model cannot be folded`);
    const bytes = await readKeptUpdate(tx, f.studyId, f.round, ref.seq);
    accumulator.add(decodeWeightsView(bytes, { expected: specs }), ref.weight);
  }
  return accumulator;
}

export interface StoredRegionalModel {
  version: number;
  region: string;
  bytes: Uint8Array;
  sha256: string;
  signature: string;
  signerFingerprint: string;
  nodes: number;
  numExamples: number;
}

/** A region's model of `version`, or its latest one. */
export async function getRegionalModel(db: Db, studyId: string, region: string, version?: number): Promise<StoredRegionalModel> {
  const row = await findRegionalModel(db, studyId, region, version);
  if (!row) throw new NotFoundError(`study ${studyId} has no regional model for region ${region}${version === undefined ? '' : ` in round ${version}`}`);
  return { version: row.version, region: row.region, bytes: new Uint8Array(row.weights), sha256: row.sha256, signature: row.signature, signerFingerprint: row.signer_fingerprint, nodes: row.nodes, numExamples: row.num_examples };
}

/**
 * A region's view of a study, per round: how many of its nodes trained, their pooled loss, the
 * global model's validation AUC on the region's own held-out rows (pooled score histograms,
 * never scores), and the regional model published (or why it was withheld). Counts and metrics
 * only: no weights, no per-node values.
 */
export async function regionalReport(db: Db, studyId: string, region: string) {
  const study = await findStudyConfigRow(db, studyId);
  if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
  const config = StudyConfig.parse(study.config);
  const members = await listRegionMembers(db, studyId, region);
  const ids = members.map((m) => m.id);
  const [rounds, updates, evaluations, models] = await Promise.all([
    listRoundPhases(db, studyId),
    listNodeUpdates(db, studyId, ids),
    listNodeEvaluations(db, studyId, ids),
    listRegionalModelSummaries(db, studyId, region),
  ]);
  return {
    studyId,
    region,
    nodes: members.map((m) => ({ id: m.id, name: m.name, state: m.state })),
    rounds: rounds.map((r) => {
      const mine = updates.filter((u) => u.round === r.round);
      const examples = mine.reduce((s, u) => s + u.num_examples, 0);
      const mineEvaluated = evaluations.filter((e) => e.round === r.round);
      const metrics = mineEvaluated.length ? poolStudyEvaluation(config, mineEvaluated.map(evaluationStatsOf)) : null;
      const model = models.find((m) => m.version === r.round);
      const outcome = ((r.mechanism as { regionalModels?: RegionalOutcome[] } | null)?.regionalModels ?? []).find((o) => o.region === region);
      return {
        round: r.round,
        phase: r.phase,
        nodes: mine.length,
        numExamples: examples,
        meanLoss: meanLossOf(mine),
        globalValidationAuc: metrics && typeof metrics.auc === 'number' ? metrics.auc : null,
        /** The kind's pooled metrics of the global model on this region's held-out rows. */
        globalValidationMetrics: metrics,
        regionalModel: model ? { version: model.version, sha256: model.sha256, nodes: model.nodes, numExamples: model.num_examples } : null,
        regionalModelWithheld: model ? null : (outcome?.reason ?? null),
      };
    }),
  };
}

/** Example-weighted mean loss of the updates that released one (null when none did). */
export function meanLossOf(updates: Array<{ num_examples: number; loss: number | null }>): number | null {
  const withLoss = updates.filter((u) => u.loss !== null);
  const examples = withLoss.reduce((s, u) => s + u.num_examples, 0);
  return examples > 0 ? withLoss.reduce((s, u) => s + u.loss! * u.num_examples, 0) / examples : null;
}
