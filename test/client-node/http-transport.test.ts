import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exchange } from '../../client-node/http-transport.ts';
import { CoordinatorClient, CoordinatorRefusal } from '../../client-node/coordinator-client.ts';

/** The node's HTTP transport (node:http instead of fetch(), issue 13): what the client relies on. */
describe('exchange', () => {
  let server: Server | undefined;
  afterEach(async () => new Promise<void>((resolve) => (server ? (server.closeAllConnections(), server.close(() => resolve())) : resolve())));

  async function listen(handler: Parameters<typeof createServer>[1]): Promise<URL> {
    server = createServer(handler);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  }

  it('sends the method, headers and body; gives the status, headers by any case, and the body as JSON or bytes', async () => {
    let seen: { method?: string; auth?: string; length?: string; body?: string } = {};
    const url = await listen((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        seen = { method: req.method, auth: req.headers.authorization, length: req.headers['content-length'], body: Buffer.concat(chunks).toString() };
        res.writeHead(201, { 'content-type': 'application/json', 'Fedmark-SHA256': 'abc' });
        res.end(JSON.stringify({ ok: true }));
      });
    });
    const body = new TextEncoder().encode('{"x":1}');
    const answer = await exchange(new URL('/v1/x', url), { method: 'POST', headers: { authorization: 'Bearer t' }, body, timeoutMs: 5000 });
    expect(seen).toEqual({ method: 'POST', auth: 'Bearer t', length: String(body.byteLength), body: '{"x":1}' });
    expect(answer.status).toBe(201);
    expect(answer.headers.get('fedmark-sha256')).toBe('abc');
    expect(answer.headers.get('FEDMARK-SHA256')).toBe('abc');
    expect(answer.headers.get('fedmark-missing')).toBeNull();
    expect(await answer.json()).toEqual({ ok: true });
    expect(new TextDecoder().decode(await answer.arrayBuffer())).toBe('{"ok":true}');
  });

  it('keeps the connection open between requests, as fetch() did', async () => {
    let connections = 0;
    const url = await listen((_req, res) => res.end('{}'));
    server!.on('connection', () => connections++);
    for (let i = 0; i < 5; i++) expect((await exchange(url, { method: 'GET', headers: {}, timeoutMs: 5000 })).status).toBe(200);
    expect(connections).toBe(1);
  });

  it('gives up on an answer that does not come within the timeout, with ETIMEDOUT', async () => {
    const url = await listen(() => {}); // never answers
    const started = Date.now();
    const err = await exchange(url, { method: 'GET', headers: {}, timeoutMs: 300 }).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('ETIMEDOUT');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('never follows a redirect: the client refuses it, naming where it pointed', async () => {
    let requests = 0;
    const url = await listen((_req, res) => {
      requests++;
      res.writeHead(302, { location: 'http://elsewhere.example/v1/nodes/me' });
      res.end();
    });
    const err = await new CoordinatorClient(url.toString()).me().catch((e) => e);
    expect(err).toBeInstanceOf(CoordinatorRefusal);
    expect(err.code).toBe('REDIRECT');
    expect(err.message).toMatch(/302, a redirect to http:\/\/elsewhere\.example\/v1\/nodes\/me: nodes do not follow redirects/);
    expect(requests).toBe(1);
  });

  it('fails an answer cut before its promised length (the caller retries it)', async () => {
    const url = await listen((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(10), () => res.destroy());
    });
    await expect(exchange(url, { method: 'GET', headers: {}, timeoutMs: 5000 })).rejects.toThrow();
  });
});
