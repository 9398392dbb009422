import { checkStudyAgainstPolicy, privacyFacts, type PolicyViolation } from '../../protocols/policy/jurisdiction-policy.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { Db } from '../db/database.ts';
import { ConflictError } from '../errors.ts';
import { latestPolicies } from '../policies/policy-service.ts';

/**
 * Every rule of `jurisdiction`'s profile in force that the study breaks (empty: a node under that
 * law may take part). The same rules the coordinator applies before each round
 * (policy-service.ts checkParticipants), so a token is refused for exactly the nodes whose rounds
 * would be refused. `undefined` profile: the caller checked that the jurisdiction is known.
 */
export async function studyViolationsForJurisdiction(db: Db, config: StudyConfig, jurisdiction: string): Promise<PolicyViolation[]> {
  const policy = (await latestPolicies(db)).get(jurisdiction);
  if (!policy) return [];
  return checkStudyAgainstPolicy(config, policy, privacyFacts(config));
}

/**
 * Refuses an enrollment token for a node whose law the study breaks: issued anyway, the node
 * would enroll and every round with it would be refused (or the study stopped) much later.
 */
export async function refuseTokenBreakingPolicy(db: Db, studyId: string, config: StudyConfig, jurisdiction: string): Promise<void> {
  const violations = await studyViolationsForJurisdiction(db, config, jurisdiction);
  if (violations.length === 0) return;
  const first = violations[0];
  throw new ConflictError(
    'POLICY_VIOLATION',
    `study ${studyId} breaks the ${jurisdiction} policy, so a node under it could never take part (rule ${first.rule} of ${first.jurisdiction} v${first.version}): ${violations.map((v) => `[${v.rule}] ${v.message}`).join('; ')}`,
    'body.jurisdiction',
  );
}
