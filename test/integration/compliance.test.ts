import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { cpSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { StudyStatus } from '../../protocols/messages.ts';
import { loadOrCreateIdentity, openUpdate } from '../../protocols/crypto/index.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { readAuditExport, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { rewriteAndResign } from '../audit/fixture.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const ADMIN = 'compliance-admin-token-0123456789';
const PASSPHRASE = 'compliance-coordinator-passphrase';
// Unique values planted in one node's rows: none may ever appear outside that node.
const CANARIES = ['ZZCANARYSTATE', 'canary-7f3a9e', '31337.424242', '777.123987'];

interface Recorded {
  method: string;
  url: string;
  headers: Record<string, unknown>;
  body: Buffer;
}

/** A recording proxy between one node and the coordinator: everything the node sends, verbatim. */
function recordingProxy(target: string, recorded: Recorded[]): Promise<{ server: Server; url: string }> {
  const upstream = new URL(target);
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        recorded.push({ method: req.method!, url: req.url!, headers: req.headers, body });
        const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
          res.writeHead(up.statusCode!, up.headers);
          up.pipe(res);
        });
        out.on('error', () => res.destroy());
        out.end(body);
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const address = server.address() as { port: number };
      resolve({ server, url: `http://127.0.0.1:${address.port}` });
    });
  });
}

/**
 * Compliance, end to end with real processes: raw data never leaves a node (canaries), layered
 * consent and data minimization on the node, and a node's own privacy ceiling.
 */
describe('compliance with real node processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-compliance-'));
  const dataDir = join(dir, 'db');
  const keyDir = join(dir, 'keys');
  const processes: RunningProcess[] = [];
  const recorded: Recorded[] = [];
  let proxy: Server | undefined;
  let status: StudyStatus;
  let dump = '';
  let coordinatorLog = '';
  let decryptedUpdates: Buffer[] = [];
  let ceiling = 0;
  const dataReports = new Map<string, { droppedNoConsent?: number; droppedFeatures?: string[] }>();

  beforeAll(async () => {
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', dataDir], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: keyDir, FEDMARK_KEY_PASSPHRASE: PASSPHRASE, DATABASE_URL: '' });
    processes.push(coordinator);
    const url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);
    const api = async (path: string, body?: unknown) => {
      const res = await fetch(url + path, { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
      return res.json();
    };

    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    spec.features.find((f) => f.name === 'state')!.category = 'precise-location';
    const area = table.header.indexOf('area_code');
    const header = [...table.header, 'consent'];
    const consentOf = (i: number) => ['basic', 'personalization', 'personalization', 'none'][i % 4];
    const dpSgd = { noiseMultiplier: 1.2, clipNorm: 1, samplingRate: 0.05, stepsPerRound: 20, learningRate: 0.5 };
    // The node with a ceiling affords one round, not two.
    ceiling = (computeEpsilon({ q: 0.05, sigma: 1.2, steps: 20, delta: 1e-5 }) + computeEpsilon({ q: 0.05, sigma: 1.2, steps: 40, delta: 1e-5 })) / 2;
    const study = await api('/v1/studies', {
      name: 'compliance',
      model: { kind: 'logreg' },
      features: spec,
      training: { localEpochs: 1, learningRate: 0.02 },
      rounds: 2,
      minNodesPerRound: 2,
      minNodesToStart: 3,
      roundDeadlineSeconds: 60,
      consent: { purpose: 'personalization', column: 'consent' },
      // Under DP the data-quality counts leave only if the study declares them public (issue 10).
      privacy: { accountant: 'rdp', delta: 1e-5, dpSgd, publicFields: ['status.data'] },
    });
    // The coordinator's profile for US-TX forbids nothing; one partner's own profile for the same
    // law is stricter (no precise location). That node applies the stricter of both, so it drops
    // the feature while the round goes ahead with every node.
    await api('/v1/policies', { jurisdiction: 'US-TX', minNodesPerAggregate: 2 });
    const lax = join(dir, 'us-tx-policy.json');
    const nodes = [
      { name: 'strict', region: 'area_code_408', args: ['--jurisdiction', 'US-TX', '--policy', join(dir, 'strict-policy.json')] },
      { name: 'canary', region: 'area_code_415', args: ['--jurisdiction', 'US-TX', '--policy', lax] },
      { name: 'capped', region: 'area_code_510', args: ['--max-epsilon', String(ceiling), '--jurisdiction', 'US-TX', '--policy', lax] },
    ];
    writeFileSync(join(dir, 'strict-policy.json'), JSON.stringify({ jurisdiction: 'US-TX', version: 1, forbiddenFeatureCategories: ['precise-location'] }));
    writeFileSync(lax, JSON.stringify({ jurisdiction: 'US-TX', version: 1 }));
    const { server, url: proxyUrl } = await recordingProxy(url, recorded);
    proxy = server;
    for (const n of nodes) {
      const rows = table.rows.filter((r) => r[area] === n.region).map((r, i) => [...r, consentOf(i)]);
      if (n.name === 'canary') {
        rows[1] = [...rows[1]];
        rows[1][table.header.indexOf('state')] = CANARIES[0];
        rows[1][table.header.indexOf('voice_mail_plan')] = CANARIES[1];
        rows[1][table.header.indexOf('total_day_minutes')] = CANARIES[2];
        rows[1][table.header.indexOf('total_eve_minutes')] = CANARIES[3];
      }
      mkdirSync(join(dir, n.name), { recursive: true });
      writeCsvTable(join(dir, n.name, 'data.csv'), header, rows);
      const { token } = await api('/v1/enrollment-tokens', { studyId: study.id, nodeName: n.name, region: n.region, jurisdiction: 'US-TX' });
      processes.push(
        runFedmark(['node', '--coordinator', n.name === 'canary' ? proxyUrl : url, '--token', token, '--data', join(dir, n.name, 'data.csv'), '--state-dir', join(dir, n.name, 'state'), '--ledger-dir', join(dir, 'ledgers'), '--backend', 'wasm', ...n.args]),
      );
    }
    for (;;) {
      status = StudyStatus.parse(await api(`/v1/studies/${study.id}`));
      if (status.state === 'completed') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await Promise.all(processes.map((p) => p.stop()));
    coordinatorLog = coordinator.logs.map((l) => JSON.stringify(l)).join('\n');
    // Everything the coordinator's database holds, as text.
    const { db } = await openDatabase({ dataDir });
    const tables = await sql<{ table_name: string }>`select table_name from information_schema.tables where table_schema = 'public'`.execute(db);
    for (const { table_name } of tables.rows) {
      const rows = await sql.raw(`select * from "${table_name}"`).execute(db);
      dump += JSON.stringify(rows.rows, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v));
    }
    const canaryNode = await db.selectFrom('nodes').select('public_key').where('name', '=', 'canary').executeTakeFirstOrThrow();
    // The last data report of each node, as the coordinator holds it (counts only).
    const reportEntries = await db.selectFrom('audit_log').select('data').where('kind', '=', 'node.status').orderBy('seq').execute();
    for (const e of reportEntries) {
      const d = JSON.parse(e.data) as { nodeId: string; data: { droppedNoConsent?: number; droppedFeatures?: string[] } | null };
      if (d.data) dataReports.set(d.nodeId, d.data);
    }
    await db.destroy();
    // What the canary node sent inside its sealed updates, decrypted with the coordinator's key.
    const identity = await loadOrCreateIdentity(keyDir, { name: 'fedmark coordinator', passphrase: PASSPHRASE });
    decryptedUpdates = await Promise.all(
      recorded.filter((r) => r.url.includes('/updates')).map(async (r) => Buffer.from(await openUpdate({ sealed: new Uint8Array(r.body), coordinatorPrivateKey: identity.privateKey, nodePublicKey: canaryNode.public_key! }))),
    );
  }, 240_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    proxy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('no canary leaves the node: not in its requests, its decrypted updates, the database or the logs', () => {
    expect(recorded.length).toBeGreaterThan(5);
    expect(decryptedUpdates.length).toBeGreaterThanOrEqual(1);
    const sent = recorded.map((r) => `${r.method} ${r.url} ${JSON.stringify(r.headers)} ${r.body.toString('latin1')}`).join('\n') + decryptedUpdates.map((b) => b.toString('latin1')).join('\n');
    for (const canary of CANARIES) {
      expect(sent).not.toContain(canary);
      expect(dump).not.toContain(canary);
      expect(coordinatorLog).not.toContain(canary);
    }
    // The check would catch a leak: the canaries are in the node's own file.
    const own = readFileSync(join(dir, 'canary', 'data.csv'), 'utf8');
    for (const canary of CANARIES) expect(own).toContain(canary);
    expect(dump.length).toBeGreaterThan(10_000);
  });

  it('the node trains only on rows whose consent covers the purpose, and drops features its policy forbids', () => {
    const reports = [...dataReports.values()];
    expect(reports.length).toBe(3);
    for (const r of reports) expect(r.droppedNoConsent).toBeGreaterThan(0);
    expect(reports.filter((r) => (r.droppedFeatures ?? []).includes('state'))).toHaveLength(1);
  });

  it('an auditor exports the log straight from the database and verifies it offline, against every node\'s witnessed checkpoints; tampering is named', async () => {
    const out = join(dir, 'audit');
    // The operator signs the manifest with the coordinator key (export straight from the database).
    const exported = runFedmark(['audit', 'export', '--data-dir', dataDir, '--key-dir', keyDir, '--out', out], { FEDMARK_KEY_PASSPHRASE: PASSPHRASE });
    expect(await exported.exited, exported.stderr.join('\n')).toBe(0);
    const witnesses = ['strict', 'canary', 'capped'].flatMap((name) => ['--witness', join(dir, name, 'state')]);
    const verify = runFedmark(['audit', 'verify', out, ...witnesses]);
    expect(await verify.exited, verify.stderr.join('\n')).toBe(0);
    const said = verify.logs.map((l) => String(l.raw ?? '')).join('\n');
    expect(said).toMatch(/^OK: \d+ entries, \d+ checkpoints/);
    expect(said).toMatch(/^manifest signed by [0-9a-f]{40} at /m);
    // Each node kept the checkpoints that came with its tasks, all of them in the export.
    for (const name of ['strict', 'canary', 'capped']) expect(said).toMatch(new RegExp(`^witness ${join(dir, name, 'state')}: [1-9]\\d* checkpoints? witnessed, all in the export`, 'm'));
    cpSync(out, join(dir, 'audit-genuine'), { recursive: true });
    const lines = readFileSync(join(out, 'entries.jsonl'), 'utf8').split('\n');
    const victim = lines.findIndex((l) => l.includes('"update.received"'));
    lines.splice(victim, 1); // delete one update's record
    writeFileSync(join(out, 'entries.jsonl'), lines.join('\n'));
    const tampered = runFedmark(['audit', 'verify', out]);
    expect(await tampered.exited).toBe(1);
    expect(tampered.stderr.join('\n')).toMatch(new RegExp(`FAILED: deleted at entry ${victim + 1}`));
  });

  it('the coordinator key\'s holder rewrites history and signs everything again: the export verifies alone, the nodes\' witnessed checkpoints expose it', async () => {
    const genuine = readAuditExport(join(dir, 'audit-genuine'));
    const identity = await loadOrCreateIdentity(keyDir, { name: 'fedmark coordinator', passphrase: PASSPHRASE });
    const victim = genuine.entries.find((e) => e.kind === 'update.received')!;
    const forged = await rewriteAndResign(genuine.entries, genuine.checkpoints, victim.seq, identity.privateKey);
    const out = join(dir, 'audit-rewritten');
    await writeAuditExport(out, { ...forged, coordinatorPublicKeyArmored: genuine.coordinatorPublicKeyArmored, exportedAt: new Date().toISOString(), source: 'rewritten', signingKey: identity.privateKey });
    const alone = runFedmark(['audit', 'verify', out]);
    expect(await alone.exited, alone.stderr.join('\n')).toBe(0);
    const witnessed = runFedmark(['audit', 'verify', out, '--witness', join(dir, 'strict', 'state')]);
    expect(await witnessed.exited).toBe(1);
    expect(witnessed.stderr.join('\n')).toMatch(/^FAILED: witness-conflict at entry \d+: witness .*strict.*: checkpoint #\d+ \(seq \d+, head [0-9a-f]{12}, signed \S+\), which the node received on \S+, conflicts with the export's checkpoint #\d+ .*: the history up to seq \d+ was rewritten and signed again/);
  });

  it('the capped node refuses the round that would pass its own epsilon ceiling', () => {
    expect(status.rounds.map((r) => r.phase)).toEqual(['completed', 'completed']);
    expect(status.rounds[0].participants).toHaveLength(3);
    const capped = status.nodes.find((n) => n.name === 'capped')!;
    expect(capped.state).toBe('privacy-ceiling');
    expect(capped.message).toMatch(/over its ceiling/);
    // The shared ledger of the node's data source (named in its state dir): round 1's DP-SGD spend
    // and its noised evaluation (q 1, one step; issue 10), each appended as one line.
    const ledgerFile = readFileSync(join(dir, 'capped', 'state', 'privacy-ledger.ref'), 'utf8').trim();
    expect(ledgerFile.startsWith(join(dir, 'ledgers'))).toBe(true);
    const spends = readFileSync(ledgerFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(spends.map((e) => [e.samplingRate, e.steps])).toEqual([[0.05, 20], [1, 1]]);
    expect(computeEpsilon({ q: 0.05, sigma: 1.2, steps: 20, delta: 1e-5 })).toBeLessThanOrEqual(ceiling);
  });
});
