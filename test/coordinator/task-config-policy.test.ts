import { expect } from 'vitest';
import type { TaskMessage } from '../../protocols/messages.ts';
import { describeOnEachBackend, tinyStudy, type Harness } from './harness.ts';

const phaseOf = async (h: Harness, studyId: string, round: number) => (await h.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst())?.phase;

/**
 * Issue 13: a task names the hash of the study config it carries and the policy version in force
 * for the node, so a node can leave the config out of later tasks (it echoes the hash) and read
 * its policy only when it changed (it read it at every fit task: 200 of the demo's 1090 signed
 * requests). Old nodes, which echo nothing, still get the full config.
 */
describeOnEachBackend('task config hash and policy version', (run) => {
  run('the config is left out only for the hash the node echoes; the policy version is the one in force', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300 }));
    const a = await h.enroll(studyId, 'a', true, 'eu', 'US-CA-CCPA');
    await h.enroll(studyId, 'b', true, 'eu', 'US-CA-CCPA');
    await h.until(async () => ((await phaseOf(h, studyId, 1)) === 'fit' ? true : undefined));

    const full = (await h.nodeGet(a, '/v1/tasks/next?wait=0')).body as TaskMessage;
    expect(full.kind).toBe('fit');
    expect(full.config?.rounds).toBe(2);
    expect(full.configSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(full.policyInForce).toEqual({ jurisdiction: 'US-CA-CCPA', version: 1 });

    const lean = await h.nodeGet(a, `/v1/tasks/next?wait=0&config=${full.configSha256}`);
    expect(lean.status).toBe(200);
    expect(lean.body.config).toBeUndefined();
    expect({ ...lean.body, config: full.config, auditCheckpoint: full.auditCheckpoint }).toEqual(full);

    // Another hash (a node holding another config): the full config.
    const other = (await h.nodeGet(a, `/v1/tasks/next?wait=0&config=${'0'.repeat(64)}`)).body as TaskMessage;
    expect(other.config).toEqual(full.config);

    // A new profile version: the next task names it.
    expect((await h.admin('post', '/v1/policies').send({ jurisdiction: 'US-CA-CCPA', minNodesPerAggregate: 2 })).status).toBe(201);
    expect(((await h.nodeGet(a, '/v1/tasks/next?wait=0')).body as TaskMessage).policyInForce).toEqual({ jurisdiction: 'US-CA-CCPA', version: 2 });
  });

  run('a profile published while a node long-polls (here on another replica) is in the task it gets', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 300 }));
    const published = await h.admin('post', '/v1/policies').send({ jurisdiction: 'US-TX', minNodesPerAggregate: 2 });
    expect(published.status).toBe(201);
    const b = await h.enroll(studyId, 'b', true, 'eu', 'US-TX');
    const version = published.body.version + 1;
    const waiting = h.nodeGet(b, '/v1/tasks/next?wait=10');
    await new Promise((r) => setTimeout(r, 300));
    // Straight SQL: this process is not told; the task is built after the wait, so it reads it.
    const profile = { jurisdiction: 'US-TX', version, minNodesPerAggregate: 2 };
    await h.built.db.insertInto('policies').values({ jurisdiction: 'US-TX', version, profile: JSON.stringify(profile) }).execute();
    await h.enroll(studyId, 'c', true, 'eu', 'US-TX'); // the second node opens round 1: b's poll wakes
    const task = (await waiting).body as TaskMessage;
    expect(task.kind).toBe('fit');
    expect(task.policyInForce).toEqual({ jurisdiction: 'US-TX', version });
  });
});
