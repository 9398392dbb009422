import { StudyConfig } from '../../protocols/messages.ts';
import { recordLevelDeltaProblem } from '../../protocols/privacy/study-checks.ts';
import { findStudyConfig } from '../studies/repository.ts';
import type { CreateEnrollmentToken, EnrollResponse, NodeStatusReport } from '../../protocols/messages.ts';
import type { Db } from '../db/database.ts';
import type { Transaction } from 'kysely';
import type { Database } from '../db/schema.ts';
import { BadRequestError, ConflictError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import { hashSecret, newId, newSecret } from '../security.ts';
import { appendAudit } from '../audit/audit-log.ts';
import type { Logger } from 'pino';
import { keyStatus, loadPublicKey } from '../../protocols/crypto/index.ts';
import { listJurisdictions } from '../policies/repository.ts';
import { findStudyRow } from '../studies/repository.ts';
import { findNodeByApiKeyHash, findNodeForAuth, findNodeForRevocation, findNodeIdByName, insertEnrollmentToken, insertNode, listEnrollmentTokens, listNodesWithRounds, lockEnrollmentToken, markEnrollmentTokenUsed, updateActiveNode, updateNode } from './repository.ts';
import { refuseTokenBreakingPolicy } from './token-policy.ts';
import { recordNonceForActiveNode, type NodeAtNonce } from '../auth/repository.ts';

/** A jurisdiction a node may enroll under: one with a policy profile on this coordinator. */
async function requireKnownJurisdiction(db: Db | Transaction<Database>, jurisdiction: string, field: string) {
  const known = await listJurisdictions(db);
  if (!known.includes(jurisdiction)) {
    throw new BadRequestError(`unknown jurisdiction ${JSON.stringify(jurisdiction)}: this coordinator has policy profiles for ${known.join(', ')} (publish one with POST /v1/policies)`, field, 'UNKNOWN_JURISDICTION');
  }
}

/** A node key must be a public key, valid now. */
async function checkNodeKey(armored: string, now: Date) {
  let key;
  try {
    key = await loadPublicKey(armored);
  } catch (err) {
    throw new BadRequestError(`publicKey is not a usable OpenPGP public key: ${err instanceof Error ? err.message : String(err)}`, 'body.publicKey');
  }
  const status = await keyStatus(key, now);
  if (status !== 'valid') throw new BadRequestError(`publicKey is ${status}`, 'body.publicKey');
  return { fingerprint: key.getFingerprint() };
}

export interface AuthenticatedNode {
  id: string;
  studyId: string;
  name: string;
  region: string;
  state: string;
  /** The node's pinned OpenPGP public key (armored). */
  publicKey: string | null;
  keyFingerprint: string | null;
  /**
   * Its jurisdiction and that jurisdiction's latest policy version (null: none), as read by the
   * statement that confirmed its signed request; absent when the node was not read that way.
   */
  policyInForce?: { jurisdiction: string | null; version: number | null };
}

type NodeDeps = { db: Db; log: Logger; onNodeChanged: (studyId: string) => void };

/**
 * Nodes: enrollment (one-time, expiring tokens exchanged for a node API key), authentication, and
 * a node's life in its study (key rotation, status, withdrawal, revocation), each change audited.
 *
 * @example
 *   const nodes = createNodeService({ db, log, onNodeChanged: (studyId) => rounds.onNodeChanged(studyId) });
 *   const { token } = await nodes.createEnrollmentToken({ studyId, nodeName: 'a', region: 'eu', expiresInSeconds: 3600 }, 'admin:tok_1');
 */
export function createNodeService(deps: NodeDeps) {
  return { ...createEnrollment(deps), ...createNodeLifecycle(deps), ...createNodeListing(deps) };
}

/** An ISO timestamp, or null. */
const iso = (t: Date | string | null) => (t === null ? null : new Date(t).toISOString());

/** What operators read about nodes and enrollment tokens (`fedmark node ls`, `fedmark token ls`). */
function createNodeListing(deps: NodeDeps) {
  const { db } = deps;
  return {
    /**
     * Nodes, with the rounds each took part in; `region` narrows to one region (an analyst's
     * view). A study that does not exist is a 404 for whoever may see every study; an analyst
     * passes its region and gets an empty list either way (no existence oracle).
     */
    async listNodes(where: { studyId?: string; region?: string }) {
      if (where.studyId !== undefined && where.region === undefined && !(await findStudyRow(db, where.studyId))) throw new NotFoundError(`study ${where.studyId} does not exist`);
      const rows = await listNodesWithRounds(db, where);
      return rows.map((r) => ({ id: r.id, studyId: r.study_id, name: r.name, region: r.region, jurisdiction: r.jurisdiction, state: r.state, message: r.state_message, lastSeenAt: iso(r.last_seen_at), enrolledAt: iso(r.enrolled_at), rounds: Number(r.rounds ?? 0) }));
    },

    /** A node's own record, as it reads it at start and when its study is not running (was it revoked or withdrawn; how many rounds did it take part in). */
    async describeSelf(nodeId: string) {
      const [row] = await listNodesWithRounds(db, { nodeId });
      if (!row) throw new NotFoundError(`no node ${nodeId}`);
      return { id: row.id, studyId: row.study_id, name: row.name, region: row.region, jurisdiction: row.jurisdiction, state: row.state, message: row.state_message, rounds: Number(row.rounds ?? 0) };
    },

    /** Enrollment tokens as the audit log names them (a prefix of the hash, never the token), with their status. */
    async listEnrollmentTokens(studyId?: string, now = new Date()) {
      const rows = await listEnrollmentTokens(db, studyId);
      return rows.map((r) => ({
        tokenHashPrefix: r.token_hash.slice(0, 16),
        studyId: r.study_id,
        nodeName: r.node_name,
        region: r.region,
        jurisdiction: r.jurisdiction,
        status: r.used_at ? 'used' : new Date(r.expires_at).getTime() < now.getTime() ? 'expired' : 'unused',
        createdAt: iso(r.created_at),
        expiresAt: iso(r.expires_at),
        usedAt: iso(r.used_at),
        nodeId: r.node_id,
      }));
    },
  };
}

/** Enrollment tokens, issued by an operator and exchanged once by a node for its identity. */
function createEnrollment(deps: NodeDeps) {
  const { db, log } = deps;

  return {
    /** `actor` is who issued it (e.g. `admin:tok_...`): the audit entry names them, and never holds the token. */
    async createEnrollmentToken(input: CreateEnrollmentToken, actor = 'admin', now = new Date()) {
      const study = await findStudyRow(db, input.studyId);
      if (!study) throw new NotFoundError(`study ${input.studyId} does not exist`);
      // A node enrolled in an ended study could never train: say so now, not at the node's first poll.
      if (study.state !== 'running') throw new ConflictError('STUDY_ENDED', `study ${input.studyId} is ${study.state}${study.stop_reason ? ` (${study.stop_reason})` : ''}: a new node could not take part`, 'body.studyId');
      if (input.jurisdiction !== undefined) {
        await requireKnownJurisdiction(db, input.jurisdiction, 'body.jurisdiction');
        await refuseTokenBreakingPolicy(db, input.studyId, StudyConfig.parse(study.config), input.jurisdiction);
      }
      const token = newSecret('fmenroll');
      const tokenHash = hashSecret(token);
      const expiresAt = new Date(now.getTime() + input.expiresInSeconds * 1000);
      await db.transaction().execute(async (tx) => {
        await insertEnrollmentToken(tx, { token_hash: tokenHash, study_id: input.studyId, node_name: input.nodeName, region: input.region, jurisdiction: input.jurisdiction ?? null, expires_at: expiresAt });
        // A prefix of the token's hash lets an auditor match this entry to the node.enrolled that
        // used it without the log ever holding a usable secret.
        await appendAudit(tx, { actor, kind: 'enrollment-token.issued', studyId: input.studyId, data: { tokenHashPrefix: tokenHash.slice(0, 16), studyId: input.studyId, nodeName: input.nodeName, region: input.region, jurisdiction: input.jurisdiction ?? null, expiresAt: expiresAt.toISOString() } });
      });
      return { token, expiresAt: expiresAt.toISOString(), studyId: input.studyId, nodeName: input.nodeName, region: input.region, ...(input.jurisdiction ? { jurisdiction: input.jurisdiction } : {}) };
    },

    /** Exchanges a one-time token for a node identity; the token can never be used again. */
    async enroll(token: string, publicKeyArmored: string, jurisdiction?: string, now = new Date()): Promise<Omit<EnrollResponse, 'coordinatorFingerprint' | 'coordinatorPublicKey'>> {
      const key = await checkNodeKey(publicKeyArmored, now);
      const apiKey = newSecret('fmnode');
      const nodeId = newId('node');
      const result = await db.transaction().execute(async (tx) => {
        const row = await lockEnrollmentToken(tx, hashSecret(token));
        if (!row) throw new UnauthenticatedError('unknown enrollment token');
        if (row.used_at) throw new ConflictError('TOKEN_USED', 'this enrollment token was already used; ask the operator for a new one');
        if (new Date(row.expires_at).getTime() < now.getTime()) throw new UnauthenticatedError(`enrollment token expired at ${new Date(row.expires_at).toISOString()}`);
        // The operator's word on the token is binding; a node claiming another law is refused
        // (and the token stays unused). Without one on the token, the node's claim must at
        // least name a profile this coordinator has: never "judged by none".
        if (row.jurisdiction && jurisdiction !== undefined && jurisdiction !== row.jurisdiction) {
          throw new BadRequestError(`this enrollment token enrolls a node under jurisdiction ${row.jurisdiction}, but the node claims ${jurisdiction}; fix the node's --jurisdiction/--policy or ask the operator for a token`, 'body.jurisdiction', 'JURISDICTION_MISMATCH');
        }
        const assigned = row.jurisdiction ?? jurisdiction;
        if (!assigned) throw new BadRequestError('no jurisdiction: neither the enrollment token nor the node names the law its data falls under', 'body.jurisdiction', 'JURISDICTION_REQUIRED');
        await requireKnownJurisdiction(tx, assigned, 'body.jurisdiction');
        if (await findNodeIdByName(tx, row.study_id, row.node_name)) throw new ConflictError('NODE_NAME_TAKEN', `a node named "${row.node_name}" is already enrolled in study ${row.study_id}`);
        await insertNode(tx, { id: nodeId, study_id: row.study_id, name: row.node_name, region: row.region, api_key_hash: hashSecret(apiKey), state: 'enrolled', state_message: null, data_report: null, last_seen_at: now, public_key: publicKeyArmored, key_fingerprint: key.fingerprint, revoked_at: null, jurisdiction: assigned, withdrawn_at: null });
        await markEnrollmentTokenUsed(tx, row.token_hash, nodeId, now);
        await appendAudit(tx, { actor: `node:${nodeId}`, kind: 'node.enrolled', studyId: row.study_id, data: { nodeId, name: row.node_name, region: row.region, jurisdiction: assigned, keyFingerprint: key.fingerprint } });
        return { nodeId, apiKey, studyId: row.study_id, name: row.node_name, region: row.region, jurisdiction: assigned };
      });
      log.info({ nodeId, studyId: result.studyId, name: result.name, region: result.region, keyFingerprint: key.fingerprint }, 'node enrolled');
      deps.onNodeChanged(result.studyId);
      return result;
    },
  };
}

type NodeAuthRow = Pick<NodeAtNonce, 'id' | 'study_id' | 'name' | 'region' | 'state' | 'public_key' | 'key_fingerprint' | 'revoked_at'>;

const revokedError = (node: NodeAuthRow) => new UnauthenticatedError(`node ${node.id} was revoked at ${new Date(node.revoked_at!).toISOString()}`);
const toAuthenticated = (node: NodeAuthRow): AuthenticatedNode => ({ id: node.id, studyId: node.study_id, name: node.name, region: node.region, state: node.state, publicKey: node.public_key, keyFingerprint: node.key_fingerprint });

/** Bound on the remembered API keys (one per node; the scale bench runs 1000 nodes). */
const MAX_REMEMBERED_KEYS = 10_000;

/**
 * What a node's API key claims, remembered so a signed request costs one statement, not two
 * (issue 13: 2 x 1280 auth queries in the demo). NOT an authority: it only supplies the key the
 * signature is checked against; the request's last step (`confirmSignedRequest`) reads the row
 * again in the statement that records the nonce, and refuses a revoked node or a rotated key. So
 * a second coordinator replica revoking or rotating is still obeyed; this process's own changes
 * also forget the entry at once. `api_key_hash` -> node id never changes (no path updates it).
 */
function createClaimCache() {
  const byKeyHash = new Map<string, AuthenticatedNode>();
  const keyHashOf = new Map<string, string>();
  return {
    get: (keyHash: string) => byKeyHash.get(keyHash),
    remember(keyHash: string, node: AuthenticatedNode) {
      if (byKeyHash.size >= MAX_REMEMBERED_KEYS) (byKeyHash.clear(), keyHashOf.clear());
      byKeyHash.set(keyHash, node);
      keyHashOf.set(node.id, keyHash);
    },
    /** Refreshes a node's entry from a row just read (no-op when it is not remembered). */
    refresh(node: AuthenticatedNode) {
      const keyHash = keyHashOf.get(node.id);
      if (keyHash !== undefined) byKeyHash.set(keyHash, node);
    },
    forget(nodeId: string) {
      const keyHash = keyHashOf.get(nodeId);
      if (keyHash !== undefined) byKeyHash.delete(keyHash);
      keyHashOf.delete(nodeId);
    },
  };
}

/** What a signed request's last step found: the node now, or why it is refused. */
export type SignedRequestCheck =
  | { outcome: 'recorded'; node: AuthenticatedNode }
  | { outcome: 'replayed'; node: AuthenticatedNode }
  | { outcome: 'key-rotated'; node: AuthenticatedNode };

/** Authentication and a node's changes of state. */
function createNodeLifecycle(deps: NodeDeps) {
  const { db, log } = deps;
  const claims = createClaimCache();

  return {
    /** Who a node API key belongs to, before its signature is checked (see createClaimCache). */
    async authenticate(apiKey: string): Promise<AuthenticatedNode> {
      const keyHash = hashSecret(apiKey);
      const remembered = claims.get(keyHash);
      if (remembered) return remembered;
      const node = await findNodeByApiKeyHash(db, keyHash);
      if (!node) throw new UnauthenticatedError('unknown node API key');
      if (node.revoked_at) throw revokedError(node);
      const authenticated = toAuthenticated(node);
      claims.remember(keyHash, authenticated);
      return authenticated;
    },

    /** A node as the database has it now, remembered afresh; 401 when it is revoked or gone. */
    async reload(nodeId: string): Promise<AuthenticatedNode> {
      const node = await findNodeForAuth(db, nodeId);
      if (!node) {
        claims.forget(nodeId);
        throw new UnauthenticatedError('unknown node API key');
      }
      if (node.revoked_at) {
        claims.forget(nodeId);
        throw revokedError(node);
      }
      const authenticated = toAuthenticated(node);
      claims.refresh(authenticated);
      return authenticated;
    },

    /**
     * The last step of a node's signed request, after its signature verified with `fingerprint`:
     * records the nonce and reads the node's row in one statement. A revoked or unknown node is
     * refused here (401), whatever `authenticate` remembered.
     */
    async confirmSignedRequest(nodeId: string, fingerprint: string, nonce: string): Promise<SignedRequestCheck> {
      const row = await recordNonceForActiveNode(db, nodeId, fingerprint, nonce);
      if (!row) {
        claims.forget(nodeId);
        throw new UnauthenticatedError('unknown node API key');
      }
      if (row.revoked_at) {
        claims.forget(nodeId);
        throw revokedError(row);
      }
      const node: AuthenticatedNode = { ...toAuthenticated(row), policyInForce: { jurisdiction: row.jurisdiction, version: row.policy_version === null ? null : Number(row.policy_version) } };
      if (row.key_fingerprint !== fingerprint) {
        claims.forget(nodeId);
        return { outcome: 'key-rotated', node };
      }
      claims.refresh(toAuthenticated(row));
      return { outcome: row.recorded ? 'recorded' : 'replayed', node };
    },

    /** Pins a new key; the request carrying it was signed by the old one (checked by the caller). */
    async rotateKey(node: AuthenticatedNode, publicKeyArmored: string, now = new Date()) {
      const key = await checkNodeKey(publicKeyArmored, now);
      if (key.fingerprint === node.keyFingerprint) throw new BadRequestError('that is the key already on record', 'body.publicKey');
      await db.transaction().execute(async (tx) => {
        await updateNode(tx, node.id, { public_key: publicKeyArmored, key_fingerprint: key.fingerprint });
        await appendAudit(tx, { actor: `node:${node.id}`, kind: 'node.key-rotated', studyId: node.studyId, data: { nodeId: node.id, oldFingerprint: node.keyFingerprint, newFingerprint: key.fingerprint } });
      });
      claims.forget(node.id);
      log.info({ nodeId: node.id, oldFingerprint: node.keyFingerprint, newFingerprint: key.fingerprint }, 'node key rotated');
      return { nodeId: node.id, fingerprint: key.fingerprint, previousFingerprint: node.keyFingerprint };
    },

    /** Revokes a node at once: its key and API key are refused from the next request on. */
    async revoke(nodeId: string, reason: string, actor = 'admin', now = new Date()) {
      const node = await findNodeForRevocation(db, nodeId);
      if (!node) throw new NotFoundError(`no node ${nodeId}`);
      if (!node.revoked_at) {
        await db.transaction().execute(async (tx) => {
          await updateNode(tx, nodeId, { state: 'revoked', revoked_at: now, state_message: reason });
          await appendAudit(tx, { actor, kind: 'node.revoked', studyId: node.study_id, data: { nodeId, reason } });
        });
      }
      claims.forget(nodeId);
      log.warn({ nodeId, reason }, 'node revoked');
      deps.onNodeChanged(node.study_id);
      return { nodeId, revokedAt: (node.revoked_at ? new Date(node.revoked_at) : now).toISOString() };
    },

    /** Leaves the study for good: excluded from every later round; the withdrawal is audited. */
    async withdraw(node: AuthenticatedNode, reason: string | undefined, now = new Date()) {
      await db.transaction().execute(async (tx) => {
        await updateNode(tx, node.id, { state: 'withdrawn', withdrawn_at: now, state_message: reason ?? 'withdrawn by the node' });
        await appendAudit(tx, { actor: `node:${node.id}`, kind: 'node.withdrawn', studyId: node.studyId, data: { nodeId: node.id, reason: reason ?? null } });
      });
      claims.forget(node.id);
      log.info({ nodeId: node.id, studyId: node.studyId }, 'node withdrew');
      deps.onNodeChanged(node.studyId);
      return { nodeId: node.id, withdrawnAt: now.toISOString() };
    },

    async reportStatus(node: AuthenticatedNode, report: NodeStatusReport, now = new Date()) {
      if (node.state === 'withdrawn') throw new BadRequestError('this node has withdrawn from its study');
      // DP-SGD with delta >= 1/n protects no row of this node's n: it may not become ready.
      if (report.state === 'ready' && report.data) {
        const problem = recordLevelDeltaProblem(StudyConfig.parse(await findStudyConfig(db, node.studyId)), report.data.rows);
        if (problem) throw new BadRequestError(`data.rows: ${problem}`, 'body.data.rows', 'DELTA_TOO_LARGE');
      }
      await db.transaction().execute(async (tx) => {
        // A status report racing a withdrawal or revocation must not bring the node back.
        await updateActiveNode(tx, node.id, { state: report.state, state_message: report.message ?? null, data_report: report.data ? JSON.stringify(report.data) : null, last_seen_at: now });
        await appendAudit(tx, { actor: `node:${node.id}`, kind: 'node.status', studyId: node.studyId, data: { nodeId: node.id, state: report.state, message: report.message ?? null, data: report.data ?? null } });
      });
      claims.forget(node.id);
      (report.state === 'data-error' ? log.warn : log.info).call(log, { nodeId: node.id, state: report.state, message: report.message }, 'node status');
      deps.onNodeChanged(node.studyId);
    },
  };
}
export type NodeService = ReturnType<typeof createNodeService>;
