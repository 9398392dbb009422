import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { backendOrSkip } from '../helpers/databases.ts';
import { inProcessCoordinator, tinyStudy } from './harness.ts';
import { DEFAULT_POLICIES, PolicyProfile, stricterOf } from '../../protocols/policy/jurisdiction-policy.ts';

const dp = { accountant: 'rdp' as const, delta: 1e-5, budgetEpsilon: 5, central: { noiseMultiplier: 8, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 } };

/** Jurisdiction policies: checked against every participant before a round starts. */
describe('jurisdiction policies, withdrawal', () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>>;
  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
  });
  afterAll(async () => h?.close());

  it('ships versioned profiles for GDPR, CCPA and PIPL', async () => {
    const res = await h.admin('get', '/v1/policies');
    expect(res.body.policies.map((p: { jurisdiction: string }) => p.jurisdiction)).toEqual(['CN-PIPL', 'EU-GDPR', 'US-CA-CCPA']);
  });

  it('refuses a round that breaks a participant\'s policy, naming the rule', async () => {
    const noDp = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 3 }));
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(noDp, name, true, 'eu', 'EU-GDPR', { tokenBeforePolicy: true });
    const refused = await h.admin('post', `/v1/studies/${noDp}/rounds`).send({});
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('POLICY_VIOLATION');
    expect(refused.body.error.message).toMatch(/dp-required of EU-GDPR v1/);
    // Nothing was charged or started.
    expect((await h.admin('get', `/v1/studies/${noDp}`)).body.rounds).toEqual([]);

    const healthFeature = tinyStudy({ autoAdvance: false, minNodesPerRound: 3, privacy: dp });
    (healthFeature.features as { features: Array<{ name: string; category?: string }> }).features[0].category = 'health';
    const health = await h.createStudy(healthFeature);
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(health, name, true, 'eu', 'EU-GDPR', { tokenBeforePolicy: true });
    const refusedHealth = await h.admin('post', `/v1/studies/${health}/rounds`).send({});
    expect(refusedHealth.status).toBe(409);
    expect(refusedHealth.body.error.message).toMatch(/feature "a" is in the forbidden category "health"/);

    const fine = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 3, privacy: dp }));
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(fine, name, true, 'eu', 'EU-GDPR');
    expect((await h.admin('post', `/v1/studies/${fine}/rounds`).send({})).status).toBe(201);
  });

  it('an automatic study that breaks a policy stops with the reason instead of training', async () => {
    const studyId = await h.createStudy(tinyStudy({ minNodesPerRound: 2 }));
    await h.enroll(studyId, 'cn1', true, 'cn', 'CN-PIPL', { tokenBeforePolicy: true });
    await h.enroll(studyId, 'cn2', true, 'cn', 'CN-PIPL', { tokenBeforePolicy: true });
    const status = await h.until(async () => {
      const s = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      return s.state === 'stopped' ? s : undefined;
    });
    expect(status.stopReason).toMatch(/CN-PIPL v1: aggregates need at least 3 nodes/);
    // The stop is covered by a signed checkpoint at once: the newest checkpoint reaches the refusal.
    const refusal = await h.built.db.selectFrom('audit_log').select('seq').where('study_id', '=', studyId).orderBy('seq', 'desc').executeTakeFirstOrThrow();
    const checkpoint = await h.until(async () => {
      const c = await h.built.db.selectFrom('audit_checkpoints').select('seq').orderBy('seq', 'desc').executeTakeFirst();
      return c && Number(c.seq) >= Number(refusal.seq) ? c : undefined;
    }, 5_000);
    expect(Number(checkpoint.seq)).toBeGreaterThanOrEqual(Number(refusal.seq));
  });

  /** A manual round on a fresh study whose 3 nodes are under `jurisdiction`: the refusal, or 201. */
  async function manualRound(study: Parameters<typeof tinyStudy>[0], jurisdiction: string) {
    const id = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 3, ...study }));
    for (const name of ['n1', 'n2', 'n3']) await h.enroll(id, name, true, 'eu', jurisdiction, { tokenBeforePolicy: true });
    return { id, res: await h.admin('post', `/v1/studies/${id}/rounds`).send({}) };
  }

  it('refuses a round whose first round spends more epsilon than the profile allows (max-epsilon-per-round)', async () => {
    // EU-GDPR v1: at most epsilon 1 per round. sigma 2 with every node sampled costs about 2.5
    // (RDP, delta 1e-5): within the study's budget of 9, over the per-round limit.
    const { res } = await manualRound({ privacy: { ...dp, budgetEpsilon: 9, central: { ...dp.central, noiseMultiplier: 2 } } }, 'EU-GDPR');
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('POLICY_VIOLATION');
    expect(res.body.error.message).toMatch(/EU-GDPR v1: a round may spend at most epsilon 1; this study's first round spends \d+\.\d{4}/);
    expect(res.body.error.message).toMatch(/rule max-epsilon-per-round of EU-GDPR v1/);
    // The same study with enough noise passes that rule.
    expect((await manualRound({ privacy: dp }, 'EU-GDPR')).res.status).toBe(201);
  });

  it('refuses a study whose budget is over the profile\'s total, or that sets none (max-epsilon-total)', async () => {
    const over = await manualRound({ privacy: { ...dp, budgetEpsilon: 25 } }, 'EU-GDPR');
    expect(over.res.status).toBe(409);
    expect(over.res.body.error.message).toMatch(/EU-GDPR v1: total epsilon at most 10; the study's budget is 25.*rule max-epsilon-total of EU-GDPR v1/);
    const { budgetEpsilon: _none, ...unbounded } = dp;
    const none = await manualRound({ privacy: unbounded }, 'EU-GDPR');
    expect(none.res.status).toBe(409);
    expect(none.res.body.error.message).toMatch(/a total epsilon of at most 10 is required; the study sets no budget.*rule max-epsilon-total/);
  });

  it('a profile may leave a purpose without consent levels; a study for that purpose is refused (purpose-consent)', async () => {
    // Partial consentFor: only "basic" is defined (zod 4's z.record(enum) demanded every purpose).
    const published = await h.admin('post', '/v1/policies').send({ jurisdiction: 'XX-BASIC-ONLY', minNodesPerAggregate: 2, consentFor: { basic: ['basic'] } });
    expect(published.status).toBe(201);
    expect(published.body.consentFor).toEqual({ basic: ['basic'] });
    const personalization = await manualRound({ consent: { purpose: 'personalization', column: 'consent' } }, 'XX-BASIC-ONLY');
    expect(personalization.res.status).toBe(409);
    expect(personalization.res.body.error.message).toMatch(/XX-BASIC-ONLY v1: no consent level is defined for purpose "personalization".*rule purpose-consent of XX-BASIC-ONLY v1/);
    expect((await manualRound({ consent: { purpose: 'basic', column: 'consent' } }, 'XX-BASIC-ONLY')).res.status).toBe(201);
  });

  it('the operator sets the jurisdiction on the enrollment token; unknown or contradicting claims are refused', async () => {
    // A study EU-GDPR accepts (DP, 3 nodes an aggregate): the token is about the jurisdiction, not the policy.
    const studyId = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 3, privacy: dp }));
    const key = (await import('./harness.ts')).testNodeKey;
    const { publicKey } = await key(1);
    const token = (body: Record<string, unknown>) => h.admin('post', '/v1/enrollment-tokens').send({ studyId, region: 'eu', ...body });
    const enroll = (t: string, jurisdiction?: string) => request(h.app).post('/v1/nodes/enroll').send({ token: t, publicKey, ...(jurisdiction ? { jurisdiction } : {}) });

    const unknown = await token({ nodeName: 'typo', jurisdiction: 'EU-GPDR' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ field: 'body.jurisdiction', code: 'UNKNOWN_JURISDICTION' });
    expect(unknown.body.error.message).toMatch(/unknown jurisdiction "EU-GPDR": this coordinator has policy profiles for CN-PIPL, EU-GDPR/);

    const eu = await token({ nodeName: 'eu', jurisdiction: 'EU-GDPR' });
    expect(eu.status).toBe(201);
    expect(eu.body.jurisdiction).toBe('EU-GDPR');
    const lying = await enroll(eu.body.token, 'US-CA-CCPA');
    expect(lying.status).toBe(400);
    expect(lying.body.error).toMatchObject({ field: 'body.jurisdiction', code: 'JURISDICTION_MISMATCH' });
    expect(lying.body.error.message).toMatch(/enrolls a node under jurisdiction EU-GDPR, but the node claims US-CA-CCPA/);
    // The refused attempt did not use the token up; a node that claims nothing gets the token's.
    const ok = await enroll(eu.body.token);
    expect(ok.status).toBe(201);
    expect(ok.body.jurisdiction).toBe('EU-GDPR');
    const row = await h.built.db.selectFrom('nodes').select('jurisdiction').where('id', '=', ok.body.nodeId).executeTakeFirstOrThrow();
    expect(row.jurisdiction).toBe('EU-GDPR');

    // A token without one: the node must name a profile the coordinator has.
    const bare = await token({ nodeName: 'bare' });
    const none = await enroll(bare.body.token);
    expect(none.status).toBe(400);
    expect(none.body.error).toMatchObject({ field: 'body.jurisdiction', code: 'JURISDICTION_REQUIRED' });
    const typo = await enroll(bare.body.token, 'CN-PIPLL');
    expect(typo.status).toBe(400);
    expect(typo.body.error).toMatchObject({ field: 'body.jurisdiction', code: 'UNKNOWN_JURISDICTION' });
    const claimed = await enroll(bare.body.token, 'CN-PIPL');
    expect(claimed.status).toBe(201);
    expect(claimed.body.jurisdiction).toBe('CN-PIPL');
  });

  it('a participant with no jurisdiction, or one without a profile, is refused (no-policy), not judged by none', async () => {
    const studyId = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 2 }));
    await h.enroll(studyId, 'ok');
    const legacy = await h.enroll(studyId, 'legacy');
    // A node enrolled before jurisdictions were bound to tokens (or a profile name since lost).
    await h.built.db.updateTable('nodes').set({ jurisdiction: null }).where('id', '=', legacy.nodeId).execute();
    const refused = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('POLICY_VIOLATION');
    expect(refused.body.error.message).toMatch(new RegExp(`node legacy \\(${legacy.nodeId}\\) cannot take part: it has no jurisdiction on record.*rule no-policy`));
    await h.built.db.updateTable('nodes').set({ jurisdiction: 'ZZ-NOWHERE' }).where('id', '=', legacy.nodeId).execute();
    const unknown = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
    expect(unknown.status).toBe(409);
    expect(unknown.body.error.message).toMatch(/its jurisdiction ZZ-NOWHERE has no policy profile on this coordinator.*rule no-policy of ZZ-NOWHERE v0/);
    await h.built.db.updateTable('nodes').set({ jurisdiction: 'US-CA-CCPA' }).where('id', '=', legacy.nodeId).execute();
    expect((await h.admin('post', `/v1/studies/${studyId}/rounds`).send({})).status).toBe(201);
  });

  it('a node reads the profile in force for its own jurisdiction', async () => {
    const studyId = await h.createStudy(tinyStudy({ autoAdvance: false }));
    const node = await h.enroll(studyId, 'reader', true, 'cn', 'CN-PIPL', { tokenBeforePolicy: true });
    const res = await h.nodeGet(node, '/v1/nodes/me/policy');
    expect(res.status).toBe(200);
    expect(res.body.jurisdiction).toBe('CN-PIPL');
    expect(res.body.policy).toMatchObject({ jurisdiction: 'CN-PIPL', version: 1, dpRequired: true, maxEpsilonTotal: 8 });
  });

  it('a policy change is a new version, audited', async () => {
    const res = await h.admin('post', '/v1/policies').send({ jurisdiction: 'EU-GDPR', minNodesPerAggregate: 5, dpRequired: true, forbiddenFeatureCategories: ['health'] });
    expect(res.status).toBe(201);
    expect(res.body.version).toBe(2);
    const log = (await h.admin('get', '/v1/audit/export')).body.entries;
    expect(log.some((e: { kind: string; data: { policy?: { version: number } } }) => e.kind === 'policy.changed' && e.data.policy?.version === 2)).toBe(true);
  });

  it('a node that withdraws is excluded from later rounds, and the withdrawal is logged', async () => {
    const studyId = await h.createStudy(tinyStudy({ autoAdvance: false, rounds: 3 }));
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    const c = await h.enroll(studyId, 'c');
    expect((await h.nodePost(c, '/v1/nodes/me/withdraw', { reason: 'partner left the programme' })).status).toBe(200);
    expect((await h.admin('post', `/v1/studies/${studyId}/rounds`).send({})).status).toBe(201);
    const round = (await h.admin('get', `/v1/studies/${studyId}/rounds/1`)).body;
    expect(round.participants.sort()).toEqual([a.nodeId, b.nodeId].sort());
    const log = (await h.admin('get', '/v1/audit/export')).body.entries;
    expect(log.some((e: { kind: string; data: { nodeId?: string } }) => e.kind === 'node.withdrawn' && e.data.nodeId === c.nodeId)).toBe(true);
    // A withdrawn node cannot report itself ready again.
    expect((await h.nodePost(c, '/v1/nodes/me/status', { state: 'ready' })).status).toBe(400);
  });
});

describe('the stricter of two profiles (what a node applies: its own and the coordinator\'s)', () => {
  it('takes the stricter value of every rule, so the coordinator can tighten a node but never relax it', () => {
    const local = DEFAULT_POLICIES.find((p) => p.jurisdiction === 'EU-GDPR')!;
    const relaxed = PolicyProfile.parse({ jurisdiction: 'EU-GDPR', version: 2, minNodesPerAggregate: 2, dpRequired: false, maxEpsilonTotal: 50, forbiddenFeatureCategories: ['minors'], consentFor: { basic: ['basic', 'any'] } });
    const merged = stricterOf(local, relaxed);
    expect(merged).toMatchObject({ version: 2, minNodesPerAggregate: 3, dpRequired: true, maxEpsilonPerRound: 1, maxEpsilonTotal: 10 });
    expect(merged.forbiddenFeatureCategories).toEqual([...local.forbiddenFeatureCategories, 'minors'].sort());
    // Consent: only values both accept; a purpose the coordinator's version leaves out is left out.
    expect(merged.consentFor).toEqual({ basic: ['basic'] });
    expect(stricterOf(relaxed, local)).toMatchObject({ minNodesPerAggregate: 3, dpRequired: true, maxEpsilonTotal: 10 });
  });
});
