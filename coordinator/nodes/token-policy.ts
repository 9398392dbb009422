import type { StudyConfig } from '../../protocols/messages.ts';
import type { Db } from '../db/database.ts';
import { ConflictError } from '../errors.ts';
import { policyViolationsFor } from '../studies/study-plan.ts';

/**
 * Refuses an enrollment token for a node whose law the study breaks: issued anyway, the node
 * would enroll and every round with it would be refused (or the study stopped) much later. The
 * rules are the ones study creation checks for planned jurisdictions (studies/study-plan.ts
 * policyViolationsFor) and rounds check for participants (policy-service.ts checkParticipants),
 * against the coordinator's profiles in force.
 */
export async function refuseTokenBreakingPolicy(db: Db, studyId: string, config: StudyConfig, jurisdiction: string): Promise<void> {
  const violations = await policyViolationsFor(db, config, [jurisdiction]);
  if (violations.length === 0) return;
  const first = violations[0];
  throw new ConflictError(
    'POLICY_VIOLATION',
    `study ${studyId} breaks the ${jurisdiction} policy, so a node under it could never take part (rule ${first.rule} of ${first.jurisdiction} v${first.version}): ${violations.map((v) => `[${v.rule}] ${v.message}`).join('; ')}`,
    'body.jurisdiction',
  );
}
