import type { IRouter } from 'express';
import { z } from 'zod';
import { CreateEnrollmentToken, EnrollRequest, Id, NodeStatusReport } from '../../protocols/messages.ts';
import { requireRole } from '../auth/principal.ts';
import type { RequestGuard } from '../auth/request-auth.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import { json, route } from '../http/middleware.ts';
import { parse } from '../http/validate.ts';
import type { PolicyService } from '../policies/policy-service.ts';
import type { StudyService } from '../studies/study-service.ts';
import type { NodeService } from './node-service.ts';

const RotateKey = z.object({ publicKey: z.string().min(100).max(20_000) });
const Withdraw = z.object({ reason: z.string().max(500).optional() });
const NodeParams = z.object({ nodeId: Id });
const Revoke = z.object({ reason: z.string().min(1).max(500).default('revoked by the operator') });
const ListQuery = z.object({ study: Id.optional() });

export interface NodeRouterDeps {
  guard: RequestGuard;
  nodes: NodeService;
  studies: Pick<StudyService, 'getStudyForNode'>;
  policies: Pick<PolicyService, 'forNode'>;
  keyring: Pick<CoordinatorKeyring, 'current'>;
}

/**
 * Nodes: enrollment (tokens issued by an operator, exchanged by the node), revocation, and a
 * node's own requests about itself (`/v1/nodes/me/...`, each a signed request).
 *
 * @example
 *   registerNodeRoutes(app, { guard, nodes, studies, policies, keyring });
 */
export function registerNodeRoutes(app: IRouter, deps: NodeRouterDeps) {
  const { guard, nodes } = deps;
  app.post('/v1/enrollment-tokens', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    res.status(201).json(await nodes.createEnrollmentToken(parse(CreateEnrollmentToken, req.body, 'body'), res.locals.actor));
  }));
  app.post('/v1/nodes/enroll', json, route(async (req, res) => {
    const { token, publicKey, jurisdiction } = parse(EnrollRequest, req.body, 'body');
    const enrolled = await nodes.enroll(token, publicKey, jurisdiction);
    res.status(201).json({ ...enrolled, coordinatorFingerprint: deps.keyring.current.fingerprint, coordinatorPublicKey: deps.keyring.current.publicKeyArmored });
  }));
  app.post('/v1/nodes/:nodeId/revoke', json, route(async (req, res) => {
    await guard.requireAdmin(req);
    const { reason } = parse(Revoke, req.body ?? {}, 'body');
    const { nodeId } = parse(NodeParams, req.params, 'params');
    res.json(await nodes.revoke(nodeId, reason, res.locals.actor));
  }));
  registerNodeSelfRoutes(app, deps);
  registerListingRoutes(app, deps);
}

/**
 * What operators read: the nodes (admin and auditor: all; an analyst: its region's, as it sees
 * them in a study's status, visibility.ts) and the enrollment tokens (admin and auditor; never a
 * usable token, only the hash prefix the audit log names).
 */
function registerListingRoutes(app: IRouter, deps: NodeRouterDeps) {
  const { guard, nodes } = deps;
  app.get('/v1/nodes', route(async (req, res) => {
    const p = await guard.who(req);
    requireRole(p, 'admin', 'auditor', 'analyst');
    const { study } = parse(ListQuery, req.query, 'query');
    res.json({ nodes: await nodes.listNodes({ studyId: study, region: p.role === 'analyst' ? p.region : undefined }) });
  }));
  app.get('/v1/enrollment-tokens', route(async (req, res) => {
    requireRole(await guard.who(req), 'admin', 'auditor');
    const { study } = parse(ListQuery, req.query, 'query');
    res.json({ tokens: await nodes.listEnrollmentTokens(study) });
  }));
}

/** A node's requests about itself: its key, withdrawal, status, study and policy. */
function registerNodeSelfRoutes(app: IRouter, deps: NodeRouterDeps) {
  const { guard, nodes } = deps;
  app.post('/v1/nodes/me/key', json, route(async (req, res) => {
    const node = await guard.requireNode(req);
    const { publicKey } = parse(RotateKey, req.body, 'body');
    res.json(await nodes.rotateKey(node, publicKey));
  }));
  app.post('/v1/nodes/me/withdraw', json, route(async (req, res) => {
    const node = await guard.requireNode(req);
    const { reason } = parse(Withdraw, req.body ?? {}, 'body');
    res.json(await nodes.withdraw(node, reason));
  }));
  app.post('/v1/nodes/me/status', json, route(async (req, res) => {
    const node = await guard.requireNode(req);
    await nodes.reportStatus(node, parse(NodeStatusReport, req.body, 'body'));
    res.status(204).end();
  }));
  // Its own record: state (withdrawn, revoked...) and the rounds it took part in, so a restarted
  // node knows whether a completed study is one it trained for.
  app.get('/v1/nodes/me', route(async (req, res) => {
    const node = await guard.requireNode(req);
    res.json(await nodes.describeSelf(node.id));
  }));
  // Its study's state and configuration, `release` list included: what the node may send.
  app.get('/v1/nodes/me/study', route(async (req, res) => {
    const node = await guard.requireNode(req);
    res.json(await deps.studies.getStudyForNode(node.studyId));
  }));
  // The profile in force for the node's own jurisdiction: the node applies the stricter of it and its own.
  app.get('/v1/nodes/me/policy', route(async (req, res) => {
    const node = await guard.requireNode(req);
    res.json(await deps.policies.forNode(node));
  }));
}
