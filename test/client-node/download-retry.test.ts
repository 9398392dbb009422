import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { CoordinatorClient } from '../../client-node/coordinator-client.ts';

/** A model download whose connection is cut mid-body is retried, like one cut before its headers. */
describe('CoordinatorClient.downloadModel', () => {
  let server: Server | undefined;
  afterEach(async () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  it('retries when the first answer is cut half-way through its body', async () => {
    const model = randomBytes(256 * 1024);
    let requests = 0;
    server = createServer((req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(model.length), 'fedmark-sha256': 'abc', 'fedmark-model-signature': Buffer.from('sig').toString('base64') });
      if (requests === 1) {
        // Half the promised bytes, then the connection drops.
        res.write(model.subarray(0, model.length / 2), () => res.destroy());
        return;
      }
      res.end(model);
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const retried: string[] = [];
    const client = new CoordinatorClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, (what) => retried.push(what));

    const got = await client.downloadModel('s1', 3);

    expect(requests).toBe(2);
    expect(retried).toEqual(['GET /v1/studies/s1/models/3']);
    expect(Buffer.from(got.bytes).equals(model)).toBe(true);
    expect(got).toMatchObject({ sha256: 'abc', signature: 'sig' });
  });
});
