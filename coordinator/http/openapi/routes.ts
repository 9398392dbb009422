import { z } from 'zod';
import { CreateEnrollmentToken, EnrollRequest, EnrollResponse, EvaluationReport, NodeStatusReport, StudyConfig, StudyStatus, UPDATE_META_HEADER } from '../../../protocols/messages.ts';
import { PolicyProfile } from '../../../protocols/policy/jurisdiction-policy.ts';
import { CreateApiToken } from '../../auth/router.ts';
import { ReportQuery } from '../../privacy/router.ts';
import { RegionalModelQuery } from '../../regions/router.ts';
import { TaskQuery } from '../../rounds/router.ts';
import * as S from './schemas.ts';

/** Who may call a route: its roles (bearer tokens; `node`: a node's API key and a signed request). */
export type Role = 'admin' | 'auditor' | 'analyst' | 'node';

/** One response of a route: a JSON schema, a binary or text body of `type`, or no body. */
export interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
  /** Media type of a non-JSON body (models: application/octet-stream; pages: text/html). */
  type?: string;
}

/** Everything the API reference says about one route, beside what the path itself gives. */
export interface RouteDoc {
  tag: string;
  summary: string;
  description?: string;
  /** `anyone`: no credentials at all. */
  roles: 'anyone' | Role[];
  query?: z.ZodObject;
  headers?: z.ZodObject;
  body?: { schema: z.ZodType; type?: string; required?: boolean; description?: string };
  responses: Record<number, ResponseDoc>;
}

const json = (description: string, schema: z.ZodType): ResponseDoc => ({ description, schema });
const empty = (description: string): ResponseDoc => ({ description });
const binary = (description: string): ResponseDoc => ({ description, type: 'application/octet-stream', schema: S.Binary });
const jsonBody = (schema: z.ZodType, required = true) => ({ schema, required });
const MODEL_HEADERS = 'Headers: fedmark-sha256 (hash of the bytes), fedmark-model-version, fedmark-model-signature and fedmark-signer (the coordinator\'s detached OpenPGP signature, base64, and its key fingerprint). A study\'s model (not a regional one) also carries fedmark-model-statement and fedmark-model-statement-signature: the signed statement (canonical JSON, base64) binding study id, version, round, the model\'s sha256 and the config\'s sha256, and the armored signature over it (base64).';

/**
 * The API reference, one entry per route of the app, keyed `METHOD /express/path` exactly as the
 * router registers it. Path parameters are not listed here: they come from ROUTE_PARAMS
 * (http/validate.ts), the validators that really run. test/coordinator/openapi.test.ts fails
 * naming any route of the app's route table that has no entry here, and any entry that matches
 * no route.
 */
export const ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /healthz': { tag: 'service', summary: 'Liveness', roles: 'anyone', responses: { 200: json('the coordinator answers', S.Health) } },
  'GET /metrics': { tag: 'service', summary: 'Prometheus metrics (text exposition format 0.0.4)', roles: ['admin', 'auditor'], responses: { 200: { description: 'the metrics', type: 'text/plain', schema: z.string() } } },
  'GET /openapi.json': { tag: 'service', summary: 'This document (OpenAPI 3.1)', roles: 'anyone', responses: { 200: json('the OpenAPI document', z.looseObject({ openapi: z.string() })) } },
  'GET /docs': { tag: 'service', summary: 'The API reference page, rendered from this document', roles: 'anyone', responses: { 200: { description: 'an HTML page', type: 'text/html', schema: z.string() } } },

  'POST /v1/tokens': { tag: 'tokens', summary: "Issue a person's API token", roles: ['admin'], body: jsonBody(CreateApiToken), responses: { 201: json('issued (audited)', S.IssuedApiToken) } },
  'GET /v1/tokens': { tag: 'tokens', summary: 'List API tokens', roles: ['admin'], responses: { 200: json('every token, never a secret', S.ApiTokenList) } },
  'DELETE /v1/tokens/:id': { tag: 'tokens', summary: 'Revoke an API token', roles: ['admin'], responses: { 204: empty('revoked (audited)') } },

  'GET /v1/policies': { tag: 'policies', summary: 'Every version of every jurisdiction policy profile', roles: ['admin', 'auditor'], responses: { 200: json('the profiles', S.PolicyList) } },
  'POST /v1/policies': { tag: 'policies', summary: 'Publish a policy change as a new version', roles: ['admin'], body: jsonBody(S.NewPolicy), responses: { 201: json('the new version', PolicyProfile) } },

  'POST /v1/enrollment-tokens': { tag: 'nodes', summary: 'Issue a one-time enrollment token for a node', roles: ['admin'], body: jsonBody(CreateEnrollmentToken), responses: { 201: json('issued (audited)', S.EnrollmentTokenIssued) } },
  'GET /v1/enrollment-tokens': { tag: 'nodes', summary: 'List enrollment tokens', roles: ['admin', 'auditor'], query: S.ListQuery, responses: { 200: json('the tokens (hash prefixes only)', S.EnrollmentTokenList) } },
  'POST /v1/nodes/enroll': { tag: 'nodes', summary: "Exchange an enrollment token for a node id and API key, pinning the node's public key", description: 'No bearer token: the enrollment token in the body is the credential.', roles: 'anyone', body: jsonBody(EnrollRequest), responses: { 201: json('enrolled', EnrollResponse) } },
  'POST /v1/nodes/:nodeId/revoke': { tag: 'nodes', summary: 'Revoke a node at once', roles: ['admin'], body: jsonBody(S.RevokeNode, false), responses: { 200: json('revoked (audited)', S.NodeRevoked) } },
  'GET /v1/nodes': { tag: 'nodes', summary: 'List nodes (analysts: their region only)', roles: ['admin', 'auditor', 'analyst'], query: S.ListQuery, responses: { 200: json('the nodes', S.NodeList) } },
  'GET /v1/nodes/me': { tag: 'node self', summary: "The calling node's own record", roles: ['node'], responses: { 200: json('its record', S.NodeSelf) } },
  'POST /v1/nodes/me/key': { tag: 'node self', summary: "Rotate the node's key (signed with the old one)", roles: ['node'], body: jsonBody(S.RotateNodeKey), responses: { 200: json('rotated (audited)', S.NodeKeyRotated) } },
  'POST /v1/nodes/me/withdraw': { tag: 'node self', summary: 'Leave the study for good', roles: ['node'], body: jsonBody(S.WithdrawNode, false), responses: { 200: json('withdrawn (audited)', S.NodeWithdrawn) } },
  'POST /v1/nodes/me/status': { tag: 'node self', summary: "Report the node's state (ready, data-error, ...) and data counts", roles: ['node'], body: jsonBody(NodeStatusReport), responses: { 204: empty('recorded') } },
  'GET /v1/nodes/me/study': { tag: 'node self', summary: "The node's study: state and configuration, release list included", roles: ['node'], responses: { 200: json('its study', S.NodeStudy) } },
  'GET /v1/nodes/me/policy': { tag: 'node self', summary: "The policy profile in force for the node's jurisdiction", roles: ['node'], responses: { 200: json('the profile', S.NodePolicy) } },

  'POST /v1/studies': { tag: 'studies', summary: 'Create a study', roles: ['admin'], body: jsonBody(StudyConfig), responses: { 201: json('created (audited)', S.StudyCreated) } },
  'POST /v1/studies/plan': { tag: 'studies', summary: 'Check a study configuration as creation would, writing nothing (dry run)', roles: ['admin'], body: jsonBody(StudyConfig), responses: { 200: json('the plan', S.StudyPlan) } },
  'GET /v1/studies': { tag: 'studies', summary: 'List the studies the caller may see', roles: ['admin', 'auditor', 'analyst'], responses: { 200: json('the studies', S.StudyList) } },
  'GET /v1/studies/:studyId': { tag: 'studies', summary: "A study's status; ?wait=S&seen=N long-polls for its next change, ?fromRound=K lists only rounds K and later", roles: ['admin', 'auditor', 'analyst'], query: S.WatchQuery, responses: { 200: json("the status, as the caller's role may see it", StudyStatus) } },
  'POST /v1/studies/:studyId/stop': { tag: 'studies', summary: 'Stop a study early (an open round is closed)', roles: ['admin'], body: jsonBody(S.StopStudy, false), responses: { 200: json('stopped (audited)', S.StudyStopped) } },
  'GET /v1/studies/:studyId/model': { tag: 'models', summary: 'The latest global model (binary codec bytes)', description: MODEL_HEADERS, roles: ['admin', 'analyst', 'node'], responses: { 200: binary('the model') } },
  'GET /v1/studies/:studyId/models/:version': { tag: 'models', summary: 'One version of the global model (binary codec bytes)', description: MODEL_HEADERS, roles: ['admin', 'analyst', 'node'], responses: { 200: binary('the model') } },
  'GET /v1/studies/:studyId/regions/:region': { tag: 'regions', summary: "A region's metrics (analysts: their own region)", roles: ['admin', 'auditor', 'analyst'], responses: { 200: json('the regional report', S.RegionalReport) } },
  'GET /v1/studies/:studyId/regions/:region/model': { tag: 'regions', summary: "A region's model (binary codec bytes)", description: MODEL_HEADERS, roles: ['admin', 'analyst'], query: RegionalModelQuery, responses: { 200: binary('the regional model') } },
  'GET /v1/studies/:studyId/privacy': { tag: 'privacy', summary: "A study's privacy report; ?reader=all: every reader's view (admins, auditors)", roles: ['admin', 'auditor', 'analyst', 'node'], query: ReportQuery, responses: { 200: json('the report', S.PrivacyReport) } },
  'GET /v1/studies/:studyId/nodes/:nodeId/privacy': { tag: 'privacy', summary: "One node's privacy report (a node: its own only)", roles: ['admin', 'auditor', 'node'], responses: { 200: json('the report', S.NodePrivacyReport) } },

  'POST /v1/studies/:studyId/rounds': { tag: 'rounds', summary: 'Open the next round now', roles: ['admin'], responses: { 201: json('opened', S.RoundOpened) } },
  'GET /v1/studies/:studyId/rounds/:round': { tag: 'rounds', summary: "A round, as the caller's role may see it (a node: rounds it took part in)", roles: ['admin', 'auditor', 'analyst', 'node'], responses: { 200: json('the round', S.RoundView) } },
  'GET /v1/studies/:studyId/rounds/:round/updates/:nodeId': { tag: 'rounds', summary: "One node's submission in a round (never its weights)", roles: ['admin', 'auditor', 'analyst', 'node'], responses: { 200: json('the submission', S.UpdateView) } },
  'GET /v1/tasks/next': { tag: 'rounds', summary: "The node's next task; ?wait=S long-polls", roles: ['node'], query: TaskQuery, responses: { 200: json('a fit or evaluate task', S.TaskDoc), 204: empty('no task within the wait') } },
  'POST /v1/studies/:studyId/rounds/:round/updates': {
    tag: 'rounds',
    summary: "Submit the node's update for a round",
    description: `The body is the weights (binary codec) sealed for the coordinator: an OpenPGP message encrypted to its key and signed by the node's, streamed, at most the study's model size. The \`${UPDATE_META_HEADER}\` header carries the metadata as JSON (UpdateMeta); the request signature's round binding includes its SHA-256. A retry of the same bytes gets the original receipt (200). With content type \`application/vnd.fedmark.update+evaluation\` (a fit task's \`evaluate.withUpdate\`), the body is a four-octet big-endian length n, n octets of JSON \`{ round, report }\` (the previous round's EvaluationReport) and then the sealed update: one signed request for both: the sealed update is opened first (one that does not open refuses the request whole), then the evaluation is judged as its own route would, and the receipt's \`evaluation\` says whether it was stored or refused (status, code, message), the update being judged on its own. With \`?wait=S\` (and \`config\`, as GET /v1/tasks/next takes them), once the update is accepted the answer waits up to S seconds for the node's next task and carries it as the receipt's \`next\` (left out when none came within the wait): a round then costs the node one signed request, not an update and a task poll.`,
    roles: ['node'],
    query: TaskQuery,
    headers: z.object({ [UPDATE_META_HEADER]: z.string().describe('the update metadata: JSON matching #/components/schemas/UpdateMeta (numExamples, loss, steps, trainSeconds, data, dpSgd), each field a release the study must allow') }),
    body: { schema: S.Binary, type: 'application/pgp-encrypted', required: true, description: 'the sealed update (binary)' },
    responses: { 201: json('accepted', S.UpdateReceiptDoc), 200: json('the same update again: its original receipt', S.UpdateReceiptDoc) },
  },
  'POST /v1/studies/:studyId/rounds/:round/evaluations': { tag: 'rounds', summary: "Submit the node's evaluation of a round's model", roles: ['node'], body: jsonBody(EvaluationReport), responses: { 201: json('stored', S.EvaluationStored), 200: json('already stored, or no longer needed', S.EvaluationStored) } },

  'GET /v1/coordinator/key': { tag: 'coordinator', summary: "The coordinator's public key and its rotation announcements", roles: 'anyone', responses: { 200: json('the key', S.CoordinatorKeyInfo) } },
  'POST /v1/coordinator/key/rotate': { tag: 'coordinator', summary: "Rotate the coordinator's key", roles: ['admin'], responses: { 201: json('rotated (audited): the announcement is signed by the old key', S.KeyRotated) } },
  'GET /v1/audit/export': { tag: 'audit', summary: 'Export the audit log (a fresh checkpoint is signed first)', roles: ['admin', 'auditor'], responses: { 200: json('the export', S.AuditExport) } },

  'GET /v1/dashboard/studies': { tag: 'dashboard', summary: "The dashboard's study list", roles: ['admin', 'auditor', 'analyst'], responses: { 200: json('the studies', S.DashboardStudies) } },
  'GET /v1/dashboard/audit': { tag: 'dashboard', summary: "The audit chain's status, without signing a checkpoint", roles: ['admin', 'auditor'], responses: { 200: json('the status', S.DashboardAudit) } },
};

/**
 * Routes documented by rule rather than one by one: the dashboard's static files (one route per
 * file, read from its folder at start-up, so the list follows the files).
 */
export function ruleFor(method: string, path: string): RouteDoc | undefined {
  if (method !== 'GET' || !(path === '/' || /^\/dashboard\/[A-Za-z0-9._/-]+\.(html|js|css)$/.test(path))) return undefined;
  const type = path === '/' || path.endsWith('.html') ? 'text/html' : path.endsWith('.js') ? 'text/javascript' : 'text/css';
  return { tag: 'dashboard', summary: `Dashboard file ${path === '/' ? 'index.html' : path.slice('/dashboard/'.length)}`, description: 'A static file of the dashboard (no credentials: the pages call the API with the token the user gives them).', roles: 'anyone', responses: { 200: { description: 'the file', type, schema: z.string() } } };
}
