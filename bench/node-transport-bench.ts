/**
 * The node's HTTP transport (issue 13, node CPU per round): CPU milliseconds per request of
 * Node's fetch() against the node's own node:http exchange (client-node/http-transport.ts), the
 * same requests to the same local server, which runs in a child process so that only the
 * client's CPU is counted (process.cpuUsage; wall time beside it).
 *
 *   node bin/run-ts.js bench/node-transport-bench.ts [--n 1500]
 *
 * Two requests a node makes every round: a GET answered with ~600 bytes of JSON (a task poll),
 * and a POST of 19 KB (a sealed update of the demo's MLP). One JSON line per figure.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exchange } from '../client-node/http-transport.ts';

export interface TransportFigure { figure: string; transport: 'fetch' | 'node:http'; cpuMsPerRequest: number; wallMsPerRequest: number; n: number }

const SERVER = `
const http = require('node:http');
const answer = JSON.stringify({ kind: 'fit', pad: 'x'.repeat(600) });
const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) }); res.end(answer); });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
`;

async function measure(figure: string, transport: TransportFigure['transport'], n: number, op: () => Promise<unknown>): Promise<TransportFigure> {
  for (let i = 0; i < 200; i++) await op(); // warm-up: JIT, connections
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await op();
  const cpu = process.cpuUsage(cpu0);
  return { figure, transport, cpuMsPerRequest: +((cpu.user + cpu.system) / 1000 / n).toFixed(4), wallMsPerRequest: +((performance.now() - t0) / n).toFixed(4), n };
}

export async function nodeTransportBench(n = 1500): Promise<TransportFigure[]> {
  const server = spawn(process.execPath, ['-e', SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(server.stdout!, 'data')) as [Buffer];
    const url = new URL(`http://127.0.0.1:${line.toString().trim()}/v1/tasks/next`);
    const headers = { authorization: 'Bearer fmnode_0123456789abcdef', 'fedmark-signature': 'x'.repeat(200) };
    const update = new Uint8Array(19_000).fill(7);
    const viaFetch = async (method: string, body?: Uint8Array) => (await fetch(url, { method, headers, body: body as BodyInit | undefined, signal: AbortSignal.timeout(120_000) })).json();
    const viaExchange = async (method: string, body?: Uint8Array) => (await exchange(url, { method, headers, body, timeoutMs: 120_000 })).json();
    const figures: TransportFigure[] = [];
    // Alternated, twice: a figure that drifts with the machine shows as a difference between passes.
    for (let pass = 0; pass < 2; pass++) {
      figures.push(await measure('GET, 600-byte JSON answer', 'fetch', n, () => viaFetch('GET')));
      figures.push(await measure('GET, 600-byte JSON answer', 'node:http', n, () => viaExchange('GET')));
      figures.push(await measure('POST of 19 KB', 'fetch', n, () => viaFetch('POST', update)));
      figures.push(await measure('POST of 19 KB', 'node:http', n, () => viaExchange('POST', update)));
    }
    return figures;
  } finally {
    server.stdin!.end();
    server.kill();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { n: { type: 'string' } } });
  for (const f of await nodeTransportBench(values.n ? Number(values.n) : undefined)) console.log(JSON.stringify(f));
  process.exit(0);
}
