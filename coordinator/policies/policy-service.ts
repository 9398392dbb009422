import type { Transaction } from 'kysely';
import { checkStudyAgainstPolicy, PolicyProfile, privacyFacts, type PolicyViolation } from '../../protocols/policy/jurisdiction-policy.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { appendAudit } from '../audit/audit-log.ts';

/** The latest version of each jurisdiction's profile. */
export async function latestPolicies(db: Db | Transaction<Database>): Promise<Map<string, PolicyProfile>> {
  const rows = await db.selectFrom('policies').select(['jurisdiction', 'version', 'profile']).orderBy('jurisdiction').orderBy('version', 'desc').execute();
  const out = new Map<string, PolicyProfile>();
  for (const r of rows) if (!out.has(r.jurisdiction)) out.set(r.jurisdiction, PolicyProfile.parse(r.profile));
  return out;
}


/**
 * Checks a study against the policy of every participant's jurisdiction; returns the violations
 * (empty: the round may start). Fails closed: a participant with no jurisdiction, or one with no
 * profile on record, is a `no-policy` violation, not a participant judged by none.
 */
export async function checkParticipants(tx: Transaction<Database>, config: StudyConfig, nodeIds: string[]): Promise<PolicyViolation[]> {
  if (nodeIds.length === 0) return [];
  const nodes = await tx.selectFrom('nodes').select(['id', 'name', 'jurisdiction']).where('id', 'in', nodeIds).orderBy('name').execute();
  const policies = await latestPolicies(tx);
  const facts = privacyFacts(config);
  const seen = new Set<string>();
  const violations: PolicyViolation[] = [];
  for (const n of nodes) {
    const policy = n.jurisdiction ? policies.get(n.jurisdiction) : undefined;
    if (!policy) {
      const why = n.jurisdiction ? `its jurisdiction ${n.jurisdiction} has no policy profile on this coordinator` : 'it has no jurisdiction on record';
      violations.push({ jurisdiction: n.jurisdiction ?? '(none)', version: 0, rule: 'no-policy', message: `node ${n.name} (${n.id}) cannot take part: ${why}; publish a profile (POST /v1/policies) or re-enroll it with a token naming its jurisdiction` });
      continue;
    }
    if (seen.has(policy.jurisdiction)) continue;
    seen.add(policy.jurisdiction);
    violations.push(...checkStudyAgainstPolicy(config, policy, facts));
  }
  return violations;
}

export function createPolicyService(db: Db) {
  return {
    async list() {
      const rows = await db.selectFrom('policies').selectAll().orderBy('jurisdiction').orderBy('version').execute();
      return rows.map((r) => ({ ...PolicyProfile.parse(r.profile), createdAt: new Date(r.created_at).toISOString() }));
    },
    /** The profile in force for a jurisdiction (its latest version), or undefined. */
    async current(jurisdiction: string) {
      return (await latestPolicies(db)).get(jurisdiction);
    },
    /** The profile in force for a node's jurisdiction, as the node itself may read it. */
    async forNode(nodeId: string) {
      const node = await db.selectFrom('nodes').select('jurisdiction').where('id', '=', nodeId).executeTakeFirstOrThrow();
      const policy = node.jurisdiction ? (await latestPolicies(db)).get(node.jurisdiction) : undefined;
      return { jurisdiction: node.jurisdiction, policy: policy ?? null };
    },
    /** A change is a new version; old versions stay, so past rounds remain explainable. */
    async publish(profile: Omit<PolicyProfile, 'version'>, actor: string) {
      return db.transaction().execute(async (tx) => {
        const last = await tx.selectFrom('policies').select('version').where('jurisdiction', '=', profile.jurisdiction).orderBy('version', 'desc').executeTakeFirst();
        const next = PolicyProfile.parse({ ...profile, version: (last?.version ?? 0) + 1 });
        await tx.insertInto('policies').values({ jurisdiction: next.jurisdiction, version: next.version, profile: JSON.stringify(next) }).execute();
        await appendAudit(tx, { actor, kind: 'policy.changed', data: { policy: next } });
        return next;
      });
    },
  };
}
export type PolicyService = ReturnType<typeof createPolicyService>;
