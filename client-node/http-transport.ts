import http from 'node:http';
import https from 'node:https';

/** What the node reads of the coordinator's answer: its status, headers and whole body. */
export interface Answer {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

export interface Outgoing {
  method: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  /** The whole exchange, body included; past it the request is aborted with ETIMEDOUT. */
  timeoutMs: number;
}

/** One finished exchange, as `observeExchanges` reports it (bodies only; headers are not counted). */
export interface ExchangeRecord {
  url: URL;
  method: string;
  status: number;
  sentBytes: number;
  receivedBytes: number;
}

const observers = new Set<(record: ExchangeRecord) => void>();

/**
 * Tells `observe` of every exchange that got a whole answer, until the returned function is
 * called (the scale bench counts the bytes on the wire with it: bench/sim/traffic.ts).
 */
export function observeExchanges(observe: (record: ExchangeRecord) => void): () => void {
  observers.add(observe);
  return () => observers.delete(observe);
}

// Connections are kept open between requests, as fetch() did; Node unrefs an idle kept socket, so
// it never holds a finished node process open. TLS trust is Node's default (the system CAs and
// NODE_EXTRA_CA_CERTS), as it was for fetch().
const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };

/**
 * One HTTP(S) exchange with the coordinator, the answer read whole (so a connection cut mid-body
 * fails the exchange and the caller's retry covers it).
 *
 * Written on node:http rather than fetch() (issue 13, node CPU per round): a node makes ~4
 * requests a round, and Node 20's fetch costs 0.27-0.76 ms of CPU a request (WHATWG streams,
 * Headers and AbortSignal objects) where node:http costs 0.09-0.26 ms, 2.7-3.5x less
 * (bench/node-transport-bench.ts on this 2-core machine: GET of a 600-byte JSON answer and POST
 * of 19 KB to a local server in another process, 1,500 requests each after 200 of warm-up, two
 * passes).
 */
export function exchange(url: URL, out: Outgoing): Promise<Answer> {
  const transport = url.protocol === 'https:' ? https : http;
  const agent = agents[url.protocol as keyof typeof agents];
  if (!agent) return Promise.reject(new Error(`unsupported coordinator URL scheme ${url.protocol}`));
  const headers: Record<string, string | number> = { ...out.headers };
  if (out.body) headers['content-length'] = out.body.byteLength;
  return new Promise<Answer>((resolve, reject) => {
    const req = transport.request(url, { method: out.method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', fail);
      res.on('aborted', () => fail(Object.assign(new Error('the coordinator closed the connection mid-answer'), { code: 'ECONNRESET' })));
      res.on('end', () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        for (const observe of observers) observe({ url, method: out.method, status: res.statusCode ?? 0, sentBytes: out.body?.byteLength ?? 0, receivedBytes: body.byteLength });
        resolve(answer(res, body));
      });
    });
    const timer = setTimeout(() => req.destroy(Object.assign(new Error(`the coordinator did not answer within ${Math.round(out.timeoutMs / 1000)} s`), { code: 'ETIMEDOUT' })), out.timeoutMs);
    function fail(err: Error) {
      clearTimeout(timer);
      reject(err);
    }
    req.on('error', fail);
    req.end(out.body ? Buffer.from(out.body.buffer, out.body.byteOffset, out.body.byteLength) : undefined);
  });
}

function answer(res: http.IncomingMessage, body: Buffer): Answer {
  return {
    status: res.statusCode ?? 0,
    headers: {
      get(name: string) {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
    },
    async json() {
      return JSON.parse(body.toString('utf8'));
    },
    async arrayBuffer() {
      return body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
    },
  };
}
