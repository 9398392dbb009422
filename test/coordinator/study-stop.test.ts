import { expect } from 'vitest';
import { sql } from 'kysely';
import * as studyStop from '../../coordinator/db/migrations/20261202_0017_study_stop.ts';
import { policyViolationsFor } from '../../coordinator/studies/study-plan.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness } from './harness.ts';

/**
 * Issue 12: an operator's stop (POST /v1/studies/:studyId/stop), the `stopped` state and its
 * reason in every view, policies checked at creation and the plan route, on PGlite and PostgreSQL.
 */

const weights = (v: number) =>
  encodeWeights([
    { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(v) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v]) },
  ]);

const dp = { accountant: 'rdp' as const, delta: 1e-5, budgetEpsilon: 5, central: { noiseMultiplier: 5, clipping: { kind: 'fixed' as const, norm: 1 } } };

async function phaseOf(h: Harness, studyId: string, round: number) {
  return (await h.admin('get', `/v1/studies/${studyId}/rounds/${round}`)).body.phase as string | undefined;
}

async function auditOf(h: Harness, studyId: string, kind: string) {
  return h.built.db.selectFrom('audit_log').select(['actor', 'data', 'round']).where('study_id', '=', studyId).where('kind', '=', kind).execute();
}

describeOnEachBackend('study stop and policies at creation', (run) => {
  run('an operator stops a study mid-fit: the round fails without a model, every view shows stopped and the reason, a second stop changes nothing', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, roundDeadlineSeconds: 600 }));
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    expect((await h.submit(a, studyId, 1, weights(0.1))).status).toBe(201);

    const auditor = (await h.admin('post', '/v1/tokens').send({ role: 'auditor', name: 'stop-auditor' })).body.token as string;
    const asAuditor = await h.admin('post', `/v1/studies/${studyId}/stop`).set('authorization', `Bearer ${auditor}`).send({ reason: 'no' });
    expect(asAuditor.status).toBe(403);

    // A reason sent as plain text is refused (415), not dropped for the default reason, and nothing stops.
    const text = await h.admin('post', `/v1/studies/${studyId}/stop`).set('content-type', 'text/plain').send('partner B withdrew');
    expect(text.status).toBe(415);
    expect(text.body.error).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE', field: 'body' });
    expect((await h.admin('get', `/v1/studies/${studyId}`)).body.state).toBe('running');

    const seen = (await h.admin('get', `/v1/studies/${studyId}`)).body.changeCount as number;
    const stop = await h.admin('post', `/v1/studies/${studyId}/stop`).send({ reason: 'partner B withdrew its consent' });
    expect(stop.status).toBe(200);
    expect(stop.body).toMatchObject({ id: studyId, state: 'stopped', stopReason: 'partner B withdrew its consent', changed: true, closedRound: { round: 1, phase: 'failed' } });
    expect(stop.body.stoppedBy).toMatch(/^admin:/);

    const status = (await h.admin('get', `/v1/studies/${studyId}`)).body;
    // The stop is a change of the study: watchers' and nodes' long polls wake on it.
    expect(status.changeCount).toBeGreaterThan(seen);
    expect(status).toMatchObject({ state: 'stopped', stopReason: 'partner B withdrew its consent', stoppedBy: stop.body.stoppedBy, stoppedAt: stop.body.stoppedAt, latestModelVersion: 0 });
    expect(status.rounds[0]).toMatchObject({ round: 1, phase: 'failed', modelSha256: null });
    expect(status.rounds[0].failureReason).toMatch(/study stopped: partner B withdrew its consent/);
    expect((await h.admin('get', `/v1/studies/${studyId}/models/1`)).status).toBe(404);
    const listed = (await h.admin('get', '/v1/studies')).body.studies.find((s: { id: string }) => s.id === studyId);
    expect(listed).toMatchObject({ state: 'stopped', stopReason: 'partner B withdrew its consent', roundsDone: 1, roundsPlanned: 3, model: 'logreg', task: 'binary' });
    expect((await h.admin('get', `/v1/studies/${studyId}/privacy`)).body).toMatchObject({ state: 'stopped', stopReason: 'partner B withdrew its consent' });
    const mine = await h.nodeGet(b, '/v1/nodes/me/study');
    expect(mine.body).toMatchObject({ state: 'stopped', stopReason: 'partner B withdrew its consent' });
    // The node that had not sent its update has no task left; a late update is refused.
    expect((await h.nodeGet(b, '/v1/tasks/next?wait=0')).status).toBe(204);
    expect((await h.submit(b, studyId, 1, weights(0.2))).status).toBe(409);

    const audit = await auditOf(h, studyId, 'study.stopped');
    expect(audit).toHaveLength(1);
    expect(audit[0].actor).toBe(stop.body.stoppedBy);
    expect(JSON.parse(String(audit[0].data))).toMatchObject({ reason: 'partner B withdrew its consent' });

    const again = await h.admin('post', `/v1/studies/${studyId}/stop`).send({ reason: 'once more' });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ state: 'stopped', stopReason: 'partner B withdrew its consent', stoppedAt: stop.body.stoppedAt, changed: false, closedRound: null });
    expect(await auditOf(h, studyId, 'study.stopped')).toHaveLength(1);
    const manual = await h.admin('post', `/v1/studies/${studyId}/rounds`).send({});
    expect(manual.status).toBe(409);
    expect(manual.body.error.code).toBe('STUDY_ENDED');
    // Nothing reopens it: a sweep finds no running study to start.
    await h.built.rounds.sweep();
    expect((await h.admin('get', `/v1/studies/${studyId}`)).body.rounds).toHaveLength(1);
  });

  run('a stop in the evaluation phase pools the reports already in and publishes nothing new', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 3, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600 }));
    const a = await h.enroll(studyId, 'a');
    const b = await h.enroll(studyId, 'b');
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));
    for (const n of [a, b]) expect((await h.submit(n, studyId, 1, weights(0.1), defaultMeta(10))).status).toBe(201);
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'evaluate' ? true : undefined));
    expect((await h.nodePost(a, `/v1/studies/${studyId}/rounds/1/evaluations`, evaluation([1, 4], [4, 1]), `${studyId}/1`)).status).toBe(201);
    const stop = await h.admin('post', `/v1/studies/${studyId}/stop`).send({});
    expect(stop.body).toMatchObject({ state: 'stopped', stopReason: 'stopped by an operator', closedRound: { round: 1, phase: 'completed' } });
    const status = (await h.admin('get', `/v1/studies/${studyId}`)).body;
    expect(status.latestModelVersion).toBe(1);
    expect(status.rounds).toHaveLength(1);
    expect(status.rounds[0].phase).toBe('completed');
    expect(status.rounds[0].validationAuc).toBeGreaterThan(0.5);
  });

  run('creation refuses a study that breaks a planned jurisdiction, naming the jurisdiction, the rule and the field; the plan says so and writes nothing', async (h) => {
    const before = (await h.admin('get', '/v1/studies')).body.studies.length;
    const broken = tinyStudy({ minNodesPerRound: 3, jurisdictions: ['US-CA-CCPA', 'EU-GDPR', 'CN-PIPL'] });
    const plan = await h.admin('post', '/v1/studies/plan').send(broken);
    expect(plan.status).toBe(200);
    expect(plan.body.wouldCreate).toBe(false);
    expect(plan.body.jurisdictions.map((j: { jurisdiction: string; policy: { version: number } | null }) => [j.jurisdiction, j.policy?.version])).toEqual([['US-CA-CCPA', 1], ['EU-GDPR', 1], ['CN-PIPL', 1]]);
    expect(plan.body.violations.map((v: { jurisdiction: string; rule: string }) => `${v.jurisdiction}/${v.rule}`)).toEqual(['EU-GDPR/dp-required', 'EU-GDPR/max-epsilon-total', 'CN-PIPL/dp-required', 'CN-PIPL/max-epsilon-total']);
    expect(plan.body.privacy.dp).toBe(false);
    expect((await h.admin('get', '/v1/studies')).body.studies.length).toBe(before);

    const refused = await h.admin('post', '/v1/studies').send(broken);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('POLICY_VIOLATION');
    expect(refused.body.error.field).toBe('body.privacy.central');
    expect(refused.body.error.message).toMatch(/^the study breaks EU-GDPR v1 dp-required, EU-GDPR v1 max-epsilon-total, CN-PIPL v1 dp-required, CN-PIPL v1 max-epsilon-total; first: EU-GDPR v1: differential privacy \(central, client-level\) is required/);
    const unknown = await h.admin('post', '/v1/studies').send(tinyStudy({ jurisdictions: ['XX-NOWHERE'] }));
    expect(unknown.status).toBe(409);
    expect(unknown.body.error).toMatchObject({ code: 'POLICY_VIOLATION', field: 'body.jurisdictions.0' });
    expect(unknown.body.error.message).toMatch(/XX-NOWHERE: no policy profile/);
    expect((await h.admin('get', '/v1/studies')).body.studies.length).toBe(before);

    // With DP, a budget and 3 nodes a round, the same study passes all three.
    const fixed = tinyStudy({ minNodesPerRound: 3, jurisdictions: ['US-CA-CCPA', 'EU-GDPR', 'CN-PIPL'], privacy: { ...dp, publicFields: ['update.loss', 'update.steps', 'update.trainSeconds', 'update.data', 'evaluation.loss', 'status.data'] } });
    const ok = await h.admin('post', '/v1/studies/plan').send(fixed);
    expect(ok.body).toMatchObject({ wouldCreate: true, violations: [] });
    expect(ok.body.privacy).toMatchObject({ dp: true, accountant: 'rdp', central: { noiseMultiplier: 5, budgetEpsilon: 5 } });
    expect(ok.body.privacy.central.epsilonPerRound).toBeGreaterThan(0);
    expect(ok.body.privacy.central.epsilonTotal).toBeGreaterThan(ok.body.privacy.central.epsilonPerRound);
    expect((await h.admin('post', '/v1/studies').send(fixed)).status).toBe(201);
    // The function the token issue calls: the same verdicts.
    const violations = await policyViolationsFor(h.built.db, StudyConfig.parse(broken), ['EU-GDPR']);
    expect(violations.map((v) => v.rule)).toEqual(['dp-required', 'max-epsilon-total']);
  });

  run('a study a policy refuses at its first round ends stopped, not completed, with the reason', async (h) => {
    // Tokens are checked against the policy too: the profile gets stricter after enrollment.
    expect((await h.admin('post', '/v1/policies').send({ jurisdiction: 'XX-STOP', minNodesPerAggregate: 2 })).status).toBe(201);
    const studyId = await h.createStudy(tinyStudy({ minNodesPerRound: 2 }));
    const nodes = [await h.enroll(studyId, 'x1', false, 'xx', 'XX-STOP'), await h.enroll(studyId, 'x2', false, 'xx', 'XX-STOP')];
    expect((await h.admin('post', '/v1/policies').send({ jurisdiction: 'XX-STOP', minNodesPerAggregate: 3 })).status).toBe(201);
    for (const n of nodes) expect((await h.nodePost(n, '/v1/nodes/me/status', { state: 'ready' })).status).toBe(204);
    const status = await h.until(async () => {
      const s = (await h.admin('get', `/v1/studies/${studyId}`)).body;
      return s.state !== 'running' ? s : undefined;
    });
    expect(status).toMatchObject({ state: 'stopped', stoppedBy: 'coordinator' });
    expect(status.stopReason).toMatch(/XX-STOP v2: aggregates need at least 3 nodes/);
  });

  run('migration 0017 turns an early end recorded as completed into stopped, and back', async (h) => {
    const db = h.built.db;
    await studyStop.down(db);
    await sql`insert into studies (id, name, config, state, current_round, latest_model_version, stop_reason) values ('study_old_stop', 'old', '{}', 'completed', 1, 1, 'privacy budget: round 2'), ('study_old_done', 'done', '{}', 'completed', 3, 3, null)`.execute(db);
    await studyStop.up(db);
    const rows = await db.selectFrom('studies').select(['id', 'state', 'stopped_by']).where('id', 'in', ['study_old_stop', 'study_old_done']).orderBy('id').execute();
    expect(rows).toEqual([
      { id: 'study_old_done', state: 'completed', stopped_by: null },
      { id: 'study_old_stop', state: 'stopped', stopped_by: 'coordinator' },
    ]);
    await expect(sql`update studies set state = 'paused' where id = 'study_old_done'`.execute(db)).rejects.toThrow(/studies_state_check/);
  });
});
