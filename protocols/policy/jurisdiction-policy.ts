import { accountedNoiseMultiplier } from '../privacy/client-level-dp.ts';
import { z } from 'zod';
import type { StudyConfig } from '../messages.ts';
import { computeEpsilon } from '../privacy/index.ts';
import { encodedWidth, type FeatureSpec } from '../feature-spec.ts';

/**
 * Jurisdiction policy profiles: what a study must respect for a node under a given law to join.
 * The coordinator checks a study against the policy of every participant before a round starts
 * (refusing with the rule that failed); the node checks again before it trains.
 *
 * Sensitive categories: GDPR Art. 9 ("special categories": racial or ethnic origin, religious
 * beliefs, health...) and PIPL Art. 28 ("sensitive personal information": religious beliefs,
 * medical health, financial accounts, precise location/whereabouts, minors under 14...).
 */
export const SENSITIVE_CATEGORIES = ['religion', 'health', 'ethnicity', 'precise-location', 'minors', 'biometric', 'political', 'sexual-orientation', 'financial-account'] as const;

export const Purpose = z.enum(['basic', 'personalization']);
export type Purpose = z.infer<typeof Purpose>;

export const PolicyProfile = z.object({
  jurisdiction: z.string().min(1).max(50),
  version: z.number().int().positive(),
  description: z.string().max(2000).default(''),
  minNodesPerAggregate: z.number().int().positive().default(2),
  dpRequired: z.boolean().default(false),
  maxEpsilonPerRound: z.number().positive().optional(),
  maxEpsilonTotal: z.number().positive().optional(),
  forbiddenFeatureCategories: z.array(z.string()).default([]),
  /**
   * Consent values in a row's consent column that cover each purpose (layered consent). Partial:
   * a profile may define no consent level for a purpose, and then refuses studies for it
   * (`purpose-consent`). zod 4's `z.record(enum, ...)` would demand every purpose.
   */
  consentFor: z.partialRecord(Purpose, z.array(z.string()).min(1)).default({ basic: ['basic', 'personalization'], personalization: ['personalization'] }),
});
export type PolicyProfile = z.infer<typeof PolicyProfile>;

/** The profiles a fresh coordinator starts with (version 1 of each); operators add versions. */
export const DEFAULT_POLICIES: PolicyProfile[] = [
  PolicyProfile.parse({
    jurisdiction: 'EU-GDPR',
    version: 1,
    description: 'GDPR: no Art. 9 special categories; client-level DP required; consent per purpose (Art. 6, 7).',
    minNodesPerAggregate: 3,
    dpRequired: true,
    maxEpsilonPerRound: 1,
    maxEpsilonTotal: 10,
    forbiddenFeatureCategories: ['religion', 'health', 'ethnicity', 'biometric', 'political', 'sexual-orientation'],
  }),
  PolicyProfile.parse({
    jurisdiction: 'US-CA-CCPA',
    version: 1,
    description: 'CCPA/CPRA: sensitive personal information limited; opt-out honoured through consent column.',
    minNodesPerAggregate: 2,
    dpRequired: false,
    forbiddenFeatureCategories: ['precise-location', 'ethnicity', 'religion', 'health', 'minors'],
  }),
  PolicyProfile.parse({
    jurisdiction: 'CN-PIPL',
    version: 1,
    description: 'PIPL Art. 28: no sensitive personal information without separate consent; local processing only (raw data never leaves).',
    minNodesPerAggregate: 3,
    dpRequired: true,
    maxEpsilonTotal: 8,
    forbiddenFeatureCategories: ['religion', 'health', 'precise-location', 'minors', 'financial-account', 'biometric'],
  }),
];

export interface PolicyViolation {
  jurisdiction: string;
  version: number;
  rule: 'min-nodes' | 'dp-required' | 'max-epsilon-per-round' | 'max-epsilon-total' | 'forbidden-feature' | 'purpose-consent' | 'no-policy';
  message: string;
}

export interface StudyPrivacyFacts {
  /** Client-level epsilon one round costs and the study's total budget (null: no central DP). */
  epsilonPerRound: number | null;
  epsilonTotal: number | null;
}

/** Every rule of `policy` the study breaks (empty: compliant). */
export function checkStudyAgainstPolicy(config: StudyConfig, policy: PolicyProfile, facts: StudyPrivacyFacts): PolicyViolation[] {
  const out: PolicyViolation[] = [];
  const v = (rule: PolicyViolation['rule'], message: string) => out.push({ jurisdiction: policy.jurisdiction, version: policy.version, rule, message: `${policy.jurisdiction} v${policy.version}: ${message}` });
  if (config.minNodesPerRound < policy.minNodesPerAggregate) v('min-nodes', `aggregates need at least ${policy.minNodesPerAggregate} nodes; the study allows ${config.minNodesPerRound}`);
  if (policy.dpRequired && !config.privacy?.central) v('dp-required', 'differential privacy (central, client-level) is required');
  if (policy.maxEpsilonPerRound !== undefined && facts.epsilonPerRound !== null && facts.epsilonPerRound > policy.maxEpsilonPerRound) {
    v('max-epsilon-per-round', `a round may spend at most epsilon ${policy.maxEpsilonPerRound}; this study's first round spends ${facts.epsilonPerRound.toFixed(4)}`);
  }
  if (policy.maxEpsilonTotal !== undefined) {
    if (facts.epsilonTotal === null) v('max-epsilon-total', `a total epsilon of at most ${policy.maxEpsilonTotal} is required; the study sets no budget`);
    else if (facts.epsilonTotal > policy.maxEpsilonTotal) v('max-epsilon-total', `total epsilon at most ${policy.maxEpsilonTotal}; the study's budget is ${facts.epsilonTotal}`);
  }
  for (const f of config.features.features) {
    if (f.category && policy.forbiddenFeatureCategories.includes(f.category)) v('forbidden-feature', `feature "${f.name}" is in the forbidden category "${f.category}"`);
  }
  const purpose = config.consent?.purpose;
  if (purpose && !policy.consentFor[purpose]) v('purpose-consent', `no consent level is defined for purpose "${purpose}"`);
  return out;
}

/**
 * The stricter of two profiles of the same jurisdiction, rule by rule: the larger minimum, DP if
 * either requires it, the smaller epsilon limits, the union of forbidden categories, and for
 * each purpose only the consent values both accept. A node combines its own profile with the
 * coordinator's this way, so the coordinator can make a node stricter but never laxer: nothing
 * the coordinator sends needs to be trusted.
 */
export function stricterOf(a: PolicyProfile, b: PolicyProfile): PolicyProfile {
  const min = (x?: number, y?: number) => (x === undefined ? y : y === undefined ? x : Math.min(x, y));
  const consentFor: PolicyProfile['consentFor'] = {};
  for (const purpose of Purpose.options) {
    const x = a.consentFor[purpose];
    const y = b.consentFor[purpose];
    // A purpose one side defines no consent for stays undefined: studies for it are refused.
    if (!x || !y) continue;
    const both = x.filter((v) => y.includes(v));
    if (both.length > 0) consentFor[purpose] = both;
  }
  const maxEpsilonPerRound = min(a.maxEpsilonPerRound, b.maxEpsilonPerRound);
  const maxEpsilonTotal = min(a.maxEpsilonTotal, b.maxEpsilonTotal);
  return {
    jurisdiction: a.jurisdiction,
    version: Math.max(a.version, b.version),
    description: `stricter of ${a.jurisdiction} v${a.version} and ${b.jurisdiction} v${b.version}`,
    minNodesPerAggregate: Math.max(a.minNodesPerAggregate, b.minNodesPerAggregate),
    dpRequired: a.dpRequired || b.dpRequired,
    ...(maxEpsilonPerRound !== undefined ? { maxEpsilonPerRound } : {}),
    ...(maxEpsilonTotal !== undefined ? { maxEpsilonTotal } : {}),
    forbiddenFeatureCategories: [...new Set([...a.forbiddenFeatureCategories, ...b.forbiddenFeatureCategories])].sort(),
    consentFor,
  };
}

/** Rows whose consent covers the purpose are kept; returns the kept row indices and the count dropped. */
export function consentFilter(consentValues: string[], purpose: Purpose, policy: Pick<PolicyProfile, 'consentFor'>): { keep: number[]; dropped: number } {
  const covering = new Set(policy.consentFor[purpose] ?? []);
  const keep: number[] = [];
  consentValues.forEach((v, i) => {
    if (covering.has(v.trim().toLowerCase())) keep.push(i);
  });
  return { keep, dropped: consentValues.length - keep.length };
}

/** Privacy facts a policy judges: the costliest round (the first: RDP composition is concave) and the budget. */
export function privacyFacts(config: StudyConfig): StudyPrivacyFacts {
  const central = config.privacy?.central;
  return {
    epsilonPerRound: central
      ? central.noiseMultiplier > 0
        ? computeEpsilon({ q: central.nodeSamplingRate, sigma: accountedNoiseMultiplier(central), steps: 1, delta: config.privacy!.delta }, config.privacy!.accountant)
        : Number.POSITIVE_INFINITY
      : null,
    epsilonTotal: config.privacy?.budgetEpsilon ?? null,
  };
}

/** The encoded input columns of each feature (numeric: 1; categorical: vocabulary + other + missing). */
export function featureColumns(spec: FeatureSpec): Map<string, { offset: number; width: number }> {
  const out = new Map<string, { offset: number; width: number }>();
  let offset = 0;
  for (const f of spec.features) {
    const width = f.kind === 'numeric' ? 1 : f.categories.length + 2;
    out.set(f.name, { offset, width });
    offset += width;
  }
  if (offset !== encodedWidth(spec)) throw new Error('featureColumns: width mismatch');
  return out;
}
