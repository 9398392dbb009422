import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { loadCoordinatorConfig } from '../../coordinator/config.ts';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.ts';

/** HTTPS when a certificate is configured; plain HTTP only on loopback unless explicitly allowed. */
describe('transport security', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-tls-'));
  let coordinator: RunningCoordinator;
  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const config = loadCoordinatorConfig({}, { adminToken: 'tls-admin-token-0123456789', keyPassphrase: 'tls-key-passphrase', keyDir: join(dir, 'keys'), dataDir: join(dir, 'db'), port: 0, tlsCert: join(dir, 'cert.pem'), tlsKey: join(dir, 'key.pem') });
    coordinator = await startCoordinator(config, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await coordinator?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves HTTPS with the configured certificate', async () => {
    expect(coordinator.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const body = await new Promise<string>((resolve, reject) => {
      request(`${coordinator.url}/healthz`, { ca: readFileSync(join(dir, 'cert.pem')) }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(text));
      })
        .on('error', reject)
        .end();
    });
    expect(JSON.parse(body)).toEqual({ ok: true });
  });

  it('refuses plain HTTP off loopback unless explicitly allowed, and half a TLS configuration', () => {
    const base = { adminToken: 'tls-admin-token-0123456789', keyPassphrase: 'tls-key-passphrase' };
    expect(() => loadCoordinatorConfig({}, { ...base, host: '0.0.0.0' })).toThrow(/refusing to serve plain HTTP off loopback/);
    expect(loadCoordinatorConfig({ FEDMARK_ALLOW_INSECURE_REMOTE: '1' }, { ...base, host: '0.0.0.0' }).host).toBe('0.0.0.0');
    expect(loadCoordinatorConfig({}, { ...base, host: '0.0.0.0', tlsCert: 'c.pem', tlsKey: 'k.pem' }).host).toBe('0.0.0.0');
    expect(() => loadCoordinatorConfig({}, { ...base, tlsCert: 'c.pem' })).toThrow(/both FEDMARK_TLS_CERT and FEDMARK_TLS_KEY/);
    expect(() => loadCoordinatorConfig({}, { keyPassphrase: 'tls-key-passphrase' })).toThrow(/adminToken/);
    expect(() => loadCoordinatorConfig({}, { adminToken: 'tls-admin-token-0123456789', keyPassphrase: 'short' })).toThrow(/at least 12 characters/);
  });
});
