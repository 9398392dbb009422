import type { Transaction } from 'kysely';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../protocols/audit/audit-chain.ts';
import { checkStudyAgainstPolicy, DEFAULT_POLICIES, PolicyProfile, privacyFacts, type PolicyViolation } from '../../protocols/policy/jurisdiction-policy.ts';
import type { StudyConfig } from '../../protocols/messages.ts';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { appendAudit } from '../audit/audit-log.ts';
import { nodesWithJurisdiction } from '../nodes/repository.ts';
import type { AuthenticatedNode } from '../nodes/node-service.ts';
import { findNodePolicy, findPolicyVersion, insertPolicy, latestPolicyVersion, listPolicies, listPolicyVersionsLatestFirst } from './repository.ts';

/** The latest version of each jurisdiction's profile. */
export async function latestPolicies(db: Db | Transaction<Database>): Promise<Map<string, PolicyProfile>> {
  const rows = await listPolicyVersionsLatestFirst(db);
  const out = new Map<string, PolicyProfile>();
  for (const r of rows) if (!out.has(r.jurisdiction)) out.set(r.jurisdiction, parsedProfile(r.jurisdiction, r.version, r.profile));
  return out;
}

/**
 * A stored profile, parsed once per jurisdiction and version: a version is never changed once
 * published (a change is a new version), and every round's opening reads the latest ones (issue
 * 13: the parse was a round's largest zod cost after the status). Keyed by the stored JSON too,
 * so a row that differs (another database in the same process: tests) is parsed afresh.
 */
const parsedProfiles = new Map<string, { json: string; profile: PolicyProfile }>();
function parsedProfile(jurisdiction: string, version: number, stored: unknown): PolicyProfile {
  const key = `${jurisdiction}\u0000${version}`;
  const json = JSON.stringify(stored);
  const hit = parsedProfiles.get(key);
  if (hit && hit.json === json) return hit.profile;
  const profile = PolicyProfile.parse(stored);
  if (parsedProfiles.size > 1000) parsedProfiles.clear();
  parsedProfiles.set(key, { json, profile });
  return profile;
}

/**
 * Checks a study against the policy of every participant's jurisdiction; returns the violations
 * (empty: the round may start). Fails closed: a participant with no jurisdiction, or one with no
 * profile on record, is a `no-policy` violation, not a participant judged by none.
 */
export async function checkParticipants(tx: Transaction<Database>, config: StudyConfig, nodeIds: string[]): Promise<PolicyViolation[]> {
  if (nodeIds.length === 0) return [];
  const nodes = await nodesWithJurisdiction(tx, nodeIds);
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

/** One jurisdiction's profile as a round checked it (recorded in the round.started audit entry). */
export interface PolicyInForce {
  jurisdiction: string;
  version: number;
  /** True when the profile is one of the built-in DEFAULT_POLICIES, unchanged (never published through the API, so no policy.changed entry names it). */
  builtIn: boolean;
  /** sha256 of the profile's canonical JSON: what an auditor compares against a published profile. */
  profileSha256: string;
  /** The participants judged by it. */
  nodeIds: string[];
}

/**
 * The profile version each participant's jurisdiction had when the round was checked, so that
 * "which policy was in force for model version X" is answered from the audit log alone (the
 * built-in profiles, seeded by migration 0006, have no policy.changed entry of their own).
 */
export async function policiesInForce(tx: Transaction<Database>, nodeIds: string[]): Promise<PolicyInForce[]> {
  if (nodeIds.length === 0) return [];
  const nodes = await nodesWithJurisdiction(tx, nodeIds);
  const policies = await latestPolicies(tx);
  const byJurisdiction = new Map<string, PolicyInForce>();
  for (const n of nodes) {
    const policy = n.jurisdiction ? policies.get(n.jurisdiction) : undefined;
    if (!n.jurisdiction || !policy) continue;
    let entry = byJurisdiction.get(n.jurisdiction);
    if (!entry) {
      const canonical = canonicalJson(policy);
      const builtIn = DEFAULT_POLICIES.some((d) => canonicalJson(PolicyProfile.parse(d)) === canonical);
      entry = { jurisdiction: n.jurisdiction, version: policy.version, builtIn, profileSha256: createHash('sha256').update(canonical).digest('hex'), nodeIds: [] };
      byJurisdiction.set(n.jurisdiction, entry);
    }
    entry.nodeIds.push(n.id);
  }
  return [...byJurisdiction.values()].sort((a, b) => a.jurisdiction.localeCompare(b.jurisdiction));
}

/** Bound on the remembered profile versions (a handful of jurisdictions, a few versions each). */
const MAX_REMEMBERED_PROFILES = 1000;

export function createPolicyService(db: Db) {
  // Profiles by jurisdiction and version. A version is never changed once written (policies are
  // append-only; a change is a new version), so a remembered one is never stale, on any replica:
  // which version is in force is read fresh with each node request (AuthenticatedNode.policyInForce).
  const profiles = new Map<string, PolicyProfile>();
  async function profileVersion(jurisdiction: string, version: number): Promise<PolicyProfile | null> {
    const key = `${version}@${jurisdiction}`;
    const remembered = profiles.get(key);
    if (remembered) return remembered;
    const stored = await findPolicyVersion(db, jurisdiction, version);
    if (stored === undefined) return null;
    const profile = PolicyProfile.parse(stored);
    if (profiles.size >= MAX_REMEMBERED_PROFILES) profiles.clear();
    profiles.set(key, profile);
    return profile;
  }

  return {
    async list() {
      const rows = await listPolicies(db);
      return rows.map((r) => ({ ...PolicyProfile.parse(r.profile), createdAt: new Date(r.created_at).toISOString() }));
    },
    /** The profile in force for a jurisdiction (its latest version), or undefined. */
    async current(jurisdiction: string) {
      return (await latestPolicies(db)).get(jurisdiction);
    },
    /**
     * The profile in force for a node's jurisdiction, as the node itself may read it. Nodes ask
     * every round (210 queries in the demo): when its signed request already read which version
     * is in force, the profile comes from memory, so no query at all; else one query.
     */
    async forNode(node: Pick<AuthenticatedNode, 'id' | 'policyInForce'>) {
      const inForce = node.policyInForce;
      if (inForce) {
        const { jurisdiction, version } = inForce;
        return { jurisdiction, policy: jurisdiction && version !== null ? await profileVersion(jurisdiction, version) : null };
      }
      const { jurisdiction, profile } = await findNodePolicy(db, node.id);
      return { jurisdiction, policy: jurisdiction && profile ? PolicyProfile.parse(profile) : null };
    },
    /** A change is a new version; old versions stay, so past rounds remain explainable. */
    async publish(profile: Omit<PolicyProfile, 'version'>, actor: string) {
      return db.transaction().execute(async (tx) => {
        const next = PolicyProfile.parse({ ...profile, version: (await latestPolicyVersion(tx, profile.jurisdiction)) + 1 });
        await insertPolicy(tx, next.jurisdiction, next.version, JSON.stringify(next));
        await appendAudit(tx, { actor, kind: 'policy.changed', data: { policy: next } });
        return next;
      });
    },
  };
}
export type PolicyService = ReturnType<typeof createPolicyService>;
