import { expect } from 'vitest';
import request from 'supertest';
import { roundBinding } from '../../protocols/messages.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { defaultMeta, describeOnEachBackend, evaluation, tinyStudy, type Harness, type TestNode } from './harness.ts';

const weights = encodeWeights([
  { name: 'dense_0/kernel', shape: [7, 1], values: new Float32Array(7).fill(0.2) },
  { name: 'dense_0/bias', shape: [1], values: new Float32Array([0.1]) },
]);

/** Every route of the app under /v1/studies/:studyId, read from the app's own route table. */
function studyRoutes(h: Harness): Array<{ method: 'get' | 'post'; path: string }> {
  const stack = (h.app as unknown as { router: { stack: Array<{ route?: { path: string; methods: Record<string, boolean> } }> } }).router.stack;
  return stack
    .filter((l) => l.route?.path.startsWith('/v1/studies/:studyId'))
    .flatMap((l) => Object.keys(l.route!.methods).map((m) => ({ method: m as 'get' | 'post', path: l.route!.path })));
}

/** A route's URL with its parameters filled in: resources that exist (`present`) or that do not. */
function urlOf(path: string, studyId: string, nodeId: string, present: boolean) {
  return path
    .replace(':studyId', studyId)
    .replace(':round', present ? '1' : '99')
    .replace(':version', present ? '0' : '999')
    .replace(':nodeId', present ? nodeId : 'node_nosuchnode')
    .replace(':region', present ? 'eu' : 'atlantis');
}

interface World {
  studyId: string;
  otherStudyId: string;
  a: TestNode;
  outsider: TestNode;
  eu: string;
  us: string;
}

/** Study S: nodes a and b in region eu, round 1 open, a's update in. Study O: one node (the outsider), region us. */
async function world(h: Harness): Promise<World> {
  const studyId = await h.createStudy(tinyStudy({ rounds: 1, minNodesToStart: 2, roundDeadlineSeconds: 600 }));
  const a = await h.enroll(studyId, 'a', true, 'eu');
  await h.enroll(studyId, 'b', true, 'eu');
  const otherStudyId = await h.createStudy(tinyStudy({ minNodesToStart: 9 }));
  const outsider = await h.enroll(otherStudyId, 'x', true, 'us');
  await h.until(async () => ((await h.nodeGet(a, '/v1/tasks/next')).status === 200 ? true : undefined));
  expect((await h.submit(a, studyId, 1, weights, defaultMeta(5))).status).toBe(201);
  const token = async (region: string) => (await h.admin('post', '/v1/tokens').send({ role: 'analyst', name: `${region}-team-${Math.random()}`, region })).body.token as string;
  return { studyId, otherStudyId, a, outsider, eu: await token('eu'), us: await token('us') };
}

async function asNode(h: Harness, node: TestNode, method: 'get' | 'post', path: string, url: string, studyId: string) {
  if (path.endsWith('/updates') && method === 'post') return h.submit(node, studyId, Number(url.split('/')[5]), weights, defaultMeta(5));
  const body = method === 'post' ? (path.endsWith('/evaluations') ? evaluation([1, 1], [1, 1], 0.5) : {}) : undefined;
  const roundId = path.endsWith('/evaluations') ? roundBinding(studyId, Number(url.split('/')[5])) : undefined;
  return h.nodeRequest(node, method, url, body, { roundId });
}

const asAnalyst = (h: Harness, token: string, method: 'get' | 'post', url: string) => request(h.app)[method](url).set('authorization', `Bearer ${token}`);

/**
 * Reads (issue 11, item 8): an analyst reads a study only if its region has a node in it; a node
 * of another study gets 403 for every resource of this one, whether or not it exists. Neither
 * can tell a study (or a round, a model, a node) that exists from one that does not.
 */
describeOnEachBackend('who reads a study', (run) => {
  // One world per backend's coordinator.
  const worlds = new WeakMap<Harness, Promise<World>>();
  const setup = (h: Harness) => {
    if (!worlds.has(h)) worlds.set(h, world(h));
    return worlds.get(h)!;
  };

  run('an analyst of a region with no node in the study gets 403 on every route of it, the same as for a study that does not exist', async (h) => {
    const { studyId, us, a } = await setup(h);
    const routes = studyRoutes(h);
    expect(routes.length).toBeGreaterThanOrEqual(12);
    for (const { method, path } of routes) {
      for (const present of [true, false]) {
        const real = await asAnalyst(h, us, method, urlOf(path, studyId, a.nodeId, present));
        const ghost = await asAnalyst(h, us, method, urlOf(path, 'study_doesnotexist', a.nodeId, present));
        expect({ route: `${method} ${path}`, status: real.status }).toEqual({ route: `${method} ${path}`, status: 403 });
        expect(ghost.status).toBe(403);
        expect(real.body.error.message.replace(studyId, 'ID')).toBe(ghost.body.error.message.replace('study_doesnotexist', 'ID'));
      }
    }
  });

  run("an analyst of a region with a node in the study reads its status, rounds and models (its own region's nodes only)", async (h) => {
    const { studyId, eu } = await setup(h);
    const status = await asAnalyst(h, eu, 'get', `/v1/studies/${studyId}`);
    expect(status.status).toBe(200);
    expect(status.body.nodes.map((n: { region: string }) => n.region)).toEqual(['eu', 'eu']);
    expect((await asAnalyst(h, eu, 'get', `/v1/studies/${studyId}/rounds/1`)).status).toBe(200);
    expect((await asAnalyst(h, eu, 'get', `/v1/studies/${studyId}/models/0`)).status).toBe(200);
    expect((await asAnalyst(h, eu, 'get', `/v1/studies/${studyId}/regions/eu`)).status).toBe(200);
    // Its own region only, even in a study it may read.
    expect((await asAnalyst(h, eu, 'get', `/v1/studies/${studyId}/regions/us`)).status).toBe(403);
  });

  run("the study list shows an analyst only the studies its region has a node in; admins and auditors see all", async (h) => {
    const { studyId, otherStudyId, eu, us } = await setup(h);
    const ids = async (token: string) => ((await asAnalyst(h, token, 'get', '/v1/studies')).body.studies as Array<{ id: string }>).map((s) => s.id);
    expect(await ids(eu)).toContain(studyId);
    expect(await ids(eu)).not.toContain(otherStudyId);
    expect(await ids(us)).toEqual(expect.arrayContaining([otherStudyId]));
    expect(await ids(us)).not.toContain(studyId);
    const all = ((await h.admin('get', '/v1/studies')).body.studies as Array<{ id: string }>).map((s) => s.id);
    expect(all).toEqual(expect.arrayContaining([studyId, otherStudyId]));
  });

  run('a node of another study gets 403 for every resource of this one, existing or not, and for a study that does not exist', async (h) => {
    const { studyId, outsider, a } = await setup(h);
    for (const { method, path } of studyRoutes(h)) {
      for (const present of [true, false]) {
        const res = await asNode(h, outsider, method, path, urlOf(path, studyId, a.nodeId, present), studyId);
        expect({ route: `${method} ${path}`, present, status: res.status }).toEqual({ route: `${method} ${path}`, present, status: 403 });
        const ghost = await asNode(h, outsider, method, path, urlOf(path, 'study_doesnotexist', a.nodeId, present), 'study_doesnotexist');
        expect({ route: `${method} ${path}`, present, status: ghost.status }).toEqual({ route: `${method} ${path}`, present, status: 403 });
      }
    }
  });

  run("a node of the study still reads its own study's round and model, and hears 404 for a round that does not exist", async (h) => {
    const { studyId, a } = await setup(h);
    expect((await h.nodeGet(a, `/v1/studies/${studyId}/rounds/1`)).status).toBe(200);
    expect((await h.nodeGet(a, `/v1/studies/${studyId}/models/0`)).status).toBe(200);
    expect((await h.nodeGet(a, `/v1/studies/${studyId}/rounds/99`)).status).toBe(404);
  });
});
