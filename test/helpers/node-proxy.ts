import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';

/** Helpers for tests that run a real node (runNode) against an in-process coordinator over HTTP. */

export type Reply = { status: number; headers: IncomingHttpHeaders; body: Buffer };

/**
 * A proxy between the node and the coordinator that may rewrite the coordinator's answers, or
 * answer a request itself (`intercept`), never forwarding it.
 */
export function proxy(target: string, rewrite: (url: string, r: Reply) => Reply, intercept: (method: string, url: string) => Reply | undefined = () => undefined) {
  const upstream = new URL(target);
  const posts: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'POST') posts.push(req.url!);
      const own = intercept(req.method!, req.url!);
      if (own) {
        res.writeHead(own.status, { ...own.headers, 'content-length': String(own.body.length) });
        res.end(own.body);
        return;
      }
      const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        const body: Buffer[] = [];
        up.on('data', (c: Buffer) => body.push(c));
        up.on('end', () => {
          const r = rewrite(req.url!, { status: up.statusCode!, headers: { ...up.headers }, body: Buffer.concat(body) });
          const headers = { ...r.headers, 'content-length': String(r.body.length) };
          delete headers['transfer-encoding'];
          res.writeHead(r.status, headers);
          res.end(r.body);
        });
      });
      out.on('error', () => res.destroy());
      out.end(Buffer.concat(chunks));
    });
  });
  return new Promise<{ server: Server; url: string; posts: string[] }>((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, posts })));
}

export function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

export async function until<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}


/** An app (the in-process coordinator's) listening on a free loopback port, and its URL. */
export async function listenOnLoopback(app: { listen(port: number, host: string): Server }): Promise<{ server: Server; url: string }> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}
