import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendOrSkip } from '../helpers/databases.ts';
import { inProcessCoordinator } from './harness.ts';

/**
 * The coordinator's per-request cost (issue 13): a small JSON answer carries no ETag (no hash of
 * every body) and is handed to the socket as one chunk with its headers, not as two.
 * Checked once by turning ETags back on (app.ts): both cases failed.
 */
describe('the coordinator answers small JSON in one write, without an ETag', () => {
  let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
  let server: Server;
  /** What the socket was handed to write, chunk by chunk, as text. */
  const chunks: string[] = [];
  beforeAll(async () => {
    h = await inProcessCoordinator((await backendOrSkip('pglite'))!);
    server = createServer(h.app);
    server.on('connection', (socket: Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void }) => {
      const write = socket._write.bind(socket);
      const writev = socket._writev.bind(socket);
      socket._write = (...a) => (chunks.push(String(a[0])), write(...a));
      socket._writev = (...a) => ((a[0] as Array<{ chunk: unknown }>).forEach((c) => chunks.push(String(c.chunk))), writev(...a));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await h?.close();
  });

  const get = (path: string) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('sends no ETag', async () => {
    const res = await get('/healthz');
    expect(res.status).toBe(200);
    expect(res.headers.etag).toBeUndefined();
  });

  it('hands the socket headers and a small body as one chunk', async () => {
    chunks.length = 0;
    const res = await get('/healthz');
    expect(JSON.parse(res.body)).toEqual({ ok: true });
    // Node adds an empty chunk at the end (its finish callback); the answer itself is one string.
    const nonEmpty = chunks.filter((c) => c.length > 0);
    expect(nonEmpty).toHaveLength(1);
    expect(nonEmpty[0]).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n\{"ok":true\}$/);
  });
});
