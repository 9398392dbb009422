import { OpenAPIRegistry, OpenApiGeneratorV31, zodToOpenAPIRegistry, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import type { Express } from 'express';
import { z } from 'zod';
import { Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { CreateEnrollmentToken, DataReport, EnrollRequest, EnrollResponse, ErrorBody, EvaluationReport, NodeStatusReport, RoundSummary, StudyConfig, StudyStatus, UpdateMeta, UpdateReceipt } from '../../protocols/messages.ts';
import { PolicyProfile } from '../../protocols/policy/jurisdiction-policy.ts';
import { SIGNATURE_HEADER_NAMES } from '../../protocols/crypto/request-signing.ts';
import { renderDocsPage, DOCS_CSP } from './openapi/docs-page.ts';
import { ROUTE_DOCS, ruleFor, type RouteDoc } from './openapi/routes.ts';
import { TaskDoc, UpdateReceiptDoc } from './openapi/schemas.ts';
import { ROUTE_PARAMS } from './validate.ts';

/**
 * Schemas shared by several operations become named components (`#/components/schemas/Name`)
 * instead of being repeated inline: the document is a quarter of the size. Named in the
 * library's own registry, not zod's global one, so nothing else that renders these schemas
 * changes. (The library's `.openapi()` is not used: it is loaded as CommonJS and patches that
 * copy of zod, not the ES module one the schemas are made with.)
 */
const COMPONENTS: Record<string, z.ZodType> = { StudyConfig, StudyStatus, RoundSummary, Task: TaskDoc, EvaluationReport, UpdateReceipt: UpdateReceiptDoc, DataReport, EnrollRequest, EnrollResponse, NodeStatusReport, CreateEnrollmentToken, PolicyProfile, Checkpoint };
for (const [name, schema] of Object.entries(COMPONENTS)) zodToOpenAPIRegistry.add(schema, { _internal: { refId: name } });

/** One route of the app's route table: its method (upper case) and express path. */
export interface AppRoute {
  method: string;
  path: string;
}

type Layer = { route?: { path: unknown; methods: Record<string, boolean> } };

/**
 * Every route registered on the app, from express's own route table (routes are registered on
 * the app itself, app.ts): what the document must cover.
 */
export function appRoutes(app: Express): AppRoute[] {
  const stack = (app as unknown as { router: { stack: Layer[] } }).router.stack;
  return stack.flatMap((layer) => {
    const r = layer.route;
    if (!r || typeof r.path !== 'string') return [];
    const path = r.path;
    return Object.keys(r.methods).filter((m) => r.methods[m] && m !== '_all').map((m) => ({ method: m.toUpperCase(), path }));
  });
}

/** `/v1/studies/:studyId` -> `/v1/studies/{studyId}`. */
export const openApiPath = (expressPath: string) => expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/** The documentation of one route of the app, if it has any: its own entry, else a rule's. */
export const routeDoc = (route: AppRoute): RouteDoc | undefined => ROUTE_DOCS[`${route.method} ${route.path}`] ?? ruleFor(route.method, route.path);

const ERROR_CODES = 'The body names a stable `code` for scripts (VALIDATION_FAILED, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, RATE_LIMITED, ...), a `message` for people, the `field` at fault when there is one, and the `requestId`.';
/** The error responses, each once in components.responses; operations refer to them. */
const ERROR_RESPONSES = {
  BadRequest: 'Bad input: the field, flag or header at fault is named',
  Unauthenticated: 'No valid credentials (or a bad request signature)',
  Forbidden: "The caller's role (or region, or study) may not do this",
  RateLimited: 'Too many refused requests from this address (Retry-After says when to try again)',
  Error: 'Any other refusal (404, 409, 413, 415...) or an internal error (500, with the request id only)',
} as const;
const errorRef = (name: keyof typeof ERROR_RESPONSES) => ({ $ref: `#/components/responses/${name}` });

function registerErrorComponents(registry: OpenAPIRegistry) {
  // zod's own JSON Schema (2020-12, the dialect of OpenAPI 3.1): a component response takes JSON, not zod.
  // UpdateMeta too: it travels as JSON in a header, which a parameter's schema cannot describe.
  for (const [name, schema] of Object.entries({ ErrorBody, UpdateMeta })) {
    const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { target: 'draft-2020-12' });
    registry.registerComponent('schemas', name, json as Parameters<typeof registry.registerComponent<'schemas'>>[2]);
  }
  for (const [name, description] of Object.entries(ERROR_RESPONSES)) {
    registry.registerComponent('responses', name, { description: `${description}. ${ERROR_CODES}`, content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorBody' } } } });
  }
}

/** The request of an operation: path parameters (from ROUTE_PARAMS), query, headers, body. */
function requestOf(route: AppRoute, doc: RouteDoc): RouteConfig['request'] {
  const names = [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]);
  const params = names.length > 0 ? z.object(Object.fromEntries(names.map((n) => [n, ROUTE_PARAMS[n] ?? z.string()]))) : undefined;
  const roles = doc.roles === 'anyone' ? [] : doc.roles;
  // A node's requests are signed (protocols/crypto/request-signing.ts); fedmark-round only binds rounds.
  const signature = roles.includes('node')
    ? z.object(Object.fromEntries(SIGNATURE_HEADER_NAMES.map((h) => [h, (roles.length === 1 && h !== 'fedmark-round' ? z.string() : z.string().optional()).describe(`request signature (nodes${roles.length > 1 ? ' only' : ''})`)])))
    : undefined;
  const headers = signature && doc.headers ? signature.extend(doc.headers.shape) : (signature ?? doc.headers);
  const body = doc.body && { required: doc.body.required ?? true, description: doc.body.description, content: { [doc.body.type ?? 'application/json']: { schema: doc.body.schema } } };
  return { params, query: doc.query, headers, body };
}

/** One operation of the document. */
function operationOf(route: AppRoute, doc: RouteDoc): RouteConfig {
  const roles = doc.roles === 'anyone' ? 'anyone (no credentials)' : doc.roles.join(', ');
  const responses: RouteConfig['responses'] = {};
  for (const [status, r] of Object.entries(doc.responses)) {
    responses[status] = r.schema ? { description: r.description, content: { [r.type ?? 'application/json']: { schema: r.schema } } } : { description: r.description };
  }
  responses[400] = errorRef('BadRequest');
  if (doc.roles !== 'anyone') {
    responses[401] = errorRef('Unauthenticated');
    responses[403] = errorRef('Forbidden');
  }
  responses[429] = errorRef('RateLimited');
  responses.default = errorRef('Error');
  return {
    method: route.method.toLowerCase() as RouteConfig['method'],
    path: openApiPath(route.path),
    operationId: `${route.method.toLowerCase()} ${route.path}`.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : '')),
    tags: [doc.tag],
    summary: doc.summary,
    description: `${doc.description ? `${doc.description}\n\n` : ''}Roles: ${roles}.`,
    'x-fedmark-roles': doc.roles === 'anyone' ? [] : doc.roles,
    security: doc.roles === 'anyone' ? [] : [{ bearerAuth: [] }],
    request: requestOf(route, doc),
    responses,
  };
}

/**
 * The OpenAPI 3.1 document of `app`, generated from the zod schemas the routes parse with, for
 * every route of the app's route table that has documentation; `undocumented` lists the others
 * (`METHOD /path`), which the test refuses.
 *
 * @example
 *   const { document, undocumented } = buildOpenApiDocument(app);
 */
export function buildOpenApiDocument(app: Express): { document: ReturnType<OpenApiGeneratorV31['generateDocument']>; undocumented: string[] } {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: "People: an API token (POST /v1/tokens; the operator's FEDMARK_ADMIN_TOKEN). Nodes: the API key from enrollment, and every request signed with the node's key (fedmark-signature, -timestamp, -nonce, -key-fingerprint, -round headers).",
  });
  registerErrorComponents(registry);
  const undocumented: string[] = [];
  for (const route of appRoutes(app)) {
    const doc = routeDoc(route);
    if (!doc) undocumented.push(`${route.method} ${route.path}`);
    else registry.registerPath(operationOf(route, doc));
  }
  const document = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'fedmark coordinator', version: '1', description: 'The coordinator of a fedmark federation: studies, nodes, rounds, privacy, audit. Every error is `{ error: { code, message, field?, requestId? } }`.' },
  });
  return { document, undocumented };
}

/**
 * `GET /openapi.json` (no auth) and `GET /docs`, the API reference page rendered from it. Built on
 * first request, when every route is registered, then kept.
 */
export function registerOpenApiRoutes(app: Express): void {
  let built: { json: string; html: string } | undefined;
  const current = () => {
    if (!built) {
      const { document } = buildOpenApiDocument(app);
      built = { json: JSON.stringify(document), html: renderDocsPage(document) };
    }
    return built;
  };
  app.get('/openapi.json', (_req, res) => {
    res.type('application/json').send(current().json);
  });
  app.get('/docs', (_req, res) => {
    res.set({ 'content-security-policy': DOCS_CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' });
    res.type('text/html').send(current().html);
  });
}
