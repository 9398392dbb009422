import { afterEach, describe, expect, it, vi } from 'vitest';
import express from 'express';
import request from 'supertest';
import { refusalOf } from '../../coordinator/http/error-handler.ts';
import { registerParamValidators, ROUTE_PARAMS } from '../../coordinator/http/validate.ts';

/**
 * Route parameters are validated once per distinct valid value (every node request names the same
 * study and round); an invalid value is refused every time. Checked once by removing the memo
 * (coordinator/http/validate.ts): the "once" case failed.
 */
function app() {
  const a = express();
  const seen: string[] = [];
  registerParamValidators(a, { studyId: async (_req, _res, value) => void seen.push(value) });
  a.get('/s/:studyId/r/:round', (req, res) => {
    res.json({ studyId: req.params.studyId, round: req.params.round });
  });
  a.use(((err, _req, res, _next) => {
    const refusal = refusalOf(err);
    res.status(refusal?.status ?? 500).json({ code: refusal?.code, field: refusal?.field });
  }) as express.ErrorRequestHandler);
  return { a, seen };
}

describe('route parameter validation', () => {
  afterEach(() => vi.restoreAllMocks());

  it('parses a valid value once, and still runs the check after it on every request', async () => {
    const { a, seen } = app();
    const studyParse = vi.spyOn(ROUTE_PARAMS.studyId, 'safeParse');
    const roundParse = vi.spyOn(ROUTE_PARAMS.round, 'safeParse');
    for (let i = 0; i < 3; i++) {
      const res = await request(a).get('/s/study_abc123/r/7');
      expect(res.status).toBe(200);
    }
    expect(studyParse).toHaveBeenCalledTimes(1);
    expect(roundParse).toHaveBeenCalledTimes(1);
    expect(seen).toEqual(['study_abc123', 'study_abc123', 'study_abc123']);
  });

  it('refuses an invalid value every time', async () => {
    const { a, seen } = app();
    for (let i = 0; i < 2; i++) {
      const res = await request(a).get('/s/study_abc123/r/2147483648');
      expect(res.status).toBe(400);
      expect(res.body).toEqual({ code: 'VALIDATION_FAILED', field: 'params.round' });
      const bad = await request(a).get('/s/bad%00id/r/1');
      expect(bad.status).toBe(400);
      expect(bad.body.field).toBe('params.studyId');
    }
    expect(seen).not.toContain('bad\u0000id');
  });
});
