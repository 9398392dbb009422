import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { loadCoordinatorConfig } from '../../coordinator/config.ts';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.ts';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));

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
    expect(() => loadCoordinatorConfig({}, { keyPassphrase: 'tls-key-passphrase' })).toThrow(/FEDMARK_ADMIN_TOKEN: required, not set/);
    expect(() => loadCoordinatorConfig({}, { adminToken: 'tls-admin-token-0123456789', keyPassphrase: 'short' })).toThrow(/at least 12 characters/);
  });
});

/**
 * A round between real processes over HTTPS, as the README's "HTTPS" section sets it up: the
 * coordinator serves a certificate of a private CA, nodes trust it through NODE_EXTRA_CA_CERTS.
 * A node that does not trust the certificate never gets through.
 */
describe('a federated round over HTTPS between real processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-tls-round-'));
  const ADMIN = 'tls-round-admin-token-0123456789';
  const processes: RunningProcess[] = [];
  let url = '';
  /** The operator's calls, over HTTPS with the private CA (Node's fetch takes no CA option). */
  const api = (path: string, init: { method?: string; body?: string } = {}) =>
    new Promise<any>((resolve, reject) => {
      const req = request(url + path, { method: init.method ?? 'GET', ca: readFileSync(join(dir, 'cert.pem')), headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => ((res.statusCode ?? 500) < 300 ? resolve(JSON.parse(text)) : reject(new Error(`${path}: ${res.statusCode} ${text}`))));
      });
      req.on('error', reject);
      req.end(init.body);
    });
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrolls, trains and evaluates over TLS; an untrusting node is refused by its own TLS check', async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', join(dir, 'db')], {
      FEDMARK_ADMIN_TOKEN: ADMIN,
      FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'),
      FEDMARK_TLS_CERT: join(dir, 'cert.pem'),
      FEDMARK_TLS_KEY: join(dir, 'key.pem'),
      DATABASE_URL: '',
    });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);
    // `fedmark coordinator` optimizes without inlining (cli/v8-tuning.ts, test/cli/v8-tuning.test.ts).
    expect((await coordinator.waitForLog((l) => l.msg === 'v8 tuning')).v8Flags).toEqual(['--no-turbo-inlining']);
    expect(url).toMatch(/^https:\/\//);

    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const study = await api('/v1/studies', {
      method: 'POST',
      body: JSON.stringify({ name: 'tls', model: { kind: 'logreg' }, features: spec, training: { localEpochs: 5, learningRate: 0.05 }, rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 60 }),
    });
    const nodeEnv = { NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') };
    for (const [name, rows, env] of [
      ['tls-a', table.rows.slice(0, 400), nodeEnv],
      ['tls-b', table.rows.slice(400, 800), nodeEnv],
      ['untrusting', table.rows.slice(800, 900), {}],
    ] as const) {
      const nodeDir = join(dir, name);
      mkdirSync(nodeDir, { recursive: true });
      writeCsvTable(join(nodeDir, 'data.csv'), table.header, rows.map((r) => [...r]));
      const { token } = await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: name, region: 'us', jurisdiction: 'US-CA-CCPA' }) });
      processes.push(runFedmark(['node', '--coordinator', url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'wasm'], env));
    }
    let status: { state: string; nodes: Array<{ name: string }>; rounds: Array<{ phase: string; validationAuc: number | null; updatesReceived: number }> };
    for (;;) {
      status = await api(`/v1/studies/${study.id}`);
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(status.rounds[0].phase).toBe('completed');
    expect(status.rounds[0].updatesReceived).toBe(2);
    // `fedmark node` compiles its round code eagerly and optimizes only its hot code (cli/v8-tuning.ts).
    expect((await processes[1].waitForLog((l) => l.msg === 'v8 tuning')).v8Flags).toEqual(['--always-sparkplug', '--interrupt-budget=270336']);
    expect(status.rounds[0].validationAuc).toBeGreaterThan(0.5);
    // The node without the CA never enrolled: its TLS check refused the coordinator's certificate.
    expect(status.nodes.map((n) => n.name).sort()).toEqual(['tls-a', 'tls-b']);
    const untrusting = processes[3];
    expect(untrusting.logs.some((l) => l.msg === 'sent model update')).toBe(false);
    // ... and its log says why (the certificate), not just that a request failed.
    await untrusting.waitForLog((l) => l.msg === 'retrying');
    expect(untrusting.logs.find((l) => l.msg === 'retrying')!.err).toMatch(/certificate.*DEPTH_ZERO_SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT.*certificate/i);
  }, 180_000);
});
