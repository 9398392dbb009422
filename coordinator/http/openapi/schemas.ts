import { z } from 'zod';
import { Checkpoint } from '../../../protocols/audit/audit-chain.ts';
import { Id, TaskMessage, UpdateReceipt } from '../../../protocols/messages.ts';
import { PolicyProfile } from '../../../protocols/policy/jurisdiction-policy.ts';

/**
 * Schemas the API reference needs beyond protocols/messages.ts and the routers' exported ones:
 * response shapes that have no zod schema of their own (services return plain objects), and
 * copies of a few request schemas still private to routers that other work is editing
 * (nodes/router.ts, studies/router.ts). The copies are checked against real requests by
 * test/coordinator/openapi.test.ts; exporting the originals would retire them.
 */

/** A JSON object whose main fields are listed; the service may add more (`additionalProperties`). */
export const objectWith = (description: string, shape: z.ZodRawShape = {}) => z.looseObject(shape).describe(description);

const iso = z.string().describe('ISO 8601 timestamp');

// Mirrors of router-private request schemas (see the note above).
/** nodes/router.ts `RotateKey`. */
export const RotateNodeKey = z.object({ publicKey: z.string().min(100).max(20_000) });
/** nodes/router.ts `Withdraw`. */
export const WithdrawNode = z.object({ reason: z.string().max(500).optional() });
/** nodes/router.ts `Revoke`. */
export const RevokeNode = z.object({ reason: z.string().min(1).max(500).default('revoked by the operator') });
/** nodes/router.ts `ListQuery`: the listings' optional study filter. */
export const ListQuery = z.object({ study: Id.optional() });
/** studies/router.ts `StopBody`. */
export const StopStudy = z.strictObject({ reason: z.string().trim().min(1).max(1000).optional() });
/** studies/router.ts `WatchQuery`: ?wait=S&seen=N holds the request until the study changes; ?fromRound=K lists only rounds K and later. */
export const WatchQuery = z.object({ wait: z.coerce.number().min(0).max(120).default(0), seen: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(), fromRound: z.coerce.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional() });
/** policies/router.ts `NewPolicy`: a profile without its version (the coordinator numbers it). */
export const NewPolicy = PolicyProfile.omit({ version: true });

/**
 * The task as documented: the same as protocols' `TaskMessage`, except that the checkpoint is plainly
 * optional (the schema's `.catch` only says how a node parses it: one it cannot read is dropped),
 * and `config` is left out when the node sent `?config=` with the task's `configSha256`.
 */
export const TaskDoc = TaskMessage.extend({ auditCheckpoint: Checkpoint.optional() });
/** The update receipt as documented: its `next` task is the documented Task (TaskDoc). */
export const UpdateReceiptDoc = UpdateReceipt.extend({ next: TaskDoc.optional() });

export const Health = z.object({ ok: z.boolean() });
export const IssuedApiToken = objectWith('the new token: `token` is shown once and never again', { id: Id, token: z.string(), role: z.enum(['admin', 'auditor', 'analyst']), name: z.string(), region: z.string().nullable().optional() });
export const ApiTokenList = z.object({ tokens: z.array(objectWith('a token, never its secret', { id: Id, role: z.string(), name: z.string(), created_at: iso, revoked_at: iso.nullable() })) });
export const EnrollmentTokenIssued = objectWith('`token` is given to the node operator once', { token: z.string(), expiresAt: iso, studyId: Id, nodeName: z.string(), region: z.string(), jurisdiction: z.string().optional() });
export const NodeSummary = objectWith('a node as operators see it', { id: Id, studyId: Id, name: z.string(), region: z.string(), jurisdiction: z.string().nullable(), state: z.string(), message: z.string().nullable(), rounds: z.number().int() });
export const NodeList = z.object({ nodes: z.array(NodeSummary) });
export const EnrollmentTokenList = z.object({ tokens: z.array(objectWith('an enrollment token: its hash prefix (as the audit log names it), never the token')) });
export const NodeRevoked = z.object({ nodeId: Id, revokedAt: iso });
export const NodeWithdrawn = z.object({ nodeId: Id, withdrawnAt: iso });
export const NodeKeyRotated = z.object({ nodeId: Id, fingerprint: z.string(), previousFingerprint: z.string() });
export const NodeStudy = objectWith("the node's study: state, current round and configuration (its `release` list: what the node may send)", { studyId: Id, state: z.string(), currentRound: z.number().int(), config: objectWith('the study configuration (StudyConfig, defaults applied)') });
export const NodePolicy = z.object({ jurisdiction: z.string().nullable().optional(), policy: objectWith('the policy profile in force (PolicyProfile)').nullable() });
export const PolicyList = z.object({ policies: z.array(objectWith('a policy profile version (PolicyProfile) with its createdAt')) });
export const CoordinatorKeyInfo = z.object({ fingerprint: z.string(), publicKey: z.string(), rotations: z.array(z.object({ fingerprint: z.string(), announcement: z.string(), at: iso })) });
export const KeyRotated = z.object({ fingerprint: z.string(), announcement: z.string() });
export const StudyCreated = objectWith('the new study: its id, its round-0 model hash, a warm start\'s source (initializedFrom: study, version, sha256), and warnings about its configuration (if any)', { id: Id, modelSha256: z.string(), initializedFrom: z.object({ study: Id, version: z.number().int(), sha256: z.string() }).optional() });
export const StudyList = z.object({ studies: z.array(objectWith('a study the caller may see', { id: Id, name: z.string(), state: z.string() })) });
export const StudyStopped = objectWith('the study as stopped (reason, by whom, when); `changed` false when it had already ended', { changed: z.boolean(), closedRound: z.number().int().nullable() });
export const StudyPlan = objectWith('what the study would be: its configuration with defaults, warnings and policy checks, and initialModel (the round-0 model: seeded { from: seed, seed, sha256 } or a warm start { from: study, study, version, sha256 }); nothing is written');
export const RoundOpened = objectWith('the round opened', { studyId: Id, round: z.number().int() });
export const RoundView = objectWith("a round as the caller's role may see it (RoundSummary; analysts: their region's view)");
export const UpdateView = objectWith("one node's update of a round, as the caller's role may see it (never the weights)");
export const EvaluationStored = z.object({ studyId: Id, round: z.number().int(), nodeId: Id, stored: z.boolean() });
export const PrivacyReport = objectWith("a study's privacy report: budget, spending, and the bound that holds against each reader (README, Privacy)");
export const NodePrivacyReport = objectWith("one node's privacy spending in a study");
export const RegionalReport = objectWith("a region's metrics in a study (README, Regional views)");
export const AuditExport = objectWith('every audit entry and checkpoint, and the coordinator key: verify with `fedmark audit verify` (README, Audit)');
export const NodeSelf = objectWith("the node's own record: state and the rounds it took part in", { id: Id, studyId: Id, state: z.string(), rounds: z.number().int() });
export const DashboardStudies = z.object({ studies: z.array(objectWith('a study the caller may see, with kind, rounds and creation time')) });
export const DashboardAudit = objectWith("the audit chain's verification status and last checkpoint (no new checkpoint is signed)");

/** A binary body: the binary codec's bytes (models), or a sealed OpenPGP message (updates). */
export const Binary = z.string().meta({ format: 'binary' });
