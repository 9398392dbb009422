import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import type { Task } from '../protocols/messages.ts';
import { checkStudyAgainstPolicy, DEFAULT_POLICIES, PolicyProfile, privacyFacts, stricterOf } from '../protocols/policy/jurisdiction-policy.ts';
import { dpSgdStepsPerRound } from '../protocols/privacy/study-privacy.ts';
import { recordLevelDeltaProblem } from '../protocols/privacy/study-checks.ts';
import type { NodeConfig } from './config.ts';
import type { CoordinatorClient } from './coordinator-client.ts';
import { NodePrivacyLedger, type LedgerEntry } from './privacy-ledger.ts';

/**
 * The policy check: whether this node may train for a task at all, decided here whatever the
 * coordinator decided. The law its data falls under (its own profile, tightened never loosened by
 * the coordinator's), and the partner's own ceiling on record-level epsilon.
 */

/** A node without a jurisdiction or policy: it does not start (the message says what to give). */
export class NodePolicyRequiredError extends Error {}

/** The node's own profile: its --policy file, or the built-in one of its --jurisdiction. Required. */
export function loadNodePolicy(config: Pick<NodeConfig, 'policy' | 'jurisdiction'>): PolicyProfile {
  if (config.policy) {
    let profile: PolicyProfile;
    try {
      profile = PolicyProfile.parse(JSON.parse(readFileSync(config.policy, 'utf8')));
    } catch (err) {
      throw new NodePolicyRequiredError(`the policy file ${config.policy} cannot be used: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (config.jurisdiction && config.jurisdiction !== profile.jurisdiction) throw new NodePolicyRequiredError(`--jurisdiction ${config.jurisdiction} contradicts the policy file ${config.policy}, which is for ${profile.jurisdiction}`);
    return profile;
  }
  if (!config.jurisdiction) {
    throw new NodePolicyRequiredError(
      `this node has no jurisdiction: give --jurisdiction NAME (FEDMARK_NODE_JURISDICTION; built in: ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}) or --policy FILE. A node does not train on data without knowing which law it falls under.`,
    );
  }
  const builtIn = DEFAULT_POLICIES.find((p) => p.jurisdiction === config.jurisdiction);
  if (!builtIn) throw new NodePolicyRequiredError(`no built-in policy for jurisdiction ${config.jurisdiction} (built in: ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}); give --policy FILE`);
  return builtIn;
}

/**
 * The policy this node applies: its own profile combined with the version in force on the
 * coordinator, rule by rule the stricter (stricterOf). The coordinator can thus tighten what
 * the node accepts (a newer version of the law's profile) but never loosen it, so its answer
 * needs no trust; when it cannot be read, the node's own profile applies alone.
 */
export async function effectivePolicy(local: PolicyProfile, client: CoordinatorClient, log: Logger): Promise<PolicyProfile> {
  return (await readEffectivePolicy(local, client, log)).policy;
}

/** effectivePolicy, with which version it read on the coordinator (`read`: undefined when it could not). */
async function readEffectivePolicy(local: PolicyProfile, client: CoordinatorClient, log: Logger): Promise<{ policy: PolicyProfile; read?: PolicyVersion }> {
  let remote: Awaited<ReturnType<CoordinatorClient['policy']>>;
  try {
    remote = await client.policy();
  } catch (err) {
    log.warn({ jurisdiction: local.jurisdiction, err: err instanceof Error ? err.message : String(err) }, "cannot read the coordinator's policy profile; applying this node's own");
    return { policy: local };
  }
  const read = { jurisdiction: remote.jurisdiction, version: remote.policy?.version ?? null };
  if (!remote.policy || remote.jurisdiction !== local.jurisdiction) {
    log.warn({ local: local.jurisdiction, coordinator: remote.jurisdiction }, "the coordinator has no profile for this node's jurisdiction; applying this node's own");
    return { policy: local, read };
  }
  if (remote.policy.version !== local.version || !isDeepStrictEqual(remote.policy, local)) {
    log.warn({ jurisdiction: local.jurisdiction, localVersion: local.version, coordinatorVersion: remote.policy.version }, "this node's policy profile differs from the coordinator's; applying the stricter of both, rule by rule");
  }
  return { policy: stricterOf(local, remote.policy), read };
}

type PolicyVersion = NonNullable<Task['policyInForce']>;

/**
 * The effective policy, read again only when a task says another version is in force on the
 * coordinator (Task.policyInForce; a change of profile is always a new version). It was read at
 * every fit task: one signed request of ~5.5 per node per round in the demo (issue 13). A task
 * without that field (an older coordinator), or a failed read, means reading it as before.
 */
export class PolicyInForce {
  private read?: PolicyVersion;
  private policy?: PolicyProfile;

  constructor(
    private readonly local: PolicyProfile,
    private readonly client: CoordinatorClient,
    private readonly log: Logger,
  ) {}

  async current(task?: Pick<Task, 'policyInForce'>): Promise<PolicyProfile> {
    const said = task?.policyInForce;
    if (this.policy && this.read && said && said.jurisdiction === this.read.jurisdiction && said.version === this.read.version) return this.policy;
    const { policy, read } = await readEffectivePolicy(this.local, this.client, this.log);
    this.policy = policy;
    this.read = read;
    return policy;
  }
}

/** A round's DP-SGD spending, as the node's ledger records it. */
export type Spend = Omit<LedgerEntry, 'at'>;

export type FitPermission =
  | { allowed: true; ledger: NodePrivacyLedger; spend?: Spend }
  | { allowed: false; state: 'policy-refused' | 'privacy-ceiling'; message: string; details: Record<string, unknown> };

/**
 * May this node train for `task`? Its policy's rules (forbidden features are not a refusal: they
 * were dropped from its data when it was loaded), then the study's delta against its `rows`
 * (DP-SGD with delta >= 1/rows protects no row: study-checks.ts), then its privacy ceiling
 * against its own ledger, all before any training.
 */
export function checkFitTask(task: Task, policy: PolicyProfile, config: Pick<NodeConfig, 'stateDir' | 'maxEpsilon' | 'maxEpsilonDelta' | 'data' | 'ledgerDir' | 'dataSourceId'>, rows?: number): FitPermission {
  const violations = checkStudyAgainstPolicy(task.config, policy, privacyFacts(task.config)).filter((v) => v.rule !== 'forbidden-feature');
  if (violations.length > 0) {
    return { allowed: false, state: 'policy-refused', message: `refusing to train: ${violations.map((v) => v.message).join('; ')}`, details: { violations } };
  }
  const deltaProblem = rows === undefined ? null : recordLevelDeltaProblem(task.config, rows);
  if (deltaProblem) return { allowed: false, state: 'privacy-ceiling', message: `refusing to train: ${deltaProblem}`, details: { rows, delta: task.config.privacy?.delta } };
  const dpSgd = task.config.privacy?.dpSgd;
  const accountant = task.config.privacy?.accountant ?? 'rdp';
  // The data source's ledger, shared with every other study using the same data on this machine.
  const ledger = NodePrivacyLedger.for(config, accountant, config.maxEpsilonDelta, config.maxEpsilon);
  const spend = dpSgd ? { studyId: task.studyId, round: task.round, samplingRate: dpSgd.samplingRate, noiseMultiplier: dpSgd.noiseMultiplier, steps: dpSgdStepsPerRound(dpSgd) } : undefined;
  // The partner's ceiling, checked here before any training, whatever the coordinator says.
  if (config.maxEpsilon !== undefined) {
    const after = spend ? ledger.epsilonIf(spend) : Number.POSITIVE_INFINITY;
    if (after > config.maxEpsilon) {
      const message = spend
        ? `round ${task.round} would bring this node's data (every study using it on this machine) to epsilon ${after.toFixed(4)} (delta ${config.maxEpsilonDelta}), over its ceiling of ${config.maxEpsilon}; refusing to train`
        : `study ${task.studyId} does not run DP-SGD, so training would spend unbounded epsilon; this node's ceiling is ${config.maxEpsilon}; refusing to train`;
      return { allowed: false, state: 'privacy-ceiling', message, details: { epsilonAfter: after, ceiling: config.maxEpsilon } };
    }
  }
  return { allowed: true, ledger, ...(spend ? { spend } : {}) };
}
