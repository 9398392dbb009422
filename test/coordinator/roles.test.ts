import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { roundBinding, UPDATE_META_HEADER } from '../../protocols/messages.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, testNodeKey, tinyStudy, type TestNode, evaluation } from './harness.ts';

type Role = 'admin' | 'auditor' | 'analyst' | 'node' | 'outsider' | 'anonymous';
type Method = 'get' | 'post' | 'delete';
const ROLES: Role[] = ['admin', 'auditor', 'analyst', 'node', 'outsider', 'anonymous'];

interface Ctx {
  studyId: string;
  nodeA: TestNode;
  victimId: string;
  /** A fresh API token id (for DELETE /v1/tokens/:id: each role gets its own to revoke). */
  freshTokenId(): Promise<string>;
}

/**
 * One row per route of coordinator/http/app.ts: how to call it and the one status each role
 * gets. `node` is node a (a participant of round 1 of the study, which submitted), `outsider`
 * a node of another study, `anonymous` a caller with no credentials. A status that proves the
 * caller got past authorization without side effects (a 400 for a deliberately invalid body)
 * is used where the allowed call would change the caller itself (rotating its key, withdrawing).
 */
interface Row {
  what: string;
  method: Method;
  path: string; // the route pattern, exactly as in app.ts
  url: (c: Ctx) => string | Promise<string>;
  body?: (c: Ctx) => unknown;
  expect: Record<Role, number>;
}

const people = (admin: number, auditor: number, analyst: number) => ({ admin, auditor, analyst });
const nodeOnly = (node: number, outsider = node) => ({ ...people(403, 403, 403), node, outsider, anonymous: 401 });

const MATRIX: Row[] = [
  { what: 'health check', method: 'get', path: '/healthz', url: () => '/healthz', expect: { ...people(200, 200, 200), node: 200, outsider: 200, anonymous: 200 } },
  { what: 'read the Prometheus metrics', method: 'get', path: '/metrics', url: () => '/metrics', expect: { ...people(200, 200, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'read the OpenAPI document', method: 'get', path: '/openapi.json', url: () => '/openapi.json', expect: { ...people(200, 200, 200), node: 200, outsider: 200, anonymous: 200 } },
  { what: 'read the API reference page', method: 'get', path: '/docs', url: () => '/docs', expect: { ...people(200, 200, 200), node: 200, outsider: 200, anonymous: 200 } },
  { what: 'create a study', method: 'post', path: '/v1/studies', url: () => '/v1/studies', body: () => tinyStudy({ minNodesToStart: 50 }), expect: { ...people(201, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'list studies', method: 'get', path: '/v1/studies', url: () => '/v1/studies', expect: { ...people(200, 200, 200), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'read study status', method: 'get', path: '/v1/studies/:studyId', url: (c) => `/v1/studies/${c.studyId}`, expect: { ...people(200, 200, 200), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'read a round', method: 'get', path: '/v1/studies/:studyId/rounds/:round', url: (c) => `/v1/studies/${c.studyId}/rounds/1`, expect: { ...people(200, 200, 200), node: 200, outsider: 403, anonymous: 401 } },
  { what: "read node a's submission", method: 'get', path: '/v1/studies/:studyId/rounds/:round/updates/:nodeId', url: (c) => `/v1/studies/${c.studyId}/rounds/1/updates/${c.nodeA.nodeId}`, expect: { ...people(200, 200, 200), node: 200, outsider: 403, anonymous: 401 } },
  { what: 'create an API token', method: 'post', path: '/v1/tokens', url: () => '/v1/tokens', body: () => ({ role: 'auditor', name: `t-${Math.random()}` }), expect: { ...people(201, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'list API tokens', method: 'get', path: '/v1/tokens', url: () => '/v1/tokens', expect: { ...people(200, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'revoke an API token', method: 'delete', path: '/v1/tokens/:id', url: async (c) => `/v1/tokens/${await c.freshTokenId()}`, expect: { ...people(204, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'start a round', method: 'post', path: '/v1/studies/:studyId/rounds', url: (c) => `/v1/studies/${c.studyId}/rounds`, body: () => ({}), expect: { ...people(409, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'read the privacy report (each role its own bound)', method: 'get', path: '/v1/studies/:studyId/privacy', url: (c) => `/v1/studies/${c.studyId}/privacy`, expect: { ...people(200, 200, 200), node: 200, outsider: 403, anonymous: 401 } },
  { what: "read node a's privacy", method: 'get', path: '/v1/studies/:studyId/nodes/:nodeId/privacy', url: (c) => `/v1/studies/${c.studyId}/nodes/${c.nodeA.nodeId}/privacy`, expect: { ...people(200, 200, 403), node: 200, outsider: 403, anonymous: 401 } },
  { what: 'issue an enrollment token', method: 'post', path: '/v1/enrollment-tokens', url: () => '/v1/enrollment-tokens', body: (c) => ({ studyId: c.studyId, nodeName: `n-${Math.random()}`, region: 'eu', jurisdiction: 'US-CA-CCPA' }), expect: { ...people(201, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  // Public by design (the token is the credential): an unknown token is refused whoever calls.
  { what: 'enroll with an unknown token', method: 'post', path: '/v1/nodes/enroll', url: () => '/v1/nodes/enroll', body: (c) => ({ token: 'fmenroll_not-a-real-token-at-all', publicKey: c.nodeA.publicKey }), expect: { ...people(401, 401, 401), node: 401, outsider: 401, anonymous: 401 } },
  { what: "read the coordinator's public key", method: 'get', path: '/v1/coordinator/key', url: () => '/v1/coordinator/key', expect: { ...people(200, 200, 200), node: 200, outsider: 200, anonymous: 200 } },
  { what: "rotate the coordinator's key", method: 'post', path: '/v1/coordinator/key/rotate', url: () => '/v1/coordinator/key/rotate', body: () => ({}), expect: { ...people(201, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'export the audit log', method: 'get', path: '/v1/audit/export', url: () => '/v1/audit/export', expect: { ...people(200, 200, 403), node: 403, outsider: 403, anonymous: 401 } },
  // Nodes: an invalid key / reason, so the allowed call stops at validation (400), after authorization.
  { what: 'rotate its own node key', method: 'post', path: '/v1/nodes/me/key', url: () => '/v1/nodes/me/key', body: () => ({ publicKey: 'not a key' }), expect: nodeOnly(400) },
  { what: 'withdraw from its study', method: 'post', path: '/v1/nodes/me/withdraw', url: () => '/v1/nodes/me/withdraw', body: () => ({ reason: 42 }), expect: nodeOnly(400) },
  { what: 'list policies', method: 'get', path: '/v1/policies', url: () => '/v1/policies', expect: { ...people(200, 200, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'publish a policy version', method: 'post', path: '/v1/policies', url: () => '/v1/policies', body: () => ({ jurisdiction: 'XX-ROLES', minNodesPerAggregate: 2 }), expect: { ...people(201, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'revoke a node', method: 'post', path: '/v1/nodes/:nodeId/revoke', url: (c) => `/v1/nodes/${c.victimId}/revoke`, body: () => ({ reason: 'role matrix' }), expect: { ...people(200, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'report node status', method: 'post', path: '/v1/nodes/me/status', url: () => '/v1/nodes/me/status', body: () => ({ state: 'ready' }), expect: nodeOnly(204) },
  { what: 'read its own study', method: 'get', path: '/v1/nodes/me/study', url: () => '/v1/nodes/me/study', expect: nodeOnly(200) },
  { what: 'read its own policy profile', method: 'get', path: '/v1/nodes/me/policy', url: () => '/v1/nodes/me/policy', expect: nodeOnly(200) },
  // Node a already submitted round 1 and the outsider's study has not started: no task for either.
  { what: 'pull a task', method: 'get', path: '/v1/tasks/next', url: () => '/v1/tasks/next', expect: nodeOnly(204) },
  { what: 'read global weights of a version', method: 'get', path: '/v1/studies/:studyId/models/:version', url: (c) => `/v1/studies/${c.studyId}/models/0`, expect: { ...people(200, 403, 200), node: 200, outsider: 403, anonymous: 401 } },
  { what: 'read the latest global weights', method: 'get', path: '/v1/studies/:studyId/model', url: (c) => `/v1/studies/${c.studyId}/model`, expect: { ...people(200, 403, 200), node: 200, outsider: 403, anonymous: 401 } },
  // Round 1 is not aggregated yet: who gets past authorization hears there is no regional model (404).
  { what: "read its region's metrics", method: 'get', path: '/v1/studies/:studyId/regions/:region', url: (c) => `/v1/studies/${c.studyId}/regions/eu`, expect: { ...people(200, 200, 200), node: 403, outsider: 403, anonymous: 401 } },
  { what: "read its region's model weights", method: 'get', path: '/v1/studies/:studyId/regions/:region/model', url: (c) => `/v1/studies/${c.studyId}/regions/eu/model`, expect: { ...people(404, 403, 404), node: 403, outsider: 403, anonymous: 401 } },
  // Node a resends its round-1 update (an idempotent retry: 200); the outsider was not in the round.
  { what: 'submit an update', method: 'post', path: '/v1/studies/:studyId/rounds/:round/updates', url: (c) => `/v1/studies/${c.studyId}/rounds/1/updates`, expect: { ...people(403, 403, 403), node: 200, outsider: 403, anonymous: 401 } },
  // Round 1 is still in its fit phase: node a may post, and hears that the round is not evaluating.
  { what: 'submit an evaluation', method: 'post', path: '/v1/studies/:studyId/rounds/:round/evaluations', url: (c) => `/v1/studies/${c.studyId}/rounds/1/evaluations`, body: () => evaluation([1, 1], [1, 1], 0.5), expect: { ...people(403, 403, 403), node: 409, outsider: 403, anonymous: 401 } },
  // Issue 12: the operator's routes and the dashboard.
  { what: 'plan a study without creating it', method: 'post', path: '/v1/studies/plan', url: () => '/v1/studies/plan', body: () => tinyStudy({ minNodesToStart: 50 }), expect: { ...people(200, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  // An invalid reason, so the allowed call stops at validation (400) and the study keeps running.
  { what: 'stop a study', method: 'post', path: '/v1/studies/:studyId/stop', url: (c) => `/v1/studies/${c.studyId}/stop`, body: () => ({ reason: 42 }), expect: { ...people(400, 403, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'list enrollment tokens (never the token itself)', method: 'get', path: '/v1/enrollment-tokens', url: () => '/v1/enrollment-tokens', expect: { ...people(200, 200, 403), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'list nodes (an analyst its own region\'s)', method: 'get', path: '/v1/nodes', url: () => '/v1/nodes', expect: { ...people(200, 200, 200), node: 403, outsider: 403, anonymous: 401 } },
  { what: 'read its own enrollment', method: 'get', path: '/v1/nodes/me', url: () => '/v1/nodes/me', expect: nodeOnly(200) },
  { what: "list the dashboard's studies", method: 'get', path: '/v1/dashboard/studies', url: () => '/v1/dashboard/studies', expect: { ...people(200, 200, 200), node: 403, outsider: 403, anonymous: 401 } },
  { what: "read the dashboard's audit chain status", method: 'get', path: '/v1/dashboard/audit', url: () => '/v1/dashboard/audit', expect: { ...people(200, 200, 403), node: 403, outsider: 403, anonymous: 401 } },
  // The dashboard's static files are public (no data in them: every number comes from the API with the reader's token).
  ...['/', '/dashboard/api.js', '/dashboard/app.js', '/dashboard/charts.js', '/dashboard/dom.js', '/dashboard/study-id.js', '/dashboard/study-view.js', '/dashboard/style.css', '/dashboard/vendor/uPlot.iife.min.js', '/dashboard/vendor/uPlot.min.css'].map(
    (path): Row => ({ what: `load the dashboard file ${path}`, method: 'get', path, url: () => path, expect: { ...people(200, 200, 200), node: 200, outsider: 200, anonymous: 200 } }),
  ),
];

const weights = encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(0.2) },
  { name: 'dense_0/bias', shape: [1], values: new Float32Array([0.1]) },
]);

/**
 * The role matrix: every route, every role, one status each. One in-process coordinator on
 * PGlite; the database does not change who may do what.
 */
describe('roles and API tokens', () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  let ctx: Ctx;
  const tokens: Record<string, string> = {};
  let nodeA: TestNode;
  let nodeB: TestNode;
  let late: TestNode;
  let outsider: TestNode;

  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
    for (const [role, region] of [['admin', undefined], ['auditor', undefined], ['analyst', 'eu']] as const) {
      const res = await h.admin('post', '/v1/tokens').send({ role, name: `${role}-1`, ...(region ? { region } : {}) });
      expect(res.status).toBe(201);
      expect(res.body.token).toMatch(/^fmtok_/);
      tokens[role] = res.body.token;
    }
    nodeA = await h.enroll(studyId, 'a');
    nodeB = await h.enroll(studyId, 'b');
    const other = await h.createStudy(tinyStudy({ minNodesToStart: 9 }));
    outsider = await h.enroll(other, 'x');
    const victim = await h.enroll(other, 'victim');
    await h.until(async () => ((await h.nodeGet(nodeA, '/v1/tasks/next')).status === 200 ? true : undefined));
    // Enrolled and ready once round 1 is open: same study, not a participant of round 1.
    late = await h.enroll(studyId, 'late');
    expect((await h.submit(nodeA, studyId, 1, weights, defaultMeta(5))).status).toBe(201);
    ctx = {
      studyId,
      nodeA,
      victimId: victim.nodeId,
      async freshTokenId() {
        return (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: `to-revoke-${Math.random()}` })).body.id as string;
      },
    };
  });
  afterAll(async () => h?.close());

  async function call(row: Row, role: Role) {
    const url = await row.url(ctx);
    const body = row.body?.(ctx);
    if (role === 'node' || role === 'outsider') {
      const node = role === 'node' ? nodeA : outsider;
      if (row.path.endsWith('/updates')) return h.submit(node, ctx.studyId, 1, weights, defaultMeta(5));
      // Nodes sign every request, as the daemon does (DELETE included); an evaluation's signature covers its round.
      const roundId = row.path.endsWith('/evaluations') ? roundBinding(ctx.studyId, 1) : undefined;
      return h.nodeRequest(node, row.method as 'get' | 'post', url, row.method === 'post' ? (body ?? {}) : undefined, { roundId });
    }
    let req = request(h.app)[row.method](url);
    if (role !== 'anonymous') req = req.set('authorization', `Bearer ${tokens[role]}`);
    if (row.path.endsWith('/updates')) {
      // A well-formed update request in every respect but the caller.
      return req.set(UPDATE_META_HEADER, JSON.stringify(defaultMeta(5))).set('content-type', 'application/pgp-encrypted').send(Buffer.from(weights));
    }
    return body === undefined ? req : req.send(body as object);
  }

  it('has a row for every route of the app, and no row for a route that does not exist', () => {
    const stack = (h.app as unknown as { router: { stack: Array<{ route?: { path: string; methods: Record<string, boolean> } }> } }).router.stack;
    const routes = stack.filter((l) => l.route).flatMap((l) => Object.keys(l.route!.methods).map((m) => `${m.toUpperCase()} ${l.route!.path}`));
    const rows = MATRIX.map((r) => `${r.method.toUpperCase()} ${r.path}`);
    expect(new Set(rows).size).toBe(rows.length);
    expect([...rows].sort()).toEqual([...new Set(routes)].sort());
  });

  for (const row of MATRIX) {
    it(`${row.method.toUpperCase()} ${row.path}: who may ${row.what}`, async () => {
      const got: Record<string, number> = {};
      for (const role of ROLES) got[role] = (await call(row, role)).status;
      expect(got).toEqual(row.expect);
    });
  }

  it('a node of the same study that was not a participant of round 1 may not read it', async () => {
    const path = `/v1/studies/${ctx.studyId}/rounds/1`;
    const refused = await h.nodeGet(late, path);
    expect(refused.status).toBe(403);
    expect(refused.body.error.message).toMatch(/did not take part in round 1/);
    // A participant that has not submitted may, and sees no other node's update.
    const b = await h.nodeGet(nodeB, path);
    expect(b.status).toBe(200);
    expect(b.body.updates).toEqual([]);
  });

  it("a node cannot read another node's submission", async () => {
    expect((await h.nodeGet(nodeB, `/v1/studies/${ctx.studyId}/rounds/1/updates/${nodeA.nodeId}`)).status).toBe(403);
    const own = await h.nodeGet(nodeA, `/v1/studies/${ctx.studyId}/rounds/1`);
    expect(own.body.updates.map((u: { nodeId: string }) => u.nodeId)).toEqual([nodeA.nodeId]);
    expect(own.body.updates[0]).not.toHaveProperty('values');
  });

  it('an analyst sees only its own region', async () => {
    const as = (token: string, path: string) => request(h.app).get(path).set('authorization', `Bearer ${token}`);
    const res = await as(tokens.analyst, `/v1/studies/${ctx.studyId}`);
    expect(res.body.nodes.length).toBeGreaterThan(0);
    expect(res.body.nodes.every((n: { region: string }) => n.region === 'eu')).toBe(true);
    const us = await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'us-team', region: 'us' });
    expect((await as(us.body.token, `/v1/studies/${ctx.studyId}/rounds/1/updates/${nodeA.nodeId}`)).status).toBe(403);
    // A region with no node in the study does not see it at all (reads.test.ts covers every route).
    expect((await as(us.body.token, `/v1/studies/${ctx.studyId}`)).status).toBe(403);
  });

  it('tokens are stored hashed and revocable at once', async () => {
    const as = (token: string, path: string) => request(h.app).get(path).set('authorization', `Bearer ${token}`);
    const created = await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'temp' });
    const rows = await h.built.db.selectFrom('api_tokens').selectAll().execute();
    expect(rows.some((r) => r.token_hash.includes(created.body.token) || created.body.token.includes(r.token_hash))).toBe(false);
    expect((await as(created.body.token, `/v1/studies/${ctx.studyId}`)).status).toBe(200);
    expect((await h.admin('delete', `/v1/tokens/${created.body.id}`)).status).toBe(204);
    const after = await as(created.body.token, `/v1/studies/${ctx.studyId}`);
    expect(after.status).toBe(401);
    expect(after.body.error.message).toMatch(/revoked/);
    const analystWithoutRegion = await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'x' });
    expect(analystWithoutRegion.status).toBe(400);
    expect(analystWithoutRegion.body.error.field).toBe('body.region');
  });

  it('keeps the test node keys distinct (the matrix relies on node a and the outsider signing differently)', async () => {
    expect((await testNodeKey(0)).publicKey).not.toBe((await testNodeKey(1)).publicKey);
  });
});
