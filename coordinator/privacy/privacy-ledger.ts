import type { Transaction } from 'kysely';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import { accountedNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import type { Database } from '../db/schema.ts';
import { insertLedgerEntry, ledgerTotals } from './repository.ts';

export interface Charge {
  round: number;
  accountant: 'rdp' | 'pld';
  delta: number;
  samplingRate: number;
  noiseMultiplier: number;
  epsilonRound: number;
  epsilonTotal: number;
}

/**
 * Charges one round of client-level DP to the study's ledger, inside the caller's transaction
 * (which holds the study row's lock). Rounds of a study share one (q, z), so the total after r
 * rounds is the accountant's epsilon for r compositions, exactly, rather than a sum of per-round
 * epsilons, which would overstate it badly. A round is charged when it opens, before any node
 * trains: the conservative choice (a round that later fails released nothing, but was paid for).
 */
export async function chargeRound(tx: Transaction<Database>, studyId: string, round: number, config: StudyConfig, options: { dryRun?: boolean } = {}): Promise<{ ok: true; charge: Charge } | { ok: false; reason: string }> {
  const privacy = config.privacy!;
  const central = privacy.central!;
  const charged = await ledgerTotals(tx, studyId);
  const before = charged.total ?? 0;
  const steps = charged.rounds + 1;
  // Adaptive clipping also releases a noised count: charge the multiplier of the pair, not z.
  const z = accountedNoiseMultiplier(central);
  const total = z === 0 ? Number.POSITIVE_INFINITY : computeEpsilon({ q: central.nodeSamplingRate, sigma: z, steps, delta: privacy.delta }, privacy.accountant);
  const charge: Charge = { round, accountant: privacy.accountant, delta: privacy.delta, samplingRate: central.nodeSamplingRate, noiseMultiplier: z, epsilonRound: total - before, epsilonTotal: total };
  if (privacy.budgetEpsilon !== undefined && total > privacy.budgetEpsilon) {
    return {
      ok: false,
      reason: `privacy budget: round ${round} would bring the study to epsilon ${total.toFixed(4)} (delta ${privacy.delta}, ${privacy.accountant} accountant), over its budget of ${privacy.budgetEpsilon}; ${before.toFixed(4)} spent in ${steps - 1} rounds`,
    };
  }
  // A dry run answers "could this round be paid for?" without writing (the caller holds the lock).
  if (options.dryRun) return { ok: true, charge };
  await insertLedgerEntry(tx, { study_id: studyId, round, accountant: charge.accountant, delta: charge.delta, sampling_rate: charge.samplingRate, noise_multiplier: charge.noiseMultiplier, epsilon_round: charge.epsilonRound, epsilon_total: charge.epsilonTotal, budget_epsilon: privacy.budgetEpsilon ?? null });
  return { ok: true, charge };
}
