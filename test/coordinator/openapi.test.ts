import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appRoutes, buildOpenApiDocument, openApiPath } from '../../coordinator/http/openapi.ts';
import { UPDATE_META_HEADER } from '../../protocols/messages.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, evaluation, inProcessCoordinator, testNodeKey, tinyStudy, type Harness } from './harness.ts';

type Json = Record<string, any>;
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

function logregWeights(fill: number): WeightSet {
  return [
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(fill) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([fill]) },
  ];
}

/** `METHOD /express/path` of every operation in the document. */
function documentedOperations(doc: Json): string[] {
  return Object.entries(doc.paths as Record<string, Json>).flatMap(([path, item]) => METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ':$1')}`));
}

/**
 * Checks values against the document's own JSON Schemas (what a client reads), $refs resolved
 * against its components: a schema of the document, never the zod one behind it.
 */
function schemaChecker(doc: Json) {
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: false });
  const check = (schema: Json, value: unknown, what: string) => {
    const validate = ajv.compile({ ...schema, components: doc.components });
    if (!validate(value)) throw new Error(`${what}: the documented schema refuses it: ${ajv.errorsText(validate.errors)}`);
  };
  const operation = (method: string, path: string): Json => {
    const op = doc.paths[openApiPath(path)]?.[method.toLowerCase()];
    if (!op) throw new Error(`${method} ${path} is not documented`);
    return op;
  };
  return {
    /** The request body, as sent, against the operation's documented request schema. */
    body(method: string, path: string, body: unknown, type = 'application/json') {
      const schema = operation(method, path).requestBody?.content?.[type]?.schema;
      if (!schema) throw new Error(`${method} ${path} documents no ${type} body`);
      check(schema, body, `${method} ${path} body`);
    },
    /** A JSON response against the operation's documented schema for its status. */
    response(method: string, path: string, res: { status: number; body: unknown }) {
      const schema = operation(method, path).responses?.[String(res.status)]?.content?.['application/json']?.schema;
      if (!schema) throw new Error(`${method} ${path} documents no JSON response ${res.status}`);
      check(schema, res.body, `${method} ${path} response ${res.status}`);
    },
    component(name: string, value: unknown) {
      check({ $ref: `#/components/schemas/${name}` }, value, name);
    },
  };
}

describe('OpenAPI document and API reference', () => {
  let h: Harness | undefined;
  let doc: Json;
  beforeAll(async () => {
    const backend = await backendOrSkip('pglite');
    if (!backend) return;
    h = await inProcessCoordinator(backend);
    const res = await request(h.app).get('/openapi.json');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    doc = res.body;
  });
  afterAll(async () => {
    await h?.close();
  });
  const run = (name: string, fn: (h: Harness) => Promise<void>) =>
    it(name, async (ctx) => {
      if (!h) return ctx.skip();
      await fn(h);
    });

  run('is served without credentials and validates as OpenAPI 3.1', async () => {
    expect(doc.openapi).toBe('3.1.0');
    const result = await new Validator().validate(doc as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  run("documents every route of the app's route table, and nothing else", async (h) => {
    const routes = appRoutes(h.app).map((r) => `${r.method} ${r.path}`);
    const documented = new Set(documentedOperations(doc));
    // A failure names each route (METHOD /path) that was added without documentation.
    expect(routes.filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((d) => !routes.includes(d))).toEqual([]);
    expect(routes.length).toBeGreaterThan(40);
  });

  run('says who may call each operation, its path parameters, the bearer scheme and the error body', async () => {
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.schemas.ErrorBody.properties.error.required).toEqual(['code', 'message']);
    for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
      for (const method of METHODS.filter((m) => item[m])) {
        const op = item[method];
        const at = `${method.toUpperCase()} ${path}`;
        expect(op.description, at).toMatch(/Roles: /);
        expect(Array.isArray(op['x-fedmark-roles']), at).toBe(true);
        expect(op.security, at).toEqual(op['x-fedmark-roles'].length > 0 ? [{ bearerAuth: [] }] : []);
        const declared = (op.parameters ?? []).filter((p: Json) => p.in === 'path').map((p: Json) => p.name);
        expect(declared.sort(), at).toEqual([...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort());
        expect(op.responses['400'], at).toEqual({ $ref: '#/components/responses/BadRequest' });
      }
    }
    expect(doc.paths['/v1/tokens'].post['x-fedmark-roles']).toEqual(['admin']);
    expect(doc.paths['/metrics'].get['x-fedmark-roles']).toEqual(['admin', 'auditor']);
    expect(doc.paths['/v1/nodes/enroll'].post.security).toEqual([]);
  });

  run('the documented roles hold: an anonymous caller is refused 401 by every operation that names roles, an auditor 403 exactly by those that exclude auditors', async (h) => {
    const auditor = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'roles check' })).body.token as string;
    const filled = (path: string) => path.replace(/:([A-Za-z]+)/g, (_m, name: string) => ({ studyId: 'study_nosuch', round: '1', version: '0', nodeId: 'node_nosuch', region: 'eu', id: 'tok_nosuch' })[name] ?? 'x');
    const wrong: string[] = [];
    for (const route of appRoutes(h.app)) {
      const op = doc.paths[openApiPath(route.path)][route.method.toLowerCase()];
      const roles: string[] = op['x-fedmark-roles'];
      const call = (token?: string) => {
        const req = request(h.app)[route.method.toLowerCase() as 'get' | 'post' | 'delete'](filled(route.path));
        return token ? req.set('authorization', `Bearer ${token}`) : req;
      };
      const anonymous = (await call()).status;
      if ((anonymous === 401) !== (roles.length > 0)) wrong.push(`${route.method} ${route.path}: anonymous got ${anonymous}, documented roles [${roles}]`);
      if (roles.length > 0) {
        const status = (await call(auditor)).status;
        if ((status === 403) !== !roles.includes('auditor')) wrong.push(`${route.method} ${route.path}: an auditor got ${status}, documented roles [${roles}]`);
      }
    }
    expect(wrong).toEqual([]);
  });

  run('documents binary bodies as binary: models sent, sealed updates received', async () => {
    const model = doc.paths['/v1/studies/{studyId}/models/{version}'].get.responses['200'].content;
    expect(model['application/octet-stream'].schema).toMatchObject({ type: 'string', format: 'binary' });
    const update = doc.paths['/v1/studies/{studyId}/rounds/{round}/updates'].post;
    expect(update.requestBody.content['application/pgp-encrypted'].schema).toMatchObject({ type: 'string', format: 'binary' });
    expect(update.parameters.find((p: Json) => p.name === UPDATE_META_HEADER)).toMatchObject({ in: 'header', required: true });
  });

  run('each documented request schema accepts the real requests of a round, and the responses match theirs', async (h) => {
    const c = schemaChecker(doc);
    // Each call: the body checked against the document, then sent for real (and accepted).
    const admin = async (method: 'post' | 'get' | 'delete', path: string, template: string, body?: unknown) => {
      if (body !== undefined) c.body(method, template, body);
      const res = await h.admin(method, path).send(body as object);
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBeLessThan(300);
      if (res.status !== 204) c.response(method, template, res);
      return res;
    };
    const token = await admin('post', '/v1/tokens', '/v1/tokens', { role: 'analyst', name: 'eu team', region: 'eu' });
    await admin('delete', `/v1/tokens/${token.body.id}`, '/v1/tokens/:id');
    const policies = await admin('get', '/v1/policies', '/v1/policies');
    const { version: _v, createdAt: _c, ...profile } = policies.body.policies.find((p: Json) => p.jurisdiction === 'US-CA-CCPA');
    await admin('post', '/v1/policies', '/v1/policies', profile);
    await admin('post', '/v1/studies/plan', '/v1/studies/plan', tinyStudy({ rounds: 1 }));
    const studyId = (await admin('post', '/v1/studies', '/v1/studies', tinyStudy({ rounds: 1 }))).body.id;
    const nodes = [];
    for (const name of ['a', 'b']) {
      const t = await admin('post', '/v1/enrollment-tokens', '/v1/enrollment-tokens', { studyId, nodeName: name, region: 'eu', jurisdiction: 'US-CA-CCPA' });
      const key = await testNodeKey(nodes.length);
      const enroll = { token: t.body.token, publicKey: key.publicKey, jurisdiction: 'US-CA-CCPA' };
      c.body('post', '/v1/nodes/enroll', enroll);
      const e = await request(h.app).post('/v1/nodes/enroll').send(enroll);
      expect(e.status).toBe(201);
      c.response('post', '/v1/nodes/enroll', e);
      const node = { nodeId: e.body.nodeId, apiKey: e.body.apiKey, ...key };
      c.body('post', '/v1/nodes/me/status', { state: 'ready' });
      expect((await h.nodePost(node, '/v1/nodes/me/status', { state: 'ready' })).status).toBe(204);
      nodes.push(node);
    }
    const [a, b] = nodes;
    const task = await h.until(async () => {
      const res = await h.nodeGet(a, '/v1/tasks/next');
      return res.status === 200 ? res : undefined;
    });
    c.response('get', '/v1/tasks/next', task);
    for (const [node, fill] of [[a, 1], [b, 2]] as const) {
      const meta = defaultMeta(10);
      c.component('UpdateMeta', meta);
      const sent = await h.submit(node, studyId, 1, encodeWeights(logregWeights(fill)), meta);
      expect(sent.status).toBe(201);
      c.response('post', '/v1/studies/:studyId/rounds/:round/updates', sent);
    }
    await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
    for (const node of [a, b]) {
      const report = evaluation([0, 1, 1], [1, 1, 0], 0.4);
      c.body('post', '/v1/studies/:studyId/rounds/:round/evaluations', report);
      const res = await h.nodePost(node, `/v1/studies/${studyId}/rounds/1/evaluations`, report, `${studyId}/1`);
      expect(res.status).toBe(201);
      c.response('post', '/v1/studies/:studyId/rounds/:round/evaluations', res);
    }
    const status = await h.until(async () => {
      const res = await h.admin('get', `/v1/studies/${studyId}`);
      return res.body.state === 'completed' ? res : undefined;
    });
    c.response('get', '/v1/studies/:studyId', status);
    c.body('post', '/v1/nodes/me/withdraw', { reason: 'done' });
    expect((await h.nodePost(a, '/v1/nodes/me/withdraw', { reason: 'done' })).status).toBe(200);
    await admin('post', `/v1/nodes/${b.nodeId}/revoke`, '/v1/nodes/:nodeId/revoke', { reason: 'retired' });
    const second = (await admin('post', '/v1/studies', '/v1/studies', tinyStudy())).body.id;
    await admin('post', `/v1/studies/${second}/stop`, '/v1/studies/:studyId/stop', { reason: 'no longer needed' });
    await admin('post', '/v1/coordinator/key/rotate', '/v1/coordinator/key/rotate');
  });

  run('the document refuses what the API refuses (the checks above are not vacuous)', async (h) => {
    const c = schemaChecker(doc);
    const bad = { role: 'auditor' };
    expect(() => c.body('post', '/v1/tokens', bad)).toThrow(/name/);
    expect((await h.admin('post', '/v1/tokens').send(bad)).status).toBe(400);
    expect(() => c.body('post', '/v1/nodes/me/status', { state: 'sleeping' })).toThrow(/documented schema refuses/);
    expect(() => c.component('UpdateMeta', { ...defaultMeta(), numExamples: -3 })).toThrow(/numExamples|minimum/);
    // The histogram's counts are checked by hand in one loop (protocols/metrics.ts integerArray):
    // the document still says integers of at least 0, and the API still refuses others.
    const histogram = (positives: unknown[]) => ({ numExamples: 3, stats: { kind: 'binary', histogram: { bins: 2, positives, negatives: [1, 0] }, brierSum: 0.5, logLossSum: 1 } });
    expect(() => c.component('EvaluationReport', histogram([2, 0]))).not.toThrow();
    for (const wrong of [[-1, 3], [1.5, 0.5], ['2', 0]]) expect(() => c.component('EvaluationReport', histogram(wrong)), JSON.stringify(wrong)).toThrow(/documented schema refuses/);
  });

  run('GET /docs renders every operation as a static page (no script)', async (h) => {
    const res = await request(h.app).get('/docs');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.headers['content-security-policy']).toMatch(/default-src 'none'/);
    expect(res.text).not.toMatch(/<script/i);
    for (const op of documentedOperations(doc)) {
      const [method, path] = op.split(' ');
      expect(res.text, op).toContain(`${method}</span> <code>${openApiPath(path)}</code>`);
    }
  });

  run('a route added without documentation is reported by name', async (h) => {
    // Last: it adds a route to this app.
    h.app.post('/v1/undocumented-probe', (_req, res) => {
      res.end();
    });
    expect(buildOpenApiDocument(h.app).undocumented).toEqual(['POST /v1/undocumented-probe']);
  });
});
