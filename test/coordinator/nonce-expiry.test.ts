import { expect, vi } from 'vitest';
import { describeOnEachBackend, tinyStudy } from './harness.ts';

// Every deletion of expired nonces counted (request-auth.ts calls this one function).
const forgets = vi.hoisted(() => ({ n: 0 }));
vi.mock('../../coordinator/auth/repository.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../coordinator/auth/repository.ts')>();
  return { ...original, forgetNoncesBefore: (...args: Parameters<typeof original.forgetNoncesBefore>) => (forgets.n++, original.forgetNoncesBefore(...args)) };
});

/**
 * Issue 13: expired nonces are deleted at most once a minute, not every 500 signed requests (each
 * delete scans request_nonces, which holds every nonce of the last 2 x skew), and still deleted.
 */
describeOnEachBackend('expired nonces', (run) => {
  run('are forgotten at most once a minute, and again once a minute has passed', async (h) => {
    const studyId = await h.createStudy(tinyStudy({ rounds: 1 }));
    const a = await h.enroll(studyId, 'a', false);
    const before = forgets.n;
    for (let i = 0; i < 5; i++) expect((await h.nodeGet(a, '/v1/nodes/me')).status).toBe(200);
    expect(forgets.n - before).toBeLessThanOrEqual(1);

    const now = Date.now.bind(Date);
    const later = vi.spyOn(Date, 'now').mockImplementation(() => now() + 61_000);
    try {
      const atMinute = forgets.n;
      for (let i = 0; i < 5; i++) expect((await h.nodeGet(a, '/v1/nodes/me')).status).toBe(200);
      expect(forgets.n - atMinute).toBe(1);
    } finally {
      later.mockRestore();
    }
  });
});
