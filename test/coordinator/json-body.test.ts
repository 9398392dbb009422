import { describe, expect, it } from 'vitest';
import express from 'express';
import request from 'supertest';
import { refusalOf } from '../../coordinator/http/error-handler.ts';
import { json, rawBodyOf } from '../../coordinator/http/middleware.ts';

/**
 * The JSON body parser checks strings for NUL and lone surrogates only when the bytes hold a \u
 * escape (or are not UTF-8): the only ways such a string can come out of JSON.parse. Checked once
 * by making the gate always false (never check): the refusal cases below failed.
 */
function app() {
  const a = express();
  a.post('/x', json, (req, res) => {
    res.json({ body: req.body, raw: Buffer.from(rawBodyOf(req)).toString('utf8') });
  });
  a.use(((err, _req, res, _next) => {
    const refusal = refusalOf(err);
    res.status(refusal?.status ?? 500).json({ code: refusal?.code, field: refusal?.field, message: refusal?.message });
  }) as express.ErrorRequestHandler);
  return a;
}

// serialize: superagent would JSON-encode a Buffer sent as application/json; the bytes go as they are.
const post = (body: string | Buffer, type = 'application/json') => request(app()).post('/x').set('content-type', type).serialize((b) => b).send(body as never);

describe('JSON bodies', () => {
  it('accepts plain bodies and keeps their exact bytes', async () => {
    const text = '{"a": [1, 2, {"b": "caf\u00e9 \u{1F600}"}],  "c": null}';
    const res = await post(text);
    expect(res.status).toBe(200);
    expect(res.body.body).toEqual(JSON.parse(text));
    expect(res.body.raw).toBe(text);
  });

  it('accepts escapes that make well-formed strings (a pair, an escaped backslash before u0000)', async () => {
    const res = await post('{"s": "\\ud83d\\ude00", "t": "\\\\u0000", "\\u00e9": 1}');
    expect(res.status).toBe(200);
    expect(res.body.body).toEqual({ s: '\u{1F600}', t: '\\u0000', '\u00e9': 1 });
  });

  for (const [name, text] of [
    ['a NUL in a value', '{"name": "a\\u0000"}'],
    ['a lone surrogate in a value', '{"name": "\\ud800"}'],
    ['a NUL in a key', '{"a\\u0000": 1}'],
    ['a NUL deep in arrays', '{"a": [1, [2, ["x", "\\u0000"]]]}'],
    ['a NUL under deep nesting', '{"a":' + '['.repeat(20_000) + '"\\u0000"' + ']'.repeat(20_000) + '}'],
  ] as const) {
    it(`refuses ${name} as a 400 naming the body`, async () => {
      const res = await post(text);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ code: 'VALIDATION_FAILED', field: 'body' });
      expect(res.body.message).toMatch(/NUL or an unpaired surrogate/);
    });
  }

  it('refuses a lone surrogate sent raw in UTF-16 (no escape needed there)', async () => {
    const res = await post(Buffer.from('{"a":"\ud800"}', 'utf16le'), 'application/json; charset=utf-16le');
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(/NUL or an unpaired surrogate/);
  });
});
