import request from 'supertest';
import { expect } from 'vitest';
import { verifyArtifact } from '../../protocols/crypto/index.ts';
import { StudyConfig, type StudyConfigInput } from '../../protocols/messages.ts';
import { buildAuditReport, renderAuditReportMarkdown } from '../../protocols/audit/audit-report.ts';
import { encodeWeights, sha256Hex } from '../../protocols/weights-codec.ts';
import { bytesOrJson, defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness } from './harness.ts';

/**
 * Warm start (issue 9 section 1, quarterly recalibration): `initFrom: { study, version? }` makes
 * a new study's round-0 model another study's published model, byte for byte, re-signed by the
 * coordinator; refused (naming initFrom) for another architecture, an unknown source, a caller
 * who may not read the source, or weights outside the new study's bounds. On PGlite and
 * PostgreSQL, in process.
 */

const full = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).map((_, i) => v + i / 100) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

async function phaseOf(h: Harness, studyId: string, round: number) {
  return (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body.phase as string | undefined;
}

/** A finished one-round study: version 1 is the mean of two nodes' weights (so unlike any seeded model). */
async function sourceStudy(h: Harness, name: string): Promise<string> {
  const id = await h.createStudy(tinyStudy({ name, rounds: 1, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600 }));
  const a = await h.enroll(id, `${name}-a`);
  const b = await h.enroll(id, `${name}-b`);
  await h.until(async () => ((await phaseOf(h, id, 1)) === 'fit' ? true : undefined));
  expect((await h.submit(a, id, 1, full(0.3), defaultMeta(10))).status).toBe(201);
  expect((await h.submit(b, id, 1, full(0.5), defaultMeta(10))).status).toBe(201);
  await h.until(async () => ((await phaseOf(h, id, 1)) === 'evaluate' ? true : undefined));
  for (const n of [a, b]) expect((await h.nodePost(n, `/v1/studies/${id}/rounds/1/evaluations`, evaluation([1, 4], [4, 1]), `${id}/1`)).status).toBe(201);
  await h.until(async () => ((await h.admin('get', `/v1/studies/${id}`)).body.latestModelVersion === 1 ? true : undefined));
  return id;
}

async function modelBytes(h: Harness, studyId: string, version: number) {
  const res = await h.admin('get', `/v1/studies/${studyId}/models/${version}`).buffer(true).parse(bytesOrJson);
  expect(res.status).toBe(200);
  return { bytes: new Uint8Array(res.body as Buffer), signature: Buffer.from(String(res.headers['fedmark-model-signature']), 'base64').toString('utf8'), sha256: String(res.headers['fedmark-sha256']) };
}

const warm = (source: string, extra: Partial<StudyConfigInput> = {}, initFrom: Record<string, unknown> = {}) => tinyStudy({ name: 'recalibration', seed: 7, ...extra, initFrom: { study: source, ...initFrom } as StudyConfigInput['initFrom'] });

describeOnEachBackend('warm start (initFrom)', (run) => {
  let source = '';
  // Each test can run alone (-t): the source study is made by the first that needs it.
  const ensureSource = async (h: Harness) => (source ||= await sourceStudy(h, 'q3'));

  run('a study created with initFrom serves version 0 byte-identical to the source model, signed by the coordinator; config, plan, audit report and response name the source', async (h) => {
    await ensureSource(h);
    const v1 = await modelBytes(h, source, 1);
    const v0 = await modelBytes(h, source, 0);
    expect(v1.sha256).not.toBe(v0.sha256);

    // The plan says which model creation would start from, and writes nothing.
    const plan = await h.admin('post', '/v1/studies/plan').send(warm(source));
    expect(plan.status).toBe(200);
    expect(plan.body.initialModel).toEqual({ from: 'study', study: source, version: 1, sha256: v1.sha256 });
    const seededPlan = await h.admin('post', '/v1/studies/plan').send(tinyStudy({ seed: 7 }));
    expect(seededPlan.body.initialModel).toMatchObject({ from: 'seed', seed: 7 });

    const created = await h.admin('post', '/v1/studies').send(warm(source));
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ modelSha256: v1.sha256, initializedFrom: { study: source, version: 1, sha256: v1.sha256 } });
    const id = created.body.id as string;
    const round0 = await modelBytes(h, id, 0);
    expect(Buffer.from(round0.bytes).equals(Buffer.from(v1.bytes))).toBe(true);
    expect(round0.sha256).toBe(v1.sha256);
    const key = (await request(h.app).get('/v1/coordinator/key')).body as { publicKey: string };
    expect(await verifyArtifact(round0.bytes, round0.signature, key.publicKey)).toBe(true);
    // The seeded model of this config (seed 7) would be something else: the copy is the warm start, not a coincidence.
    expect(seededPlan.body.initialModel.sha256).not.toBe(v1.sha256);

    // The stored config records the resolved version and hash (what the signed model statement's config hash covers).
    const status = (await h.admin('get', `/v1/studies/${id}`)).body;
    expect(status.config.initFrom).toEqual({ study: source, version: 1, sha256: v1.sha256 });
    expect(StudyConfig.parse(status.config).initFrom?.sha256).toBe(v1.sha256);

    // The audit entry of the creation names the source; the compliance report shows it.
    const audit = await h.built.db.selectFrom('audit_log').select(['data']).where('study_id', '=', id).where('kind', '=', 'study.created').executeTakeFirstOrThrow();
    const data = typeof audit.data === 'string' ? JSON.parse(audit.data) : audit.data;
    expect(data.initializedFrom).toEqual({ study: source, version: 1, sha256: v1.sha256 });
    const entries = (await h.admin('get', '/v1/audit/export')).body.entries;
    const report = buildAuditReport(entries, { studyId: id });
    expect(report.initializedFrom).toEqual({ study: source, version: 1, sha256: v1.sha256 });
    expect(renderAuditReportMarkdown(report, { verification: 'test' })).toContain(`Round-0 model: initialized from study ${source.replace(/_/g, '\\_')} version 1 (sha256 ${v1.sha256})`);
    expect(buildAuditReport(entries, { studyId: source }).initializedFrom).toBeNull();

    // An explicit older version and a matching pin are honoured.
    const older = await h.admin('post', '/v1/studies').send(warm(source, {}, { version: 0, sha256: v0.sha256 }));
    expect(older.status).toBe(201);
    expect(older.body.modelSha256).toBe(v0.sha256);
  });

  run('a model of another architecture is refused with a 400 naming initFrom and the first tensor that differs; so is another task kind', async (h) => {
    await ensureSource(h);
    const mlp = await h.admin('post', '/v1/studies').send(warm(source, { model: { kind: 'mlp', hidden: [4] } }));
    expect(mlp.status).toBe(400);
    expect(mlp.body.error.field).toBe('body.initFrom');
    expect(mlp.body.error.message).toMatch(/^initFrom: the model of study \S+ version 1 does not fit this study \(binary, model mlp\): tensor "dense_0\/kernel": expected shape \[7,4\], got \[7,1\]/);

    const wider = tinyStudy().features;
    wider.features = [...wider.features, { name: 'd', kind: 'numeric', mean: 0, std: 1, fill: 0 }];
    const width = await h.admin('post', '/v1/studies').send(warm(source, { features: wider }));
    expect(width.status).toBe(400);
    expect(width.body.error).toMatchObject({ field: 'body.initFrom' });
    expect(width.body.error.message).toMatch(/tensor "dense_0\/kernel": expected shape \[8,1\], got \[7,1\]/);
    // ...also in the plan: the dry run refuses what creation would.
    expect((await h.admin('post', '/v1/studies/plan').send(warm(source, { features: wider }))).status).toBe(400);

    const regression = await h.admin('post', '/v1/studies').send(warm(source, { task: { kind: 'regression' }, features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: 0, scale: 1 } } }));
    expect(regression.status).toBe(400);
    expect(regression.body.error.field).toBe('body.initFrom');
    expect(regression.body.error.message).toMatch(/is a binary model and this study is regression/);

    // Same width, another feature list: allowed (the operator may mean it), with a warning.
    const renamed = tinyStudy().features;
    renamed.features = renamed.features.map((f) => (f.name === 'a' ? { ...f, name: 'a2' } : f));
    const look = await h.admin('post', '/v1/studies').send(warm(source, { features: renamed }));
    expect(look.status).toBe(201);
    expect(look.body.warnings.join('\n')).toMatch(/initFrom: study \S+'s features differ from this study's/);
  });

  run('an unknown study or version, a wrong pinned sha256 and weights outside the new bounds are refused naming the field', async (h) => {
    await ensureSource(h);
    const before = (await h.admin('get', '/v1/studies')).body.studies.length;
    const unknown = await h.admin('post', '/v1/studies').send(warm('study_nope'));
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({ code: 'NOT_FOUND', field: 'body.initFrom.study' });
    expect(unknown.body.error.message).toBe('initFrom.study: study study_nope does not exist');
    const version = await h.admin('post', '/v1/studies').send(warm(source, {}, { version: 9 }));
    expect(version.status).toBe(404);
    expect(version.body.error).toMatchObject({ field: 'body.initFrom.version', message: `initFrom.version: study ${source} has no model version 9 (its latest is 1)` });
    const pin = await h.admin('post', '/v1/studies').send(warm(source, {}, { sha256: 'f'.repeat(64) }));
    expect(pin.status).toBe(400);
    expect(pin.body.error.field).toBe('body.initFrom.sha256');
    // Version 1's weights are 0.4 + i/100: over a bound of 0.41.
    const bounded = await h.admin('post', '/v1/studies').send(warm(source, { bounds: { maxAbsWeight: 0.41 } }));
    expect(bounded.status).toBe(400);
    expect(bounded.body.error.field).toBe('body.initFrom');
    expect(bounded.body.error.message).toMatch(/outside this study's bounds\.maxAbsWeight 0\.41: tensor "dense_0\/kernel" has \|w\| = 4\.200e-1 > 0\.41 at flat index 2/);
    const bad = await h.admin('post', '/v1/studies').send({ ...warm(source), initFrom: { study: source, version: -1 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toMatch(/^body\.initFrom\.version/);
    expect((await h.admin('get', '/v1/studies')).body.studies.length).toBe(before);
  });

  run('a stored source model with a non-finite weight (even for a study without bounds) or bytes that no longer match its hash is refused with a 409', async (h) => {
    await ensureSource(h);
    // The codec never writes NaN: the value at flat index 2 (0.92) is patched in the stored bytes.
    const nan = full(0.9);
    const at = Buffer.from(nan).indexOf(Buffer.from(new Uint8Array(new Float32Array([0.92]).buffer)));
    nan.set(new Uint8Array(new Float32Array([NaN]).buffer), at);
    // Written as later versions straight into the database (no round would publish them).
    await h.built.db.insertInto('models').values({ study_id: source, version: 2, weights: nan, sha256: sha256Hex(nan), bytes: nan.length, signature: null, signer_fingerprint: null }).execute();
    const refused = await h.admin('post', '/v1/studies').send(warm(source, { bounds: null }, { version: 2 }));
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'INIT_FROM_CORRUPT', field: 'body.initFrom' });
    expect(refused.body.error.message).toMatch(/cannot be decoded: .*tensor "dense_0\/kernel" has NaN at flat index 2/);
    const edited = full(0.9);
    await h.built.db.insertInto('models').values({ study_id: source, version: 3, weights: edited, sha256: 'e'.repeat(64), bytes: edited.length, signature: null, signer_fingerprint: null }).execute();
    const corrupt = await h.admin('post', '/v1/studies').send(warm(source, {}, { version: 3 }));
    expect(corrupt.status).toBe(409);
    expect(corrupt.body.error).toMatchObject({ code: 'INIT_FROM_CORRUPT', field: 'body.initFrom' });
    expect(corrupt.body.error.message).toMatch(/hashes to [0-9a-f]{64}, but the coordinator recorded e{64}/);
  });

  run("only a caller who may read the source's weights can warm-start from it: an analyst of a region without a node there (or an auditor) is refused, one of the source's region is not", async (h) => {
    await ensureSource(h);
    const config = StudyConfig.parse(warm(source));
    const outsider = h.built.studies.createStudy(config, 'analyst:tok_us', { role: 'analyst', id: 'tok_us', region: 'us' });
    await expect(outsider).rejects.toMatchObject({ status: 403, field: 'body.initFrom.study' });
    await expect(outsider).rejects.toThrow(/^initFrom.study: region us has no node in study/);
    // An unknown study is the same 403 for the outsider: no existence oracle.
    await expect(h.built.studies.createStudy(StudyConfig.parse(warm('study_nope')), 'analyst:tok_us', { role: 'analyst', id: 'tok_us', region: 'us' })).rejects.toMatchObject({ status: 403 });
    await expect(h.built.studies.planStudy(config, { role: 'auditor', id: 'tok_aud' })).rejects.toMatchObject({ status: 403, field: 'body.initFrom.study' });
    // The source's nodes are in region eu: that region's analyst may read its models.
    const insider = await h.built.studies.createStudy(config, 'analyst:tok_eu', { role: 'analyst', id: 'tok_eu', region: 'eu' });
    expect(insider.initializedFrom?.study).toBe(source);
    // Over HTTP, study creation is the admin's alone.
    const analyst = (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: 'us-team', region: 'us' })).body.token as string;
    expect((await request(h.app).post('/v1/studies').set('authorization', `Bearer ${analyst}`).send(warm(source))).status).toBe(403);
  });
});
