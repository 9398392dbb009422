import { encodedWidth } from '../../protocols/feature-spec.ts';
import { StudyConfig, type StudyStatus, type RoundSummary } from '../../protocols/messages.ts';
import { initialWeights, modelTensorSpecs } from '../../protocols/model-spec.ts';
import { decodeWeights, encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import type { TensorSpec, WeightSet } from '../../protocols/tensors.ts';
import type { Db } from '../db/database.ts';
import { NotFoundError } from '../errors.ts';
import { newId } from '../security.ts';
import type { Logger } from 'pino';
import type { CoordinatorKeyring } from '../identity.ts';
import { appendAudit } from '../audit/audit-log.ts';

export interface StoredModel {
  version: number;
  bytes: Uint8Array;
  sha256: string;
  /** The coordinator's armored detached signature over `bytes`. */
  signature: string | null;
  signerFingerprint: string | null;
}

/** Tensor names and shapes every update of a study must have. */
export function studyTensorSpecs(config: StudyConfig): TensorSpec[] {
  return modelTensorSpecs(config.model, encodedWidth(config.features));
}

export function createStudyService(deps: { db: Db; log: Logger; keyring: CoordinatorKeyring; onStudyCreated: (studyId: string) => void }) {
  const { db, log } = deps;

  // A study's configuration and its published models never change once written, so they are
  // cached: the request path (every task, download and update) then skips a query and a parse.
  const configs = new Map<string, StudyConfig>();
  const models = new Map<string, StoredModel>();
  const decoded = new Map<string, WeightSet>();
  const MAX_CACHED_MODELS = 64;

  async function getConfig(studyId: string): Promise<StudyConfig> {
    const cached = configs.get(studyId);
    if (cached) return cached;
    const row = await db.selectFrom('studies').select('config').where('id', '=', studyId).executeTakeFirst();
    if (!row) throw new NotFoundError(`study ${studyId} does not exist`);
    const config = StudyConfig.parse(row.config);
    configs.set(studyId, config);
    return config;
  }

  return {
    getConfig,

    /** Creates a study and its round-0 model (seeded, so the configuration alone reproduces it). */
    async createStudy(config: StudyConfig, actor = 'admin') {
      const id = newId('study');
      const weights = initialWeights(studyTensorSpecs(config), config.seed);
      const bytes = encodeWeights(weights);
      const sha256 = sha256Hex(bytes);
      const { signature, fingerprint } = await deps.keyring.sign(bytes);
      await db.transaction().execute(async (tx) => {
        await tx.insertInto('studies').values({ id, name: config.name, config: JSON.stringify(config), state: 'running', current_round: 0, latest_model_version: 0 }).execute();
        await tx.insertInto('models').values({ study_id: id, version: 0, weights: bytes, sha256, bytes: bytes.length, signature, signer_fingerprint: fingerprint }).execute();
        await appendAudit(tx, { actor, kind: 'study.created', studyId: id, data: { config, initialModelSha256: sha256 } });
      });
      log.info({ studyId: id, name: config.name, model: config.model, rounds: config.rounds }, 'study created');
      deps.onStudyCreated(id);
      return { id, modelSha256: sha256 };
    },

    async getModel(studyId: string, version?: number): Promise<StoredModel> {
      let v = version;
      if (v === undefined) {
        const study = await db.selectFrom('studies').select('latest_model_version').where('id', '=', studyId).executeTakeFirst();
        if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
        v = study.latest_model_version;
      }
      const key = `${studyId}/${v}`;
      const cached = models.get(key);
      if (cached) return cached;
      const row = await db.selectFrom('models').select(['version', 'weights', 'sha256', 'signature', 'signer_fingerprint']).where('study_id', '=', studyId).where('version', '=', v).executeTakeFirst();
      if (!row) throw new NotFoundError(`study ${studyId} has no model version ${v}`);
      const model = { version: row.version, bytes: new Uint8Array(row.weights), sha256: row.sha256, signature: row.signature, signerFingerprint: row.signer_fingerprint };
      if (models.size >= MAX_CACHED_MODELS) models.delete(models.keys().next().value!);
      models.set(key, model);
      return model;
    },

    /** The decoded model, cached with its bytes (read-only: strategies never mutate the global model). */
    async getModelWeights(studyId: string, version: number): Promise<WeightSet> {
      const key = `${studyId}/${version}`;
      const cached = decoded.get(key);
      if (cached) return cached;
      const weights = decodeWeights((await this.getModel(studyId, version)).bytes);
      if (decoded.size >= MAX_CACHED_MODELS) decoded.delete(decoded.keys().next().value!);
      decoded.set(key, weights);
      return weights;
    },

    async getStatus(studyId: string): Promise<StudyStatus> {
      const study = await db.selectFrom('studies').selectAll().where('id', '=', studyId).executeTakeFirst();
      if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
      const nodes = await db.selectFrom('nodes').select(['id', 'name', 'region', 'state', 'state_message']).where('study_id', '=', studyId).orderBy('name').execute();
      const rounds = await db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).orderBy('round').execute();
      const models = await db.selectFrom('models').select(['version', 'sha256']).where('study_id', '=', studyId).execute();
      const shaByVersion = new Map(models.map((m) => [m.version, m.sha256]));
      const received = await db.selectFrom('updates').select(['round', ({ fn }) => fn.countAll<number>().as('count')]).where('study_id', '=', studyId).groupBy('round').execute();
      const receivedByRound = new Map(received.map((r) => [r.round, Number(r.count)]));
      const summaries: RoundSummary[] = rounds.map((r) => ({
        round: r.round,
        phase: r.phase,
        participants: r.participants,
        updatesReceived: receivedByRound.get(r.round) ?? 0,
        numExamples: r.num_examples,
        meanLoss: r.mean_loss,
        validationAuc: r.validation_auc,
        validationLoss: r.validation_loss,
        failureReason: r.failure_reason,
        startedAt: new Date(r.started_at).toISOString(),
        closedAt: r.closed_at ? new Date(r.closed_at).toISOString() : null,
        modelSha256: shaByVersion.get(r.round) ?? null,
      }));
      return {
        id: study.id,
        name: study.name,
        state: study.state,
        currentRound: study.current_round,
        latestModelVersion: study.latest_model_version,
        config: StudyConfig.parse(study.config),
        nodes: nodes.map((n) => ({ id: n.id, name: n.name, region: n.region, state: n.state, message: n.state_message })),
        rounds: summaries,
      };
    },

    /** A round's record: phase, participants, and each update's metadata (size, hash, norm; never values). */
    async getRound(studyId: string, round: number) {
      const row = await db.selectFrom('rounds').selectAll().where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst();
      if (!row) throw new NotFoundError(`study ${studyId} has no round ${round}`);
      const updates = await db
        .selectFrom('updates')
        .innerJoin('nodes', 'nodes.id', 'updates.node_id')
        .select(['updates.node_id', 'nodes.name', 'nodes.region', 'updates.sha256', 'updates.bytes', 'updates.num_examples', 'updates.loss', 'updates.meta', 'updates.accepted_at'])
        .where('updates.study_id', '=', studyId)
        .where('updates.round', '=', round)
        .orderBy('updates.accepted_at')
        .execute();
      return {
        studyId,
        round,
        phase: row.phase,
        participants: row.participants,
        mechanism: row.mechanism,
        clipNorm: row.clip_norm,
        failureReason: row.failure_reason,
        updates: updates.map((u) => {
          const meta = u.meta as { deltaNorm?: number; clipped?: boolean; dpSgd?: unknown };
          return { nodeId: u.node_id, name: u.name, region: u.region, sha256: u.sha256, bytes: u.bytes, numExamples: u.num_examples, loss: u.loss, deltaNorm: meta.deltaNorm ?? null, clipped: meta.clipped ?? false, dpSgd: meta.dpSgd ?? null, acceptedAt: new Date(u.accepted_at).toISOString() };
        }),
      };
    },

    async listStudies() {
      return db.selectFrom('studies').select(['id', 'name', 'state', 'current_round']).orderBy('created_at').execute();
    },
  };
}
export type StudyService = ReturnType<typeof createStudyService>;
