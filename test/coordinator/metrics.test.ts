import request from 'supertest';
import { expect, it } from 'vitest';
import { createCoordinatorMetrics } from '../../coordinator/http/metrics.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness } from './harness.ts';

function logregWeights(fill: number): WeightSet {
  return [
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(fill) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([fill]) },
  ];
}

/** One sample of a scrape: its metric name, labels and value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"`;
const SAMPLE_LINE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (NaN|[+-]?Inf|[-+]?[0-9.]+(?:e[-+]?[0-9]+)?)(?: -?[0-9]+)?$`, 'i');
const FAMILY_SUFFIXES = ['_bucket', '_sum', '_count', '_total', ''];

/**
 * The Prometheus text exposition format (0.0.4), checked line by line: every line a comment
 * (`# HELP name text`, `# TYPE name counter|gauge|histogram|summary|untyped`) or a sample
 * `name{label="value",...} number` (NaN and Inf in any case, as Prometheus reads them: prom-client
 * writes `Nan`), every sample of a family that has a TYPE, no family typed
 * twice. Throws naming the line at fault; returns the samples.
 */
function parsePrometheusText(text: string): Sample[] {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  text.split('\n').forEach((line, i) => {
    const at = `line ${i + 1} ("${line.slice(0, 80)}")`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m || !new RegExp(`^${NAME}$`).test(m[2])) throw new Error(`${at}: not a HELP or TYPE comment`);
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3] ?? '')) throw new Error(`${at}: unknown type`);
        if (types.has(m[2])) throw new Error(`${at}: ${m[2]} typed twice`);
        types.set(m[2], m[3]!);
      }
      return;
    }
    const m = SAMPLE_LINE.exec(line);
    if (!m) throw new Error(`${at}: not a sample line`);
    const name = m[1];
    const family = FAMILY_SUFFIXES.map((s) => (s && name.endsWith(s) ? name.slice(0, -s.length) : name)).find((f) => types.has(f));
    if (!family) throw new Error(`${at}: sample of ${name} without a TYPE`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(new RegExp(LABEL, 'g'))) labels[l[1]] = l[2];
    const raw = m[m.length - 1].toLowerCase();
    samples.push({ name, labels, value: raw === 'nan' ? Number.NaN : raw.endsWith('inf') ? (raw.startsWith('-') ? -Infinity : Infinity) : Number(raw) });
  });
  if (types.size === 0) throw new Error('no metric families');
  return samples;
}

/** The sum of every sample of `name` whose labels include `labels`. */
function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

async function scrape(h: Harness): Promise<Sample[]> {
  const res = await h.admin('get', '/metrics');
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(res.text);
}

/** One whole round of a one-round study: two nodes train, the model is aggregated, both evaluate. */
async function runOneRound(h: Harness) {
  const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
  const a = await h.enroll(studyId, 'a');
  const b = await h.enroll(studyId, 'b');
  await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
  const model = await h.nodeGet(a, `/v1/studies/${studyId}/models/0`);
  expect(model.status).toBe(200);
  expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), defaultMeta(30))).status).toBe(201);
  expect((await h.submit(b, studyId, 1, encodeWeights(logregWeights(2)), defaultMeta(10))).status).toBe(201);
  await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds[0]?.phase === 'evaluate' ? true : undefined));
  expect((await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 1, 1], [1, 1, 0]), `${studyId}/1`)).status).toBe(201);
  expect((await h.nodePost(b, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([0, 0, 1], [1, 0, 0]), `${studyId}/1`)).status).toBe(201);
  await h.until(async () => ((await h.admin('get', `/v1/studies/${studyId}`)).body.state === 'completed' ? true : undefined));
  return { studyId, a, b, modelBytes: (model.body as Buffer).length };
}

it('the text parser refuses what is not Prometheus text (the check below is a real one)', () => {
  expect(() => parsePrometheusText('# TYPE x counter\nx 1\n')).not.toThrow();
  expect(() => parsePrometheusText('# TYPE x counter\nx{a="1"} one\n')).toThrow(/line 2/);
  expect(() => parsePrometheusText('# TYPE x counter\ny 1\n')).toThrow(/without a TYPE/);
  expect(() => parsePrometheusText('{"x": 1}')).toThrow(/line 1/);
});

it('each coordinator has its own registry: two sets of metrics in one process do not collide', async () => {
  const one = createCoordinatorMetrics();
  const two = createCoordinatorMetrics();
  one.onRound({ kind: 'opened', studyId: 's', round: 1 });
  expect(parsePrometheusText(await one.registry.metrics()).find((s) => s.name === 'fedmark_rounds_opened_total')?.value).toBe(1);
  expect(parsePrometheusText(await two.registry.metrics()).find((s) => s.name === 'fedmark_rounds_opened_total')?.value).toBe(0);
});

describeOnEachBackend('GET /metrics', (run) => {
  run('needs an admin or auditor token: anonymous 401, analyst 403, auditor 200', async (h) => {
    expect((await request(h.app).get('/metrics')).status).toBe(401);
    const auditor = await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'prometheus' });
    const analyst = await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'eu team', region: 'eu' });
    expect((await request(h.app).get('/metrics').set('authorization', `Bearer ${analyst.body.token}`)).status).toBe(403);
    const scraped = await request(h.app).get('/metrics').set('authorization', `Bearer ${auditor.body.token}`);
    expect(scraped.status).toBe(200);
    const samples = parsePrometheusText(scraped.text);
    // Process metrics (collectDefaultMetrics) are on the coordinator's own registry.
    expect(total(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  run('counters move after a real round: rounds, updates, bytes, phase durations, queries, requests', async (h) => {
    const before = await scrape(h);
    const { modelBytes } = await runOneRound(h);
    const after = await scrape(h);
    const moved = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    expect(moved('fedmark_rounds_total', { outcome: 'completed' })).toBe(1);
    expect(moved('fedmark_rounds_total', { outcome: 'failed' })).toBe(0);
    expect(moved('fedmark_rounds_opened_total')).toBe(1);
    expect(moved('fedmark_studies_ended_total', { outcome: 'completed' })).toBe(1);
    expect(moved('fedmark_updates_received_total')).toBe(2);
    expect(moved('fedmark_evaluations_received_total')).toBe(2);
    // Two logreg updates of 8 float32 weights each, plus the codec's header.
    expect(moved('fedmark_update_bytes_received_total')).toBeGreaterThan(2 * 8 * 4);
    for (const phase of ['fit', 'aggregate', 'evaluate']) expect(moved('fedmark_round_phase_duration_seconds_count', { phase })).toBe(1);
    expect(moved('fedmark_round_phase_duration_seconds_sum', { phase: 'fit' })).toBeGreaterThan(0);
    const updateRoute = { route: '/v1/studies/:studyId/rounds/:round/updates' };
    expect(moved('fedmark_http_requests_total', { ...updateRoute, method: 'POST', status: '201' })).toBe(2);
    // The sealed bodies are larger than the weights they carry: encrypted, signed, armored.
    expect(moved('fedmark_http_received_bytes_total', updateRoute)).toBeGreaterThan(moved('fedmark_update_bytes_received_total'));
    expect(moved('fedmark_http_sent_bytes_total', { route: '/v1/studies/:studyId/models/:version' })).toBeGreaterThan(modelBytes);
    // Wire bytes, not bodies: a GET without a body still reads its request line and headers.
    expect(moved('fedmark_http_received_bytes_total', { route: '/v1/studies/:studyId' })).toBeGreaterThan(100);
    expect(moved('fedmark_db_query_duration_seconds_count', { operation: 'insert', outcome: 'ok' })).toBeGreaterThan(0);
    expect(moved('fedmark_db_query_duration_seconds_count', { operation: 'select', outcome: 'ok' })).toBeGreaterThan(0);
    // The database gauges agree: one more completed study and round.
    expect(moved('fedmark_studies', { state: 'completed' })).toBe(1);
    expect(moved('fedmark_rounds', { phase: 'completed' })).toBe(1);
  });

  run("an operator's stop, which bypasses the round service, shows in the database gauges", async (h) => {
    const studyId = await h.createStudy(tinyStudy({ minNodesToStart: 50 }));
    const before = await scrape(h);
    expect((await h.admin('post', `/v1/studies/${studyId}/stop`).send({ reason: 'metrics test' })).status).toBe(200);
    const after = await scrape(h);
    expect(total(after, 'fedmark_studies', { state: 'stopped' }) - total(before, 'fedmark_studies', { state: 'stopped' })).toBe(1);
    expect(total(after, 'fedmark_studies', { state: 'running' }) - total(before, 'fedmark_studies', { state: 'running' })).toBe(-1);
  });

  run('refusals are counted by code, a refused update also as a refused update', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
    const a = await h.enroll(studyId, 'a');
    await h.enroll(studyId, 'b');
    await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
    const before = await scrape(h);
    expect((await request(h.app).get('/v1/studies')).status).toBe(401);
    expect((await h.submit(a, studyId, 1, encodeWeights(logregWeights(1)), { ...defaultMeta(), numExamples: -3 })).status).toBe(400);
    expect((await h.admin('get', '/v1/no-such-route')).status).toBe(404);
    const after = await scrape(h);
    const moved = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    expect(moved('fedmark_refusals_total', { code: 'UNAUTHENTICATED', status: '401' })).toBe(1);
    expect(moved('fedmark_refusals_total', { code: 'VALIDATION_FAILED', status: '400' })).toBe(1);
    expect(moved('fedmark_updates_refused_total', { code: 'VALIDATION_FAILED' })).toBe(1);
    expect(moved('fedmark_updates_received_total')).toBe(0);
    // A path that matched no route is labelled as such, never by its raw path.
    expect(moved('fedmark_http_requests_total', { route: 'unmatched', status: '404' })).toBe(1);
    expect(after.some((s) => s.labels.route === '/v1/no-such-route')).toBe(false);
  });
});
