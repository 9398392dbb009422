import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendOrSkip } from '../helpers/databases.ts';
import { inProcessCoordinator, tinyStudy } from './harness.ts';

/**
 * Task.model (coordinator/rounds/task-model.ts): a task carries its model only up to
 * FEDMARK_TASK_MODEL_INLINE_BYTES; above it (or with 0) the node downloads the model as before.
 * The tiny study's model is carried under the default, at its own size, not one byte under it or at 0.
 */
describe('a task carries its model up to the configured size', () => {
  const coordinators: Array<Awaited<ReturnType<typeof inProcessCoordinator>>> = [];
  afterAll(async () => Promise.all(coordinators.map((h) => h.close())));

  async function firstTask(limit?: number) {
    const h = await inProcessCoordinator((await backendOrSkip('pglite'))!, undefined, limit === undefined ? {} : { taskModelInlineBytes: limit });
    coordinators.push(h);
    const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
    const node = await h.enroll(studyId, 'n');
    await h.enroll(studyId, 'm');
    const task = await h.until(async () => {
      const res = await h.nodeGet(node, '/v1/tasks/next?wait=1');
      return res.status === 200 ? res.body : undefined;
    });
    const model = await h.nodeGet(node, `/v1/studies/${studyId}/models/0`);
    return { task, model: model.body as Buffer };
  }

  let size = 0;
  beforeAll(async () => {
    size = (await firstTask()).model.length;
  });

  it('under the default limit: the model, byte for byte, with a signature', async () => {
    const { task, model } = await firstTask();
    expect(Buffer.from(task.model.bytes, 'base64').equals(model)).toBe(true);
    expect(task.model.signature).toMatch(/BEGIN PGP SIGNATURE/);
  });

  it('exactly at the limit it is carried; one byte under, or 0, it is not', async () => {
    expect((await firstTask(size)).task.model).toBeDefined();
    expect((await firstTask(size - 1)).task.model).toBeUndefined();
    expect((await firstTask(0)).task.model).toBeUndefined();
  });
});
