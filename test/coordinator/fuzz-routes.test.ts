import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { ErrorBody, roundBinding } from '../../protocols/messages.ts';
import { sealUpdate, signRequest } from '../../protocols/crypto/index.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { ROUTE_PARAMS } from '../../coordinator/http/validate.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { ADMIN, defaultMeta, evaluation, inProcessCoordinator, testNodeKey, tinyStudy, type Harness, type TestNode } from './harness.ts';

/**
 * Every route of the app, driven with random and boundary inputs (ids with NUL, unicode,
 * %-garbage, huge; numbers at 2^31, 2^53, -1, 1e308, NaN; random and near-valid JSON bodies;
 * wrong content types, charsets and encodings), with and without valid credentials (the admin
 * token, an analyst's and an auditor's, a real enrolled node's signature): no answer may be a 5xx,
 * and every refusal is an ErrorBody. Requests go over a real socket (node:http), byte for byte.
 */

interface Route {
  method: string;
  path: string;
}

/** The routes in the app's own table; anything else in its stack must be a known middleware (a sub-router would hide routes). */
function appRoutes(app: Harness['app']): Route[] {
  const stack = (app as unknown as { router: { stack: Array<{ name: string; route?: { path: string; methods: Record<string, boolean> } }> } }).router.stack;
  const middleware = stack.filter((l) => !l.route).map((l) => l.name);
  // A sub-router or a mounted app would hold routes this walk cannot see.
  expect(middleware.filter((n) => /router|mounted_app|dispatch/i.test(n))).toEqual([]);
  return stack.filter((l) => l.route).flatMap((l) => Object.keys(l.route!.methods).map((m) => ({ method: m.toUpperCase(), path: l.route!.path })));
}

// Path segments as they go on the wire: percent-encoded or raw garbage, all sendable by node:http.
const SEGMENT_EDGES = ['%00', 'a%00b', '%01', '%7F', '%zz', '%', '%E0%A4%A', '%C0%AF', '%ED%A0%80', '..', '%2e%2e', '%2F', '%252F', 'x'.repeat(300), 'y'.repeat(5000), '%C3%A9', '%F0%9F%98%80', '\u00e9', "'%20or%201=1--", '%3Cscript%3E', '-1', '0', '1', '2147483647', '2147483648', '4294967296', '9007199254740993', '1e308', 'NaN', 'Infinity', '0x10', '1.5', '%201', '01', '%EF%BC%91', '0'.repeat(30) + '1'];
const QUERY_EDGES = ['', '?wait=1e308', '?wait=-1', '?wait=NaN', '?wait=0.01', '?seen=2147483648', '?seen=9007199254740993', '?seen=-1', '?version=2147483648', '?version=1', '?version=%zz', '?version=1&version=2', '?wait[a]=1', '?%00=%00', `?wait=${'9'.repeat(400)}`, '?seen=1e308&wait=0', '?fromRound=-1', '?fromRound=1e308', '?fromRound=x', '?fromRound=1&fromRound=2'];
const LEAF_EDGES: unknown[] = [2 ** 31, 2 ** 31 - 1, 2 ** 53, 2 ** 53 + 2, -1, 0, 1e308, -1e308, 0.5, '', 'x'.repeat(10_000), '\u0000', 'a\u0000b', '\ud800', '\u00e9\u{1F600}', null, true, [], {}, '2147483648', 'NaN'];
const BIG = Buffer.alloc(1_100_000, 0x5b); // "[[[[...": over the 1 MB JSON limit
const BODY_EDGES = ['{"name":"a\\u0000"}', '{"name":"\\ud800"}', '[', '{"__proto__":{"x":1}}', '1e999', '"x"', 'null', '{"a":' + '['.repeat(5000) + ']'.repeat(5000) + '}'].map((s) => Buffer.from(s));
const CONTENT_TYPES = [undefined, 'application/json', 'application/json', 'application/json', 'application/json', 'application/json', 'application/json; charset=utf-8', 'application/json; charset=utf-7', 'application/json; charset=latin1', 'application/json; charset=x-nonsense', 'text/plain', 'application/pgp-encrypted', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'];
const ENCODINGS = [undefined, undefined, undefined, undefined, undefined, undefined, undefined, 'gzip', 'deflate', 'br', 'identity', 'x-unknown', 'gzip, gzip'];
// Weighted towards credentials that get past authorization, where the deeper code runs.
const AUTHS = ['none', 'admin', 'admin', 'admin', 'auditor', 'analyst', 'garbage', 'node', 'node', 'node', 'node-foreign-key'] as const;
type Auth = (typeof AUTHS)[number];

/** A header value node:http will send (printable latin1). */
const headerSafe = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');
const encodeSegment = (s: string) => {
  try {
    return encodeURIComponent(s);
  } catch {
    return '%ED%A0%80'; // a lone surrogate, as its UTF-8-ish bytes
  }
};

/** `value` with one leaf replaced by `edge` (or removed): near-valid bodies reach deeper than random JSON. */
function mutate(value: unknown, pick: number, edge: unknown, remove: boolean): unknown {
  const copy = structuredClone(value) as Record<string, unknown>;
  const leaves: Array<[Record<string, unknown>, string]> = [];
  const walk = (o: unknown) => {
    if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) (v && typeof v === 'object' ? walk(v) : leaves.push([o as Record<string, unknown>, k]));
  };
  walk(copy);
  if (leaves.length === 0) return edge;
  const [parent, key] = leaves[pick % leaves.length];
  if (remove && !Array.isArray(parent)) delete parent[key];
  else parent[key] = edge;
  return copy;
}

interface World {
  h: Harness;
  port: number;
  studyId: string;
  node: TestNode;
  spare: TestNode;
  foreignKey: TestNode;
  tokens: { analyst: string; auditor: string };
  params: Record<string, string[]>;
  /** Per route, valid values that differ from `params` (revocation gets the victim, never the signing node). */
  routeParams: Record<string, Record<string, string[]>>;
  validBodies: Record<string, unknown>;
}

const weights = encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(0.2) },
  { name: 'dense_0/bias', shape: [1], values: new Float32Array([0.1]) },
]);

async function buildWorld(h: Harness, port: number): Promise<World> {
  const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
  const node = await h.enroll(studyId, 'a');
  const b = await h.enroll(studyId, 'b');
  // Withdrawing and rotating its key are fuzzed on a node of its own, so `node` keeps signing.
  const spare = await h.enroll(studyId, 'spare');
  const victim = await h.enroll(studyId, 'victim');
  await h.until(async () => ((await h.nodeGet(node, '/v1/tasks/next')).status === 200 ? true : undefined));
  await h.submit(b, studyId, 1, weights, defaultMeta(5));
  const analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'fuzz-eu', region: 'eu' })).body.token as string;
  const auditor = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'fuzz-auditor' })).body.token as string;
  const doomed = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'fuzz-doomed' })).body.id as string;
  const foreignKey = { ...node, ...(await testNodeKey(4)) };
  return {
    h, port, studyId, node, spare, foreignKey, tokens: { analyst, auditor },
    params: { studyId: [studyId], nodeId: [node.nodeId, victim.nodeId], round: ['1', '2'], version: ['0', '1'], region: ['eu'], id: [doomed] },
    routeParams: { 'POST /v1/nodes/:nodeId/revoke': { nodeId: [victim.nodeId] } },
    validBodies: {
      'POST /v1/studies': tinyStudy({ minNodesToStart: 50 }),
      'POST /v1/tokens': { role: 'analyst', name: 'n', region: 'eu' },
      'POST /v1/enrollment-tokens': { studyId, nodeName: 'n', region: 'eu', jurisdiction: 'US-CA-CCPA', expiresInSeconds: 60 },
      'POST /v1/nodes/enroll': { token: 'fmenroll_not-a-real-token-at-all', publicKey: node.publicKey, jurisdiction: 'US-CA-CCPA' },
      'POST /v1/nodes/:nodeId/revoke': { reason: 'fuzz' },
      'POST /v1/nodes/me/key': { publicKey: (await testNodeKey(5)).publicKey },
      'POST /v1/nodes/me/withdraw': { reason: 'fuzz' },
      'POST /v1/nodes/me/status': { state: 'ready', message: 'ok' },
      'POST /v1/policies': { jurisdiction: 'XX-FUZZ', minNodesPerAggregate: 2 },
      'POST /v1/studies/:studyId/rounds/:round/evaluations': evaluation([1, 2], [2, 1], 0.5),
      'POST /v1/studies/:studyId/rounds/:round/updates': defaultMeta(5),
    },
  };
}

/** One request, byte for byte, over a socket; resolves with the status and the parsed body (JSON or not). */
function send(port: number, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; body: unknown; type: string }> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: a reused keep-alive socket the server just closed reads as ECONNRESET.
    const req = httpRequest({ agent: false, host: '127.0.0.1', port, method, path, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const type = String(res.headers['content-type'] ?? '');
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, type, body: type.includes('json') && text ? JSON.parse(text) : text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface Case {
  segments: Record<string, string>;
  query: string;
  auth: Auth;
  contentType: string | undefined;
  encoding: string | undefined;
  requestId: string | undefined;
  body: Buffer | undefined;
  meta: string | undefined;
  /** For an update: a real sealed body (encrypted to the coordinator, signed by the node) instead of `body`. */
  sealed: boolean;
}

/** The random inputs of one request to `route`. */
function caseArb(route: Route, w: World): fc.Arbitrary<Case> {
  const names = [...route.path.matchAll(/:(\w+)/g)].map((m) => m[1]);
  const segment = (name: string) =>
    fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...(w.routeParams[`${route.method} ${route.path}`]?.[name] ?? w.params[name])) },
      { weight: 3, arbitrary: fc.constantFrom(...SEGMENT_EDGES) },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }).map(encodeSegment) },
      { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double()).map((n) => encodeSegment(String(n))) },
    );
  const valid = w.validBodies[`${route.method} ${route.path}`] ?? {};
  const body = fc.oneof(
    { weight: 4, arbitrary: fc.constant(undefined) },
    { weight: 4, arbitrary: fc.constant(Buffer.from(JSON.stringify(valid))) },
    { weight: 8, arbitrary: fc.tuple(fc.nat(), fc.constantFrom(...LEAF_EDGES), fc.boolean()).map(([i, e, r]) => Buffer.from(JSON.stringify(mutate(valid, i, e, r)))) },
    { weight: 3, arbitrary: fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)) },
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
    { weight: 3, arbitrary: fc.constantFrom(...BODY_EDGES) },
    { weight: 1, arbitrary: fc.constant(BIG) },
  );
  const meta = fc.oneof(
    fc.constant(JSON.stringify(defaultMeta(5))),
    fc.tuple(fc.nat(), fc.constantFrom(...LEAF_EDGES), fc.boolean()).map(([i, e, r]) => headerSafe(JSON.stringify(mutate(defaultMeta(5), i, e, r)))),
    fc.json({ maxDepth: 2 }).map(headerSafe),
    fc.constant(undefined),
  );
  return fc.record({
    segments: fc.record(Object.fromEntries(names.map((n) => [n, segment(n)]))) as fc.Arbitrary<Record<string, string>>,
    query: fc.constantFrom(...QUERY_EDGES),
    auth: fc.constantFrom(...AUTHS),
    contentType: fc.constantFrom(...CONTENT_TYPES),
    encoding: fc.constantFrom(...ENCODINGS),
    requestId: fc.constantFrom(undefined, 'fuzz-1', 'r'.repeat(3000), 'caf\u00e9'),
    body,
    meta,
    sealed: fc.boolean(),
  });
}

/**
 * Cases every run tries first (fast-check `examples`): the route's valid values with one kind of
 * parameter at a boundary (a number past int32 and past 2^53, an id with a NUL or bad
 * percent-encoding), as the admin and as the node, so the boundaries reach the database
 * whatever the random draw.
 */
function boundaryExamples(route: Route, w: World): Array<[Case]> {
  const names = [...route.path.matchAll(/:(\w+)/g)].map((m) => m[1]);
  const valid = w.validBodies[`${route.method} ${route.path}`] ?? {};
  const base = (auth: Auth, segments: Record<string, string>): Case => ({ segments, query: '', auth, contentType: 'application/json', encoding: undefined, requestId: undefined, body: Buffer.from(JSON.stringify(valid)), meta: JSON.stringify(defaultMeta(5)), sealed: true });
  const at = (edge: (name: string) => string | undefined) => Object.fromEntries(names.map((n) => [n, edge(n) ?? (w.routeParams[`${route.method} ${route.path}`]?.[n] ?? w.params[n])[0]]));
  const variants = [
    at((n) => (n === 'round' || n === 'version' ? '2147483648' : undefined)),
    at((n) => (n === 'round' || n === 'version' ? '9007199254740993' : undefined)),
    at((n) => (n.endsWith('Id') || n === 'id' || n === 'region' ? 'a%00b' : undefined)),
    at((n) => (n.endsWith('Id') || n === 'id' || n === 'region' ? '%E0%A4%A' : undefined)),
    at(() => undefined),
  ];
  // A route without parameters has one variant, not five copies of it.
  const distinct = [...new Map(variants.map((v) => [JSON.stringify(v), v])).values()];
  return (['admin', 'node'] as const).flatMap((auth) => distinct.map((segments): [Case] => [base(auth, segments)]));
}

/** The credentials of `c.auth`, for exactly this method, path and body (a node's signature covers them). */
async function credentials(w: World, route: Route, c: Case, path: string): Promise<Record<string, string>> {
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
  if (c.auth === 'none') return {};
  if (c.auth === 'admin') return bearer(ADMIN);
  if (c.auth === 'garbage') return bearer('fmtok_not-a-token-0000000000');
  if (c.auth === 'analyst' || c.auth === 'auditor') return bearer(w.tokens[c.auth]);
  const own = route.path.startsWith('/v1/nodes/me/') && route.method === 'POST' && !route.path.endsWith('/status') ? w.spare : w.node;
  const signer = c.auth === 'node-foreign-key' ? w.foreignKey : own;
  let roundId: string | undefined;
  if (route.path.endsWith('/evaluations')) roundId = roundBinding(decodeURIComponentSafe(c.segments.studyId), Number(c.segments.round));
  if (route.path.endsWith('/updates') && c.meta !== undefined) roundId = roundBinding(decodeURIComponentSafe(c.segments.studyId), Number(c.segments.round), c.meta);
  // The binding travels in a header: only what a header can carry (a real node's ids always can).
  if (roundId !== undefined) roundId = headerSafe(roundId);
  const signed = await signRequest({ privateKey: signer.privateKey, method: route.method, path, roundId, body: new Uint8Array(bodyOf(route, c) ?? []) });
  return { ...bearer(own.apiKey), ...signed };
}

function decodeURIComponentSafe(s: string | undefined) {
  try {
    return decodeURIComponent(s ?? '');
  } catch {
    return s ?? '';
  }
}

/** Statuses seen per route (FUZZ_STATS=1 prints them): how deep the inputs got. */
const STATS: Record<string, Record<number, number>> = {};
const FAILURES: string[] = [];

/** The body a case sends: its sealed update when it has one (see `withSealed`). */
const bodyOf = (route: Route, c: Case): Buffer | undefined => (route.method === 'GET' ? undefined : ((c as Case & { sealedBytes?: Buffer }).sealedBytes ?? c.body));

/** For an update route with `sealed` and a node's credentials: a real sealed body, made now (the coordinator's key may have rotated). */
async function withSealed(w: World, route: Route, c: Case): Promise<Case> {
  if (!(route.path.endsWith('/updates') && c.sealed && c.auth.startsWith('node'))) return c;
  const sealed = await sealUpdate({ bytes: weights, coordinatorPublicKey: w.h.built.keyring.current.publicKey, nodePrivateKey: w.node.privateKey });
  return { ...c, sealedBytes: Buffer.from(sealed) } as Case;
}

/** Sends one case; fails (with what was sent) on a 5xx, or on a refusal that is not an ErrorBody. */
async function drive(w: World, route: Route, given: Case) {
  const c = await withSealed(w, route, given);
  const path = route.path.replace(/:(\w+)/g, (_m, name: string) => c.segments[name]) + c.query;
  const headers: Record<string, string> = { ...(await credentials(w, route, c, path)) };
  if (c.contentType) headers['content-type'] = c.contentType;
  if (c.encoding) headers['content-encoding'] = c.encoding;
  if (c.requestId) headers['x-request-id'] = headerSafe(c.requestId);
  if (c.meta !== undefined && route.path.endsWith('/updates')) headers['fedmark-update'] = c.meta;
  const res = await send(w.port, route.method, path, headers, bodyOf(route, c));
  if (process.env.FUZZ_STATS) {
    const key = `${route.method} ${route.path}`;
    (STATS[key] ??= {})[res.status] = (STATS[key][res.status] ?? 0) + 1;
  }
  const sent = `${route.method} ${path.slice(0, 200)} auth=${c.auth} ct=${c.contentType} ce=${c.encoding} body=${c.body?.subarray(0, 120).toString('latin1')}`;
  // FUZZ_COLLECT=1: list every 5xx (printed at the end) instead of stopping at the first.
  if (process.env.FUZZ_COLLECT && res.status >= 500) FAILURES.push(`${res.status} ${sent}`);
  if (process.env.FUZZ_COLLECT) return;
  expect(res.status, `5xx for ${sent}: ${JSON.stringify(res.body).slice(0, 400)}`).toBeLessThan(500);
  if (res.status >= 400 && res.type.includes('json')) expect(ErrorBody.safeParse(res.body).success, `not an ErrorBody for ${sent}`).toBe(true);
}

for (const backendName of BACKEND_NAMES) {
  describe(`every route, fuzzed, answers no 5xx on ${backendName}`, () => {
    let w: World | undefined;
    let server: Server | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      // The refusal limit is off here: the fuzzer is one address refused thousands of times.
      const h = await inProcessCoordinator(backend, undefined, { rateLimitRefusals: 0 });
      server = h.app.listen(0, '127.0.0.1');
      await new Promise((r) => server!.once('listening', r));
      w = await buildWorld(h, (server.address() as AddressInfo).port);
    }, 120_000);
    afterAll(async () => {
      if (process.env.FUZZ_STATS) console.log(JSON.stringify(STATS, null, 1));
      if (process.env.FUZZ_COLLECT) console.log(FAILURES.join('\n'));
      server?.closeAllConnections();
      await new Promise((r) => (server ? server.close(r) : r(undefined)));
      await w?.h.close();
    });

    it('every route parameter of the app has a validator (a new route cannot skip validation)', (ctx) => {
      if (!w) return ctx.skip();
      const names = appRoutes(w.h.app).flatMap((r) => [...r.path.matchAll(/:(\w+)/g)].map((m) => m[1]));
      expect(names.filter((n) => !(n in ROUTE_PARAMS))).toEqual([]);
      expect(new Set(names)).toEqual(new Set(Object.keys(w.params)));
    });

    it('no route answers a 5xx to random and boundary inputs, with or without credentials', async (ctx) => {
      if (!w) return ctx.skip();
      const routes = appRoutes(w.h.app);
      expect(routes.length).toBeGreaterThanOrEqual(30);
      const numRuns = backendName === 'pglite' ? 20 : 10;
      for (const route of routes) {
        await fc.assert(fc.asyncProperty(caseArb(route, w), (c) => drive(w!, route, c)), { numRuns, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31), endOnFailure: true, examples: boundaryExamples(route, w) });
      }
    }, 240_000);
  });
}
