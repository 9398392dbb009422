import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { z, ZodError } from 'zod';
import { roundBinding, CreateEnrollmentToken, EnrollRequest, EvaluationReport, NodeStatusReport, StudyConfig, UPDATE_META_HEADER, UpdateMeta } from '../../protocols/messages.ts';
import { readAllBytes, WeightsCodecError } from '../../protocols/weights-codec.ts';
import { AppError, BadRequestError, ForbiddenError, NotFoundError, PayloadTooLargeError, UnauthenticatedError } from '../errors.ts';
import type { AuthenticatedNode, NodeService } from '../nodes/node-service.ts';
import type { RoundService } from '../rounds/round-service.ts';
import { studyTensorSpecs, type StoredModel, type StudyService } from '../studies/study-service.ts';
import { getRegionalModel, regionalReport } from '../regions/regional-models.ts';
import { requireRole, type AuthService, type Principal } from '../auth/principal.ts';
import { totalParameters } from '../../protocols/tensors.ts';
import { nodePrivacyReport, privacyReport } from '../privacy/privacy-report.ts';
import type { CoordinatorKeyring } from '../identity.ts';
import type { PolicyService } from '../policies/policy-service.ts';
import { PolicyProfile } from '../../protocols/policy/jurisdiction-policy.ts';
import { appendAudit, checkpointAudit, firstCoordinatorKey, readAuditLog } from '../audit/audit-log.ts';
import { openUpdate, verifyRequest, CryptoVerificationError } from '../../protocols/crypto/index.ts';
import type { Db } from '../db/database.ts';

export interface AppDeps {
  auth: AuthService;
  policies: PolicyService;
  keyring: CoordinatorKeyring;
  maxClockSkewSeconds: number;
  studies: StudyService;
  nodes: NodeService;
  rounds: RoundService;
  log: Logger;
  maxTaskWaitSeconds: number;
  db: Db;
}

/** Parses with zod and turns the first issue into a 400 naming the field. */
function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = [where, ...issue.path.map(String)].filter(Boolean).join('.');
  throw new BadRequestError(`${field}: ${issue.message}`, field, 'VALIDATION_FAILED');
}

const RoundParams = z.object({ studyId: z.string().min(1), round: z.coerce.number().int().positive() });
const StudyParams = z.object({ studyId: z.string().min(1) });
const ModelParams = z.object({ studyId: z.string().min(1), version: z.coerce.number().int().nonnegative() });
const RegionParams = z.object({ studyId: z.string().min(1), region: z.string().min(1).max(100) });
const RegionalModelQuery = z.object({ version: z.coerce.number().int().positive().optional() });
const CreateApiToken = z
  .object({ role: z.enum(['admin', 'auditor', 'analyst']), name: z.string().min(1).max(200), region: z.string().min(1).max(100).optional() })
  .refine((t) => t.role !== 'analyst' || t.region, { message: 'an analyst token needs a region', path: ['region'] });
const WatchQuery = z.object({ wait: z.coerce.number().min(0).max(120).default(0), seen: z.coerce.number().int().nonnegative().optional() });
const TaskQuery = z.object({ wait: z.coerce.number().min(0).max(120).default(0) });

type Handler = (req: Request, res: Response) => Promise<void>;
const route = (fn: Handler) => (req: Request, res: Response, next: NextFunction) => fn(req, res).catch(next);

function bearer(req: Request): string {
  const header = req.get('authorization') ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new UnauthenticatedError('missing bearer token (Authorization: Bearer <token>)');
  return match[1];
}

/** A round's mechanism record with its list of nodes that could not train cut down to `own`. */
function onlyFailuresOf(mechanism: Record<string, unknown> | null, own: Set<string>) {
  const failures = mechanism?.failures;
  if (!mechanism || !Array.isArray(failures)) return mechanism;
  return { ...mechanism, failures: failures.filter((f: { nodeId?: string }) => own.has(String(f.nodeId))) };
}

/** The coordinator's HTTP API. Handlers validate, call one service method, and answer. */
export function createApp(deps: AppDeps) {
  const { studies, nodes, rounds, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.use((req, res, next) => {
    const id = req.get('x-request-id') ?? randomUUID();
    res.locals.requestId = id;
    res.set('x-request-id', id);
    const started = performance.now();
    res.on('finish', () => log.debug({ method: req.method, path: req.path, status: res.statusCode, ms: performance.now() - started, actor: res.locals.actor }, 'request'));
    next();
  });
  // Keep the exact body bytes: node requests are signed over them, not over re-serialized JSON.
  const json = express.json({
    limit: '1mb',
    verify: (req, _res, buf) => {
      (req as Request & { rawBody?: Uint8Array }).rawBody = new Uint8Array(buf);
    },
  });
  const rawBodyOf = (req: Request) => (req as Request & { rawBody?: Uint8Array }).rawBody ?? new Uint8Array(0);

  const verified = new WeakMap<Request, Promise<Principal>>();
  let nonceInserts = 0;
  /**
   * Who is calling. A node must carry its API key AND an OpenPGP signature, by the key pinned at
   * enrollment, over method, path, round, timestamp, nonce and the exact body bytes; that check
   * runs once per request (a second would see its own nonce as a replay).
   */
  const who = (req: Request, signed: { body?: Uint8Array; roundId?: string; claimed?: Principal } = {}): Promise<Principal> => {
    let p = verified.get(req);
    if (!p) {
      p = (async () => {
        // `claimed`: the bearer already looked up by a route that had to know the caller early.
        const principal = signed.claimed ?? (await deps.auth.authenticate(bearer(req)));
        // Until its signature verifies, a node is only who the request claims to be.
        if (principal.role === 'node') {
          req.res!.locals.actor = `claimed-node:${principal.id}`;
          await verifyNodeSignature(req, principal.node, signed.body ?? rawBodyOf(req), signed.roundId ?? req.get('fedmark-round') ?? '');
        }
        req.res!.locals.actor = `${principal.role}:${principal.id}`;
        return principal;
      })();
      verified.set(req, p);
    }
    return p;
  };
  async function verifyNodeSignature(req: Request, node: AuthenticatedNode, body: Uint8Array, roundId: string) {
    if (!node.publicKey) throw new UnauthenticatedError(`node ${node.id} has no key on record`);
    const result = await verifyRequest({
      publicKey: node.publicKey,
      method: req.method,
      path: req.originalUrl,
      roundId,
      body,
      headers: req.headers,
      maxSkewSeconds: deps.maxClockSkewSeconds,
      seenNonce: async (nonce, ctx) => {
        // Nonces older than twice the allowed skew can never be replayed (their timestamp is stale): forget them now and then.
        if (++nonceInserts % 500 === 0) await deps.db.deleteFrom('request_nonces').where('seen_at', '<', new Date(Date.now() - 2 * deps.maxClockSkewSeconds * 1000)).execute();
        const inserted = await deps.db.insertInto('request_nonces').values({ fingerprint: ctx.fingerprint, nonce }).onConflict((oc) => oc.doNothing()).returning('nonce').executeTakeFirst();
        return inserted === undefined;
      },
    });
    if (!result.ok) {
      const status = result.reason === 'revoked-key' || result.reason === 'expired-key' || result.reason === 'key-mismatch' ? 403 : 401;
      throw new AppError(status, `SIGNATURE_${result.reason.toUpperCase().replace(/-/g, '_')}`, `request signature refused (${result.reason}): ${result.message}`);
    }
  }
  const requireAdmin = async (req: Request) => {
    const p = await who(req);
    requireRole(p, 'admin');
    return p;
  };
  const requireNode = async (req: Request, body: Uint8Array = rawBodyOf(req), roundId = '', claimed?: Principal): Promise<AuthenticatedNode> => {
    const p = await who(req, { body, roundId, claimed });
    requireRole(p, 'node');
    return p.node;
  };

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });

  // ---- operator ----
  app.post('/v1/studies', json, route(async (req, res) => {
    await requireAdmin(req);
    const config = parse(StudyConfig, req.body, 'body');
    res.status(201).json(await studies.createStudy(config, res.locals.actor));
  }));
  app.get('/v1/studies', route(async (req, res) => {
    requireRole(await who(req), 'admin', 'auditor', 'analyst');
    res.json({ studies: await studies.listStudies() });
  }));
  app.get('/v1/studies/:studyId', route(async (req, res) => {
    const p = await who(req);
    requireRole(p, 'admin', 'auditor', 'analyst');
    const { studyId } = parse(StudyParams, req.params, 'params');
    // ?wait=S&seen=N: hold the request until the study changes (N is the change count the caller
    // last saw), so a dashboard follows a study without polling it hard.
    const { wait, seen } = parse(WatchQuery, req.query, 'query');
    if (wait > 0) await rounds.waitForChange(studyId, Math.min(wait, deps.maxTaskWaitSeconds), seen);
    const status = { ...(await studies.getStatus(studyId)), changeCount: rounds.changeCount(studyId) };
    // A regional team sees the global metrics and its own region's nodes, not the others'.
    if (p.role === 'analyst') {
      status.nodes = status.nodes.filter((n) => n.region === p.region);
      // Who was sampled for a round is secret from everyone the privacy guarantee is against
      // (subsampling amplification assumes it): a regional team sees only its own nodes there.
      const own = new Set(status.nodes.map((n) => n.id));
      status.rounds = status.rounds.map((r) => ({ ...r, participants: r.participants.filter((id) => own.has(id)) }));
    }
    res.json(status);
  }));
  app.get('/v1/studies/:studyId/rounds/:round', route(async (req, res) => {
    const p = await who(req);
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    const detail = await studies.getRound(studyId, round);
    if (p.role === 'node') {
      if (p.node.studyId !== studyId || !detail.participants.includes(p.id)) throw new ForbiddenError(`node ${p.id} did not take part in round ${round} of study ${studyId}`);
      detail.updates = detail.updates.filter((u) => u.nodeId === p.id);
      detail.participants = [p.id]; // not who else was sampled (see the study route)
      detail.mechanism = onlyFailuresOf(detail.mechanism, new Set([p.id]));
    } else if (p.role === 'analyst') {
      detail.updates = detail.updates.filter((u) => u.region === p.region);
      const own = new Set((await deps.db.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('region', '=', p.region).execute()).map((n) => n.id));
      detail.participants = detail.participants.filter((id) => own.has(id));
      detail.mechanism = onlyFailuresOf(detail.mechanism, own);
    }
    res.json(detail);
  }));
  app.get('/v1/studies/:studyId/rounds/:round/updates/:nodeId', route(async (req, res) => {
    const p = await who(req);
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    const nodeId = String(req.params.nodeId);
    const detail = await studies.getRound(studyId, round);
    const update = detail.updates.find((u) => u.nodeId === nodeId);
    if (p.role === 'node' && p.id !== nodeId) throw new ForbiddenError(`node ${p.id} may not read node ${nodeId}'s submission`);
    if (p.role === 'analyst' && update && update.region !== p.region) throw new ForbiddenError(`analysts of region ${p.region} may not read another region's submission`);
    if (!update) throw new NotFoundError(`node ${nodeId} submitted nothing in round ${round}`);
    res.json(update);
  }));
  app.post('/v1/tokens', json, route(async (req, res) => {
    await requireAdmin(req);
    const input = parse(CreateApiToken, req.body, 'body');
    const created = await deps.db.transaction().execute(async (tx) => {
      const c = await deps.auth.createToken(input, tx);
      await appendAudit(tx, { actor: res.locals.actor, kind: 'token.created', data: { tokenId: c.id, role: c.role, name: c.name, region: c.region } });
      return c;
    });
    res.status(201).json(created);
  }));
  app.get('/v1/tokens', route(async (req, res) => {
    await requireAdmin(req);
    res.json({ tokens: await deps.auth.listTokens() });
  }));
  app.delete('/v1/tokens/:id', route(async (req, res) => {
    await requireAdmin(req);
    await deps.db.transaction().execute(async (tx) => {
      await deps.auth.revokeToken(String(req.params.id), tx);
      await appendAudit(tx, { actor: res.locals.actor, kind: 'token.revoked', data: { tokenId: String(req.params.id) } });
    });
    res.status(204).end();
  }));
  app.post('/v1/studies/:studyId/rounds', json, route(async (req, res) => {
    await requireAdmin(req);
    const { studyId } = parse(StudyParams, req.params, 'params');
    const opened = await rounds.openNextRound(studyId, 'manual');
    if (!opened) throw new AppError(409, 'STUDY_ENDED', `study ${studyId} has no rounds left`);
    res.status(201).json({ studyId, ...opened });
  }));
  app.get('/v1/studies/:studyId/privacy', route(async (req, res) => {
    requireRole(await who(req), 'admin', 'auditor');
    const { studyId } = parse(StudyParams, req.params, 'params');
    res.json(await privacyReport(deps.db, studyId));
  }));
  // One node's privacy: admins and auditors for any node, a node for itself only.
  app.get('/v1/studies/:studyId/nodes/:nodeId/privacy', route(async (req, res) => {
    const p = await who(req);
    requireRole(p, 'admin', 'auditor', 'node');
    const { studyId, nodeId } = parse(z.object({ studyId: z.string().min(1).max(200), nodeId: z.string().min(1).max(200) }), req.params, 'params');
    if (p.role === 'node' && (p.id !== nodeId || p.node.studyId !== studyId)) throw new ForbiddenError(`node ${p.id} may read only its own privacy report`);
    res.json(await nodePrivacyReport(deps.db, studyId, nodeId));
  }));
  app.post('/v1/enrollment-tokens', json, route(async (req, res) => {
    await requireAdmin(req);
    res.status(201).json(await nodes.createEnrollmentToken(parse(CreateEnrollmentToken, req.body, 'body'), res.locals.actor));
  }));

  // ---- nodes ----
  app.post('/v1/nodes/enroll', json, route(async (req, res) => {
    const { token, publicKey, jurisdiction } = parse(EnrollRequest, req.body, 'body');
    const enrolled = await nodes.enroll(token, publicKey, jurisdiction);
    res.status(201).json({ ...enrolled, coordinatorFingerprint: deps.keyring.current.fingerprint, coordinatorPublicKey: deps.keyring.current.publicKeyArmored });
  }));
  app.get('/v1/coordinator/key', route(async (_req, res) => {
    res.json(await deps.keyring.publicInfo());
  }));
  app.post('/v1/coordinator/key/rotate', json, route(async (req, res) => {
    await requireAdmin(req);
    // The key and its `coordinator.key-rotated` audit entry commit together (see keyring.rotate).
    const rotated = await deps.keyring.rotate(res.locals.actor);
    res.status(201).json(rotated);
  }));
  // The auditor's export: a fresh signed checkpoint first, so no entry is left unsigned.
  app.get('/v1/audit/export', route(async (req, res) => {
    requireRole(await who(req), 'admin', 'auditor');
    await checkpointAudit(deps.db, deps.keyring);
    const log = await readAuditLog(deps.db);
    res.json({ ...log, coordinatorPublicKey: await firstCoordinatorKey(deps.db), exportedAt: new Date().toISOString() });
  }));
  app.post('/v1/nodes/me/key', json, route(async (req, res) => {
    const node = await requireNode(req);
    const { publicKey } = parse(z.object({ publicKey: z.string().min(100).max(20_000) }), req.body, 'body');
    res.json(await nodes.rotateKey(node, publicKey));
  }));
  app.post('/v1/nodes/me/withdraw', json, route(async (req, res) => {
    const node = await requireNode(req);
    const { reason } = parse(z.object({ reason: z.string().max(500).optional() }), req.body ?? {}, 'body');
    res.json(await nodes.withdraw(node, reason));
  }));
  app.get('/v1/policies', route(async (req, res) => {
    requireRole(await who(req), 'admin', 'auditor');
    res.json({ policies: await deps.policies.list() });
  }));
  app.post('/v1/policies', json, route(async (req, res) => {
    await requireAdmin(req);
    const profile = parse(PolicyProfile.omit({ version: true }), req.body, 'body');
    res.status(201).json(await deps.policies.publish(profile, res.locals.actor));
  }));
  app.post('/v1/nodes/:nodeId/revoke', json, route(async (req, res) => {
    await requireAdmin(req);
    const { reason } = parse(z.object({ reason: z.string().min(1).max(500).default('revoked by the operator') }), req.body ?? {}, 'body');
    res.json(await nodes.revoke(String(req.params.nodeId), reason, res.locals.actor));
  }));
  app.post('/v1/nodes/me/status', json, route(async (req, res) => {
    const node = await requireNode(req);
    await nodes.reportStatus(node, parse(NodeStatusReport, req.body, 'body'));
    res.status(204).end();
  }));
  app.get('/v1/nodes/me/study', route(async (req, res) => {
    const node = await requireNode(req);
    const status = await studies.getStatus(node.studyId);
    res.json({ studyId: status.id, state: status.state, currentRound: status.currentRound, config: status.config });
  }));
  // The profile in force for the node's own jurisdiction: the node applies the stricter of it and its own.
  app.get('/v1/nodes/me/policy', route(async (req, res) => {
    const node = await requireNode(req);
    res.json(await deps.policies.forNode(node.id));
  }));
  app.get('/v1/tasks/next', route(async (req, res) => {
    const node = await requireNode(req);
    const { wait } = parse(TaskQuery, req.query, 'query');
    const abort = new AbortController();
    req.on('close', () => abort.abort());
    const task = await rounds.nextTask(node, Math.min(wait, deps.maxTaskWaitSeconds), abort.signal);
    if (!task) res.status(204).end();
    else res.json(task);
  }));
  // Global models: streamed as the binary codec's bytes, never as JSON.
  app.get('/v1/studies/:studyId/models/:version', route(async (req, res) => {
    const { studyId, version } = parse(ModelParams, req.params, 'params');
    await authorizeModelRead(req, studyId);
    const model = await studies.getModel(studyId, version);
    await sendModel(res, model);
  }));
  app.get('/v1/studies/:studyId/model', route(async (req, res) => {
    const { studyId } = parse(StudyParams, req.params, 'params');
    await authorizeModelRead(req, studyId);
    await sendModel(res, await studies.getModel(studyId));
  }));
  // Regional views: a regional team (analyst) reads its own region's metrics and regional models;
  // auditors read the metrics (never weights); nodes have their own tasks only.
  app.get('/v1/studies/:studyId/regions/:region', route(async (req, res) => {
    const { studyId, region } = parse(RegionParams, req.params, 'params');
    authorizeRegion(await who(req), region, 'admin', 'auditor', 'analyst');
    res.json(await regionalReport(deps.db, studyId, region));
  }));
  app.get('/v1/studies/:studyId/regions/:region/model', route(async (req, res) => {
    const { studyId, region } = parse(RegionParams, req.params, 'params');
    const { version } = parse(RegionalModelQuery, req.query, 'query');
    authorizeRegion(await who(req), region, 'admin', 'analyst');
    await sendModel(res, await getRegionalModel(deps.db, studyId, region, version));
  }));
  app.post('/v1/studies/:studyId/rounds/:round/updates', route(async (req, res) => {
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    // Who the bearer claims to be, before a byte of the body is buffered: an anonymous caller, a
    // person, or a node of another study is refused without the coordinator reading up to a whole
    // model into memory (or revealing whether the study exists). The signature over the body is
    // checked below, once the body is read.
    const claimed = await deps.auth.authenticate(bearer(req));
    requireRole(claimed, 'node');
    if (claimed.node.studyId !== studyId) throw new ForbiddenError(`node ${claimed.id} is not enrolled in study ${studyId}`);
    const metaHeader = req.get(UPDATE_META_HEADER);
    if (!metaHeader) throw new BadRequestError(`missing ${UPDATE_META_HEADER} header (JSON: numExamples, loss, steps, trainSeconds, data)`, `headers.${UPDATE_META_HEADER}`, 'VALIDATION_FAILED');
    let metaJson: unknown;
    try {
      metaJson = JSON.parse(metaHeader);
    } catch {
      throw new BadRequestError(`${UPDATE_META_HEADER} header is not valid JSON`, `headers.${UPDATE_META_HEADER}`, 'VALIDATION_FAILED');
    }
    const meta = parse(UpdateMeta, metaJson, `headers.${UPDATE_META_HEADER}`);
    const config = await studies.getConfig(studyId);
    // No fixed ceiling: the limit follows the study's model size (float32 values + a generous header).
    const maxBytes = totalParameters(studyTensorSpecs(config)) * 4 + 1_000_000;
    let sealed: Uint8Array;
    try {
      sealed = await readAllBytes(req, maxBytes);
    } catch (err) {
      if (err instanceof WeightsCodecError) throw new PayloadTooLargeError(`update body is larger than this study's model (${maxBytes} bytes at most)`);
      // The client went away or the connection broke mid-body: nothing was stored.
      throw new BadRequestError(`update body could not be read to its end (${err instanceof Error ? err.message : String(err)}); nothing was stored`, 'body', 'INCOMPLETE_BODY');
    }
    // Signed request (over the sealed bytes and the round), then the sealed update itself: encrypted
    // to the coordinator and signed by the node's pinned key.
    // The round binding also carries the hash of the metadata header, so the signature covers
    // the counts (numExamples, dpSgd spend) as well as the sealed weights.
    const node = await requireNode(req, sealed, roundBinding(studyId, round, metaHeader), claimed);
    let body: Uint8Array | undefined;
    let failure: CryptoVerificationError | undefined;
    // The current key first; a retired one for a node that sealed before it followed a rotation.
    for (const key of deps.keyring.decryptionKeys) {
      try {
        body = await openUpdate({ sealed, coordinatorPrivateKey: key.privateKey, nodePublicKey: node.publicKey! });
        break;
      } catch (err) {
        if (!(err instanceof CryptoVerificationError)) throw err;
        failure ??= err;
        if (err.reason !== 'decryption-failed') break; // it opened, but the signature is wrong: no other key will help
      }
    }
    if (!body) throw new BadRequestError(`update refused: the sealed update does not open and verify (${failure?.reason}): ${failure?.message}`, 'body', 'INVALID_SEALED_UPDATE');
    const { receipt, replay } = await rounds.submitUpdate(node, studyId, round, meta, body);
    res.status(replay ? 200 : 201).json(receipt);
  }));
  app.post('/v1/studies/:studyId/rounds/:round/evaluations', json, route(async (req, res) => {
    const { studyId, round } = parse(RoundParams, req.params, 'params');
    const node = await requireNode(req, rawBodyOf(req), roundBinding(studyId, round));
    const report = parse(EvaluationReport, req.body, 'body');
    const result = await rounds.submitEvaluation(node, studyId, round, report);
    res.status(result.stored ? 201 : 200).json(result);
  }));

  // Models signed by a retired key are re-signed by the current one when served, so a node that
  // trusts only the current key (enrolled after a rotation) can verify models made before it.
  const resigned = new Map<string, { signature: string; fingerprint: string }>();
  async function currentSignature(model: StoredModel) {
    if (!model.signature || model.signerFingerprint === deps.keyring.current.fingerprint) return { signature: model.signature, fingerprint: model.signerFingerprint };
    const key = `${model.sha256}/${deps.keyring.current.fingerprint}`;
    let s = resigned.get(key);
    if (!s) {
      s = await deps.keyring.sign(model.bytes);
      resigned.set(key, s);
    }
    return s;
  }

  /** A model as binary codec bytes, with its hash and the coordinator's signature in headers. */
  async function sendModel(res: Response, stored: StoredModel) {
    const { signature, fingerprint } = await currentSignature(stored);
    const model = { ...stored, signature, signerFingerprint: fingerprint };
    res.set({
      'content-type': 'application/octet-stream',
      'fedmark-sha256': model.sha256,
      'fedmark-model-version': String(model.version),
      ...(model.signature ? { 'fedmark-model-signature': Buffer.from(model.signature).toString('base64'), 'fedmark-signer': model.signerFingerprint ?? '' } : {}),
    });
    res.end(Buffer.from(model.bytes.buffer, model.bytes.byteOffset, model.bytes.byteLength));
  }

  function authorizeRegion(p: Principal, region: string, ...roles: Array<Principal['role']>) {
    requireRole(p, ...roles);
    if (p.role === 'analyst' && p.region !== region) throw new ForbiddenError(`analyst token ${p.id} is for region ${p.region}, not ${region}`);
  }

  /**
   * Weights: admin, the study's own nodes, and analysts of a region that has a node in the study
   * (a regional team reads the global models its region helped train). Auditors never see weights.
   */
  async function authorizeModelRead(req: Request, studyId: string) {
    const p = await who(req);
    requireRole(p, 'admin', 'analyst', 'node');
    if (p.role === 'analyst') {
      const member = await deps.db.selectFrom('nodes').select('id').where('study_id', '=', studyId).where('region', '=', p.region).executeTakeFirst();
      if (!member) throw new ForbiddenError(`region ${p.region} has no node in study ${studyId}: analyst token ${p.id} may not read its models`);
    }
    if (p.role === 'node') {
      await requireNode(req);
      if (p.node.studyId !== studyId) throw new ForbiddenError(`node ${p.id} is not enrolled in study ${studyId}`);
    }
  }

  app.use((req, _res, next) => next(new AppError(404, 'NOT_FOUND', `no route ${req.method} ${req.path}`)));

  // The one place errors become statuses. Internal details never leak: a 500 carries the request id.
  app.use(async (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const requestId = res.locals.requestId as string;
    if (err instanceof AppError && err.status < 500 && !err.message.startsWith('no route ')) {
      // Every refusal and authentication failure goes into the audit log, before the answer (a
      // failing audit write is logged but must not turn a 401 into a 500).
      try {
        await appendAudit(deps.db, {
          actor: (res.locals.actor as string | undefined) ?? 'anonymous',
          kind: err.status === 401 || err.code.startsWith('SIGNATURE_') ? 'auth.failed' : 'request.refused',
          data: { method: req.method, path: req.path, status: err.status, code: err.code, reason: err.message, requestId },
        });
      } catch (auditErr) {
        log.error({ err: auditErr }, 'audit append failed');
      }
    }
    if (err instanceof AppError) {
      if (err.status >= 500) log.error({ err, requestId }, 'request failed');
      else log.info({ requestId, method: req.method, path: req.path, status: err.status, code: err.code, reason: err.message }, 'request refused');
      res.status(err.status).json({ error: { code: err.code, message: err.message, field: err.field, requestId } });
      return;
    }
    if (!(err instanceof AppError) && typeof err === 'object' && err && 'status' in err && Number((err as { status: number }).status) < 500) {
      // Malformed JSON, bodies over the limit: refusals too.
      await appendAudit(deps.db, { actor: (res.locals.actor as string | undefined) ?? 'anonymous', kind: 'request.refused', data: { method: req.method, path: req.path, status: Number((err as { status: number }).status), reason: err instanceof Error ? err.message : 'refused', requestId } }).catch((auditErr) => log.error({ err: auditErr }, 'audit append failed'));
    }
    if (err instanceof SyntaxError && 'status' in err && (err as { status: number }).status === 400) {
      res.status(400).json({ error: { code: 'VALIDATION_FAILED', message: `body is not valid JSON: ${err.message}`, field: 'body', requestId } });
      return;
    }
    if (err instanceof ZodError) {
      res.status(400).json({ error: { code: 'VALIDATION_FAILED', message: err.issues[0]?.message ?? 'invalid', requestId } });
      return;
    }
    if (typeof err === 'object' && err && 'type' in err && (err as { type: string }).type === 'entity.too.large') {
      res.status(413).json({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'request body too large', requestId } });
      return;
    }
    log.error({ err, requestId }, 'unexpected error');
    res.status(500).json({ error: { code: 'INTERNAL', message: `internal error (request ${requestId})`, requestId } });
  });
  return app;
}
