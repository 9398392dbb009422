import type { Db } from '../db/database.ts';
import { NotFoundError } from '../errors.ts';
import { StudyConfig, NodePrivacySpend } from '../../protocols/messages.ts';

/**
 * A study's privacy report: client-level epsilon charged per round and in total (from the ledger),
 * and each node's record-level DP-SGD spending as the node reported it with its updates.
 */
export async function privacyReport(db: Db, studyId: string) {
  const study = await db.selectFrom('studies').select(['config', 'stop_reason', 'state']).where('id', '=', studyId).executeTakeFirst();
  if (!study) throw new NotFoundError(`study ${studyId} does not exist`);
  const config = StudyConfig.parse(study.config);
  const privacy = config.privacy;
  const ledger = await db.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).orderBy('round').execute();
  const rounds = await db.selectFrom('rounds').select(['round', 'phase', 'clip_norm', 'mechanism']).where('study_id', '=', studyId).orderBy('round').execute();
  const mechanismByRound = new Map(rounds.map((r) => [r.round, r]));
  const nodes = await db.selectFrom('nodes').select(['id', 'name', 'region']).where('study_id', '=', studyId).orderBy('name').execute();
  const updates = await db.selectFrom('updates').select(['node_id', 'round', 'meta']).where('study_id', '=', studyId).orderBy('round').execute();
  return {
    studyId,
    state: study.state,
    stopReason: study.stop_reason,
    accountant: privacy?.accountant ?? null,
    delta: privacy?.delta ?? null,
    budgetEpsilon: privacy?.budgetEpsilon ?? null,
    central: privacy?.central ?? null,
    dpSgd: privacy?.dpSgd ?? null,
    spentEpsilon: ledger.length ? ledger[ledger.length - 1].epsilon_total : 0,
    rounds: ledger.map((l) => ({
      round: l.round,
      phase: mechanismByRound.get(l.round)?.phase ?? null,
      samplingRate: l.sampling_rate,
      noiseMultiplier: l.noise_multiplier,
      clipNorm: mechanismByRound.get(l.round)?.clip_norm ?? null,
      epsilonRound: l.epsilon_round,
      epsilonTotal: l.epsilon_total,
    })),
    nodes: nodes.map((n) => {
      const spends = updates
        .filter((u) => u.node_id === n.id)
        .map((u) => ({ round: u.round, spend: NodePrivacySpend.safeParse((u.meta as { dpSgd?: unknown }).dpSgd) }))
        .filter((x) => x.spend.success)
        .map((x) => ({ round: x.round, ...x.spend.data! }));
      return {
        nodeId: n.id,
        name: n.name,
        region: n.region,
        dpSgd: spends.length ? { accountant: spends[0].accountant, delta: spends[0].delta, epsilonTotal: spends[spends.length - 1].epsilonTotal, rounds: spends.map((s) => ({ round: s.round, epsilonRound: s.epsilonRound, epsilonTotal: s.epsilonTotal, steps: s.steps })) } : null,
      };
    }),
  };
}
export type PrivacyReport = Awaited<ReturnType<typeof privacyReport>>;
