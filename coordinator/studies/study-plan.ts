import type { StudyConfig } from '../../protocols/messages.ts';
import { checkStudyAgainstPolicy, privacyFacts, type PolicyProfile, type PolicyViolation } from '../../protocols/policy/jurisdiction-policy.ts';
import { accountedNoiseMultiplier } from '../../protocols/privacy/client-level-dp.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { clientLevelNoiseSwamp, privacyWarnings } from '../../protocols/privacy/study-checks.ts';
import { dpSgdStepsPerRound, evaluationDp } from '../../protocols/privacy/study-privacy.ts';
import { totalParameters } from '../../protocols/tensors.ts';
import type { Db } from '../db/database.ts';
import { latestPolicies } from '../policies/policy-service.ts';
import { studyTensorSpecs } from './study-service.ts';

/**
 * Every rule of the coordinator's current policies that `config` breaks for the jurisdictions
 * given (a study's planned `jurisdictions`, or the one an enrollment token names). A jurisdiction
 * with no profile on this coordinator is a `no-policy` violation: fail closed, as rounds do
 * (policies/policy-service.ts checkParticipants). Empty: the study may run there.
 *
 * @example
 *   const violations = await policyViolationsFor(db, config, ['EU-GDPR', 'CN-PIPL']);
 *   if (violations.length) throw policyViolationError(violations);
 */
export async function policyViolationsFor(db: Db, config: StudyConfig, jurisdictions: readonly string[]): Promise<PolicyViolation[]> {
  const policies = await latestPolicies(db);
  return jurisdictionChecks(config, jurisdictions, policies).flatMap((j) => j.violations);
}

/** One planned jurisdiction: the profile that would apply (null: none on record) and what the study breaks of it. */
export interface JurisdictionCheck {
  jurisdiction: string;
  policy: PolicyProfile | null;
  violations: PolicyViolation[];
}

function jurisdictionChecks(config: StudyConfig, jurisdictions: readonly string[], policies: Map<string, PolicyProfile>): JurisdictionCheck[] {
  const facts = privacyFacts(config);
  return jurisdictions.map((jurisdiction) => {
    const policy = policies.get(jurisdiction) ?? null;
    if (!policy) {
      const known = [...policies.keys()].sort().join(', ') || 'none';
      const message = `${jurisdiction}: no policy profile on this coordinator (profiles: ${known}); publish one (POST /v1/policies) or plan another jurisdiction`;
      return { jurisdiction, policy, violations: [{ jurisdiction, version: 0, rule: 'no-policy' as const, message }] };
    }
    return { jurisdiction, policy, violations: checkStudyAgainstPolicy(config, policy, facts) };
  });
}

/** The study field a broken rule is about, so a refusal names it. */
export function violationField(config: StudyConfig, v: PolicyViolation): string {
  switch (v.rule) {
    case 'min-nodes':
      return 'minNodesPerRound';
    case 'dp-required':
      return 'privacy.central';
    case 'max-epsilon-per-round':
      return 'privacy.central.noiseMultiplier';
    case 'max-epsilon-total':
      return 'privacy.budgetEpsilon';
    case 'forbidden-feature': {
      const i = config.features.features.findIndex((f) => v.message.includes(`feature "${f.name}"`));
      return i >= 0 ? `features.features.${i}.category` : 'features.features';
    }
    case 'purpose-consent':
      return 'consent.purpose';
    default:
      return `jurisdictions.${Math.max(0, (config.jurisdictions ?? []).indexOf(v.jurisdiction))}`;
  }
}

/** Epsilon of `steps` compositions of the subsampled Gaussian; null when unbounded (z = 0). */
function epsilonOf(q: number, sigma: number, steps: number, delta: number, accountant: 'rdp' | 'pld'): number | null {
  if (sigma === 0) return null;
  try {
    const e = computeEpsilon({ q, sigma, steps, delta }, accountant);
    return Number.isFinite(e) ? e : null;
  } catch {
    // Parameters the accountant cannot handle: the plan says unbounded rather than failing.
    return null;
  }
}

/** Rounds a budget pays for (RDP and PLD epsilons grow with the rounds: a binary search). */
function roundsWithinBudget(epsilonAfter: (rounds: number) => number | null, budget: number, planned: number): number {
  let lo = 0;
  let hi = planned;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const e = epsilonAfter(mid);
    if (e !== null && e <= budget) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The study's privacy plan: which mechanisms run, their noise multipliers, the epsilon of one
 * round and of every planned round (client-level at the coordinator; record-level DP-SGD on each
 * node, training only), the accountant, and the warnings creation would give, with numbers.
 */
export function privacyPlan(config: StudyConfig) {
  const p = config.privacy;
  const parameters = totalParameters(studyTensorSpecs(config));
  if (!p || (!p.central && !p.dpSgd)) return { dp: false as const, mechanisms: [] as string[], accountant: null, delta: null, central: null, dpSgd: null, evaluation: null, noiseSwamp: null, warnings: privacyWarnings(config, parameters) };
  const central = p.central;
  const centralPlan = central
    ? (() => {
        const z = accountedNoiseMultiplier(central);
        const after = (rounds: number) => epsilonOf(central.nodeSamplingRate, z, rounds, p.delta, p.accountant);
        return {
          noiseMultiplier: central.noiseMultiplier,
          accountedNoiseMultiplier: z,
          nodeSamplingRate: central.nodeSamplingRate,
          clipping: central.clipping,
          epsilonPerRound: privacyFacts(config).epsilonPerRound,
          epsilonTotal: after(config.rounds),
          budgetEpsilon: p.budgetEpsilon ?? null,
          // A PLD epsilon takes seconds to compute: the search (up to 17 of them) is RDP's only; null otherwise.
          roundsWithinBudget: p.budgetEpsilon === undefined ? config.rounds : p.accountant === 'rdp' ? roundsWithinBudget(after, p.budgetEpsilon, config.rounds) : null,
        };
      })()
    : null;
  const dpSgd = p.dpSgd;
  const steps = dpSgd ? dpSgdStepsPerRound(dpSgd) : 0;
  const dpSgdPlan = dpSgd
    ? { noiseMultiplier: dpSgd.noiseMultiplier, samplingRate: dpSgd.samplingRate, stepsPerRound: steps, clipNorm: dpSgd.clipNorm, epsilonPerRound: epsilonOf(dpSgd.samplingRate, dpSgd.noiseMultiplier, steps, p.delta, p.accountant), epsilonTotal: epsilonOf(dpSgd.samplingRate, dpSgd.noiseMultiplier, steps * config.rounds, p.delta, p.accountant) }
    : null;
  const evaluation = evaluationDp(p);
  return {
    dp: true as const,
    mechanisms: [...(central ? ['central client-level Gaussian (coordinator)'] : []), ...(dpSgd ? ['DP-SGD record-level Gaussian (nodes)'] : [])],
    accountant: p.accountant,
    delta: p.delta,
    central: centralPlan,
    dpSgd: dpSgdPlan,
    evaluation: evaluation ? { bins: evaluation.bins, noiseMultiplier: evaluation.noiseMultiplier, epsilonPerEvaluation: epsilonOf(1, evaluation.noiseMultiplier, 1, p.delta, p.accountant) } : null,
    noiseSwamp: clientLevelNoiseSwamp(config, parameters),
    warnings: privacyWarnings(config, parameters),
  };
}

/**
 * What `POST /v1/studies` would do with `config`, without writing anything: for each planned
 * jurisdiction the current profile and every rule broken, the privacy plan, the warnings, and
 * whether the study would be created.
 */
export async function studyPlan(db: Db, config: StudyConfig, warnings: string[]) {
  // Each violation names the study field it is about, so the CLI can point at its line.
  const jurisdictions = jurisdictionChecks(config, config.jurisdictions ?? [], await latestPolicies(db)).map((j) => ({ ...j, violations: j.violations.map((v) => ({ ...v, field: violationField(config, v) })) }));
  const violations = jurisdictions.flatMap((j) => j.violations);
  return {
    name: config.name,
    task: config.task.kind,
    model: config.model.kind,
    strategy: config.strategy.name,
    rounds: config.rounds,
    minNodesPerRound: config.minNodesPerRound,
    jurisdictions,
    violations,
    privacy: privacyPlan(config),
    warnings,
    wouldCreate: violations.length === 0,
  };
}
export type StudyPlan = Awaited<ReturnType<typeof studyPlan>>;
