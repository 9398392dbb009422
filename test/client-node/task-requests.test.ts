import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoordinatorClient } from '../../client-node/coordinator-client.ts';
import { PolicyInForce } from '../../client-node/policy.ts';
import { StudyConfig, type Task } from '../../protocols/messages.ts';
import { DEFAULT_POLICIES } from '../../protocols/policy/jurisdiction-policy.ts';
import { tinyStudy } from '../coordinator/harness.ts';

const log = pino({ level: 'silent' });
const config = StudyConfig.parse(tinyStudy({ rounds: 3 }));
const HASH = 'a'.repeat(64);
const task = { kind: 'fit', studyId: 'study_1', round: 2, modelVersion: 1, modelSha256: 'b'.repeat(64), deadline: new Date(0).toISOString(), configSha256: HASH };

/**
 * Issue 13, the node's side of fewer and cheaper requests: it echoes the study config's hash so
 * its tasks come without the config (parsed at every poll before), and reads its policy again
 * only when a task names another version than the one it read (it asked at every fit task).
 */
describe('a node holds its study config by hash', () => {
  let server: Server;
  const asked: string[] = [];
  beforeAll(async () => {
    // A coordinator that leaves the config out when its hash is echoed, as rounds/router.ts does.
    server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      asked.push(url.search);
      const body = url.searchParams.get('config') === HASH ? task : { ...task, config };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('echoes the hash after the first task and fills the config in from its copy', async () => {
    const client = new CoordinatorClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const first = await client.nextTask(0);
    const second = await client.nextTask(0);
    expect(asked).toEqual(['?wait=0', `?wait=0&config=${HASH}`]);
    expect(first?.config).toEqual(config);
    expect(second).toEqual(first);
  });
});

describe("a node's policy, read when its version changes", () => {
  const local = DEFAULT_POLICIES.find((p) => p.jurisdiction === 'US-CA-CCPA')!;
  function coordinator() {
    const state = { reads: 0, version: local.version };
    const client = { policy: async () => (state.reads++, { jurisdiction: local.jurisdiction, policy: { ...local, version: state.version } }) };
    return { state, policies: new PolicyInForce(local, client as unknown as CoordinatorClient, log) };
  }
  const named = (version: number | null): Pick<Task, 'policyInForce'> => ({ policyInForce: { jurisdiction: local.jurisdiction, version } });

  it('once for tasks naming the version it read; again when a task names another', async () => {
    const { state, policies } = coordinator();
    await policies.current();
    await policies.current(named(local.version));
    await policies.current(named(local.version));
    expect(state.reads).toBe(1);
    state.version = local.version + 1;
    expect((await policies.current(named(local.version + 1))).version).toBe(local.version + 1);
    expect(state.reads).toBe(2);
  });

  it('at every task that names no version (an older coordinator)', async () => {
    const { state, policies } = coordinator();
    await policies.current({});
    await policies.current({});
    expect(state.reads).toBe(2);
  });
});
