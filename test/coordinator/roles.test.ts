import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, inProcessCoordinator, tinyStudy, type TestNode } from './harness.ts';

/**
 * The role matrix: every role can do exactly what it may and gets 403 (or 401) for the rest.
 * One in-process coordinator on PGlite; the database does not change who may do what.
 */
describe('roles and API tokens', () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  let studyId: string;
  const tokens: Record<string, string> = {};
  let nodeA: TestNode;
  let nodeB: TestNode;
  let outsider: TestNode;

  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesToStart: 2 }));
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
    await h.until(async () => ((await h.nodeGet(nodeA, '/v1/tasks/next')).status === 200 ? true : undefined));
    const w = [
      { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(0.2) },
      { name: 'dense_0/bias', shape: [1], values: new Float32Array([0.1]) },
    ];
    expect((await h.submit(nodeA, studyId, 1, encodeWeights(w), defaultMeta(5))).status).toBe(201);
  });
  afterAll(async () => h?.close());

  const as = (token: string, method: 'get' | 'post' | 'delete', path: string) => request(h.app)[method](path).set('authorization', `Bearer ${token}`);

  const matrix: Array<[string, 'get' | 'post', (ids: { studyId: string }) => string, Record<'admin' | 'auditor' | 'analyst' | 'nodeA' | 'outsider', number[]>, unknown?]> = [
    ['create a study', 'post', () => '/v1/studies', { admin: [201], auditor: [403], analyst: [403], nodeA: [403], outsider: [403] }, tinyStudy({ minNodesToStart: 50 })],
    ['issue an enrollment token', 'post', (i) => '/v1/enrollment-tokens', { admin: [201], auditor: [403], analyst: [403], nodeA: [403], outsider: [403] }, 'enroll'],
    ['read study status', 'get', (i) => `/v1/studies/${i.studyId}`, { admin: [200], auditor: [200], analyst: [200], nodeA: [403], outsider: [403] }],
    ['read the privacy report', 'get', (i) => `/v1/studies/${i.studyId}/privacy`, { admin: [200], auditor: [200], analyst: [403], nodeA: [403], outsider: [403] }],
    ['read global weights', 'get', (i) => `/v1/studies/${i.studyId}/models/0`, { admin: [200], auditor: [403], analyst: [200], nodeA: [200], outsider: [403] }],
    ['read a round it took part in', 'get', (i) => `/v1/studies/${i.studyId}/rounds/1`, { admin: [200], auditor: [200], analyst: [200], nodeA: [200], outsider: [403] }],
    ['read node a\'s submission', 'get', (i) => `/v1/studies/${i.studyId}/rounds/1/updates/${nodeA.nodeId}`, { admin: [200], auditor: [200], analyst: [200], nodeA: [200], outsider: [403] }],
    ['start a round', 'post', (i) => `/v1/studies/${i.studyId}/rounds`, { admin: [409], auditor: [403], analyst: [403], nodeA: [403], outsider: [403] }],
    ['list API tokens', 'get', () => '/v1/tokens', { admin: [200], auditor: [403], analyst: [403], nodeA: [403], outsider: [403] }],
    ['pull a task', 'get', () => '/v1/tasks/next', { admin: [403], auditor: [403], analyst: [403], nodeA: [204, 200], outsider: [204] }],
  ];

  for (const [what, method, path, expected, body] of matrix) {
    it(`who may ${what}`, async () => {
      const people = { admin: tokens.admin, auditor: tokens.auditor, analyst: tokens.analyst };
      const nodes = { nodeA, outsider };
      for (const [role, statuses] of Object.entries(expected)) {
        const payload = body === 'enroll' ? { studyId, nodeName: `n-${role}-${Math.random()}`, region: 'eu' } : body;
        let res;
        if (role in nodes) {
          // Nodes sign every request, as the daemon does.
          res = await h.nodeRequest(nodes[role as keyof typeof nodes], method, path({ studyId }), method === 'post' ? (payload ?? {}) : undefined);
        } else {
          let req = as(people[role as keyof typeof people], method, path({ studyId }));
          if (payload) req = req.send(payload as object);
          res = await req;
        }
        expect({ role, what, status: res.status }).toEqual({ role, what, status: expect.toBeOneOf(statuses) });
      }
    });
  }

  it('a node cannot read another node\'s submission or a round it was not in', async () => {
    expect((await h.nodeGet(nodeB, `/v1/studies/${studyId}/rounds/1/updates/${nodeA.nodeId}`)).status).toBe(403);
    const own = await h.nodeGet(nodeA, `/v1/studies/${studyId}/rounds/1`);
    expect(own.body.updates.map((u: { nodeId: string }) => u.nodeId)).toEqual([nodeA.nodeId]);
    expect(own.body.updates[0]).not.toHaveProperty('values');
  });

  it('an analyst sees only its own region', async () => {
    const res = await as(tokens.analyst, 'get', `/v1/studies/${studyId}`);
    expect(res.body.nodes.every((n: { region: string }) => n.region === 'eu')).toBe(true);
    const us = await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'us-team', region: 'us' });
    expect((await as(us.body.token, 'get', `/v1/studies/${studyId}/rounds/1/updates/${nodeA.nodeId}`)).status).toBe(403);
    expect((await as(us.body.token, 'get', `/v1/studies/${studyId}`)).body.nodes).toEqual([]);
  });

  it('tokens are stored hashed and revocable at once', async () => {
    const created = await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'temp' });
    const rows = await h.built.db.selectFrom('api_tokens').selectAll().execute();
    expect(rows.some((r) => r.token_hash.includes(created.body.token) || created.body.token.includes(r.token_hash))).toBe(false);
    expect((await as(created.body.token, 'get', `/v1/studies/${studyId}`)).status).toBe(200);
    expect((await h.admin('delete', `/v1/tokens/${created.body.id}`)).status).toBe(204);
    const after = await as(created.body.token, 'get', `/v1/studies/${studyId}`);
    expect(after.status).toBe(401);
    expect(after.body.error.message).toMatch(/revoked/);
    const analystWithoutRegion = await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'x' });
    expect(analystWithoutRegion.status).toBe(400);
    expect(analystWithoutRegion.body.error.field).toBe('body.region');
  });
});
