import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendOrSkip } from '../helpers/databases.ts';
import { inProcessCoordinator, tinyStudy } from './harness.ts';

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
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(noDp, name, true, 'eu', 'EU-GDPR');
    const refused = await h.admin('post', `/v1/studies/${noDp}/rounds`).send({});
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('POLICY_VIOLATION');
    expect(refused.body.error.message).toMatch(/dp-required of EU-GDPR v1/);
    // Nothing was charged or started.
    expect((await h.admin('get', `/v1/studies/${noDp}`)).body.rounds).toEqual([]);

    const healthFeature = tinyStudy({ autoAdvance: false, minNodesPerRound: 3, privacy: dp });
    (healthFeature.features as { features: Array<{ name: string; category?: string }> }).features[0].category = 'health';
    const health = await h.createStudy(healthFeature);
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(health, name, true, 'eu', 'EU-GDPR');
    const refusedHealth = await h.admin('post', `/v1/studies/${health}/rounds`).send({});
    expect(refusedHealth.status).toBe(409);
    expect(refusedHealth.body.error.message).toMatch(/feature "a" is in the forbidden category "health"/);

    const fine = await h.createStudy(tinyStudy({ autoAdvance: false, minNodesPerRound: 3, privacy: dp }));
    for (const name of ['eu1', 'eu2', 'eu3']) await h.enroll(fine, name, true, 'eu', 'EU-GDPR');
    expect((await h.admin('post', `/v1/studies/${fine}/rounds`).send({})).status).toBe(201);
  });

  it('an automatic study that breaks a policy stops with the reason instead of training', async () => {
    const studyId = await h.createStudy(tinyStudy({ minNodesPerRound: 2 }));
    await h.enroll(studyId, 'cn1', true, 'cn', 'CN-PIPL');
    await h.enroll(studyId, 'cn2', true, 'cn', 'CN-PIPL');
    const status = await h.until(async () => {
      const s = (await h.admin('get', `/v1/studies/${studyId}/privacy`)).body;
      return s.state === 'completed' ? s : undefined;
    });
    expect(status.stopReason).toMatch(/CN-PIPL v1: aggregates need at least 3 nodes/);
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
