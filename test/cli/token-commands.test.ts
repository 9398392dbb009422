import '../helpers/isolated-env.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';
import { testNodeKey, tinyStudy } from '../coordinator/harness.ts';
import { main } from '../../cli/main.ts';

const ADMIN = 'token-commands-admin-token-0123456789';
const CSV = ['a,b,c,y', ...Array.from({ length: 40 }, (_, i) => `${(i % 7) - 3},${(i % 5) / 2},${'pqr'[i % 3]},${i % 2}`)].join('\n') + '\n';

interface NodeRow {
  studyId: string;
  name: string;
  region: string;
  jurisdiction: string | null;
  state: string;
  lastSeenAt: string | null;
  rounds: number;
}

/**
 * `fedmark token issue`, `token ls` and `node ls` against a coordinator process on PostgreSQL:
 * the printed command line enrolls real node processes that train; the coordinator refuses
 * a token for a jurisdiction whose policy the study breaks; each role lists what it may see.
 */
describe('fedmark token issue / token ls / node ls on PostgreSQL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-token-cli-'));
  const processes: RunningProcess[] = [];
  let drop: (() => Promise<void>) | undefined;
  let url = '';
  let studyId = '';
  let otherStudyId = '';
  const issued: Array<{ token: string; command: string }> = [];

  /**
   * `fedmark <args>` in this process (the whole program, cli/main.ts main(): its error handling and
   * exit code), against the coordinator process: stdout lines (JSON parsed when JSON), stderr.
   */
  async function cli(args: string[], token = ADMIN) {
    let stdout = '';
    let stderr = '';
    const out = process.stdout.write;
    const err = process.stderr.write;
    const before = process.exitCode;
    process.exitCode = 0;
    process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
    process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
    try {
      await main(['node', 'fedmark', ...args, '--coordinator', url, '--token', token]);
    } finally {
      process.stdout.write = out;
      process.stderr.write = err;
    }
    const code = Number(process.exitCode ?? 0);
    process.exitCode = before;
    const text = stdout.split('\n').filter((l) => l !== '');
    const out2 = text.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { raw: l };
      }
    });
    return { code, out: out2, text, stderr: stderr.trim() };
  }

  const api = async (path: string, body?: unknown) => {
    const res = await fetch(url + path, { method: body === undefined ? 'GET' : 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<Record<string, unknown>>;
  };

  beforeAll(async () => {
    const backend = await backendOrSkip('postgres');
    if (!backend) return;
    const database = await backend.create();
    drop = database.drop;
    const coordinator = runFedmark(['coordinator', '--port', '0'], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'keys'), DATABASE_URL: database.databaseUrl ?? '', FEDMARK_MAX_TASK_WAIT_SECONDS: '2' });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening', 120_000)).url);
    studyId = String((await api('/v1/studies', tinyStudy({ rounds: 1, minNodesPerRound: 2, minNodesToStart: 2, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600 }))).id);
    otherStudyId = String((await api('/v1/studies', tinyStudy({ name: 'other', rounds: 1, minNodesPerRound: 2, minNodesToStart: 3 }))).id);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('issues a token as text and as JSON, each with the command line a partner runs; real nodes enroll with it and train', async (ctx) => {
    if (!url) return ctx.skip();
    const text = await cli(['token', 'issue', '--study', studyId, '--node-name', 'north', '--region', 'r-north', '--jurisdiction', 'US-CA-CCPA', '--expires-in', '2h']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.text[0]).toMatch(/^fmenroll/);
    const command = text.text.find((l) => l.trim().startsWith('fedmark node '))!.trim();
    expect(command).toBe(`fedmark node --coordinator ${url} --token ${text.text[0]} --jurisdiction US-CA-CCPA --state-dir .fedmark/node-north --data PATH/TO/DATA.csv`);
    expect(text.text.join('\n')).toMatch(new RegExp(`node "north" \\(region r-north, jurisdiction US-CA-CCPA\\) in study ${studyId}; usable once, until `));
    issued.push({ token: text.text[0], command });

    const json = await cli(['token', 'issue', '--study', studyId, '--node-name', 'south', '--region', 'r-south', '--jurisdiction', 'US-CA-CCPA', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const body = json.out[0] as { token: string; command: string; studyId: string; nodeName: string; region: string; jurisdiction: string; expiresAt: string };
    expect(body).toMatchObject({ studyId, nodeName: 'south', region: 'r-south', jurisdiction: 'US-CA-CCPA' });
    // Default lifetime: one hour.
    expect(Date.parse(body.expiresAt) - Date.now()).toBeGreaterThan(50 * 60_000);
    expect(body.command).toContain(`--token ${body.token} --jurisdiction US-CA-CCPA`);
    issued.push(body);

    // The partner runs the printed command, with their own data path and state folder.
    const nodes = issued.map(({ command: line }, i) => {
      const nodeDir = join(dir, `partner-${i}`);
      mkdirSync(nodeDir, { recursive: true });
      writeFileSync(join(nodeDir, 'data.csv'), CSV);
      const args = line.split(' ').slice(1).map((w) => (w === 'PATH/TO/DATA.csv' ? join(nodeDir, 'data.csv') : w.startsWith('.fedmark/') ? join(nodeDir, w) : w));
      const p = runFedmark([...args, '--backend', 'cpu']);
      processes.push(p);
      return p;
    });
    for (const p of nodes) {
      expect(await p.exited, p.stderr.join('\n')).toBe(0);
      expect(p.logs.some((l) => l.msg === 'enrolled' && l.studyId === studyId)).toBe(true);
      expect(p.logs.some((l) => l.msg === 'sent model update')).toBe(true);
    }
  }, 300_000);

  it('refuses a token for a jurisdiction whose policy the study breaks, naming the rule', async (ctx) => {
    if (!url) return ctx.skip();
    const refused = await cli(['token', 'issue', '--study', otherStudyId, '--node-name', 'paris', '--region', 'r-eu', '--jurisdiction', 'EU-GDPR']);
    expect(refused.code).toBe(1);
    expect(refused.stderr.split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/POST \/v1\/enrollment-tokens: 409 POLICY_VIOLATION study \S+ breaks the EU-GDPR policy, so a node under it could never take part \(rule min-nodes of EU-GDPR v1\)/);
    expect(refused.stderr).toMatch(/\[dp-required\] EU-GDPR v1: differential privacy \(central, client-level\) is required/);
    // The same study under a law it respects gets its token.
    const ok = await cli(['token', 'issue', '--study', otherStudyId, '--node-name', 'la', '--region', 'r-north', '--jurisdiction', 'US-CA-CCPA', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    // A bad --expires-in names the flag.
    const bad = await cli(['token', 'issue', '--study', otherStudyId, '--node-name', 'x', '--region', 'r', '--jurisdiction', 'US-CA-CCPA', '--expires-in', '3w']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--expires-in must be a positive duration of at most 30d.*got "3w"/);
  }, 120_000);

  it('token ls lists the tokens, used or not, never the token itself', async (ctx) => {
    if (!url) return ctx.skip();
    const ls = await cli(['token', 'ls', '--json']);
    expect(ls.code, ls.stderr).toBe(0);
    const tokens = (ls.out[0] as { tokens: Array<{ nodeName: string; status: string; nodeId: string | null; tokenHashPrefix: string }> }).tokens;
    expect(tokens.map((t) => [t.nodeName, t.status]).sort()).toEqual([['la', 'unused'], ['north', 'used'], ['south', 'used']]);
    expect(JSON.stringify(ls.out)).not.toContain(issued[0].token);
    const text = await cli(['token', 'ls', '--study', studyId]);
    expect(text.text[0]).toMatch(/^HASH\s+STUDY\s+NODE\s+REGION\s+JURISDICTION\s+STATUS\s+WHEN$/);
    expect(text.text).toHaveLength(3);
  }, 120_000);

  it('node ls: admin and auditor see every node, an analyst only its region\'s', async (ctx) => {
    if (!url) return ctx.skip();
    const auditor = String((await api('/v1/tokens', { role: 'auditor', name: 'aud' })).token);
    const north = String((await api('/v1/tokens', { role: 'analyst', name: 'north team', region: 'r-north' })).token);
    const nowhere = String((await api('/v1/tokens', { role: 'analyst', name: 'empty team', region: 'r-none' })).token);
    // A node enrolled in the other study, in region r-north: visible to that region across studies.
    const la = await cli(['token', 'issue', '--study', otherStudyId, '--node-name', 'la2', '--region', 'r-north', '--jurisdiction', 'US-CA-CCPA', '--json']);
    const { publicKey } = await testNodeKey(0);
    const enrolled = await fetch(`${url}/v1/nodes/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: (la.out[0] as { token: string }).token, publicKey }) });
    expect(enrolled.status).toBe(201);

    const list = async (token: string, study?: string) => {
      const r = await cli(['node', 'ls', '--json', ...(study ? ['--study', study] : [])], token);
      expect(r.code, r.stderr).toBe(0);
      return (r.out[0] as { nodes: NodeRow[] }).nodes.map((n) => `${n.name}/${n.region}/${n.rounds}`);
    };
    expect(await list(ADMIN, studyId)).toEqual(['north/r-north/1', 'south/r-south/1']);
    expect(await list(ADMIN)).toHaveLength(3);
    expect(await list(auditor)).toEqual(await list(ADMIN));
    expect((await list(north)).sort()).toEqual(['la2/r-north/0', 'north/r-north/1']);
    expect(await list(north, studyId)).toEqual(['north/r-north/1']);
    expect(await list(nowhere)).toEqual([]);

    const text = await cli(['node', 'ls', '--study', studyId]);
    expect(text.text[0]).toMatch(/^NAME\s+REGION\s+JURISDICTION\s+STATE\s+LAST SEEN\s+ROUNDS$/);
    expect(text.text[1]).toMatch(/^north\s+r-north\s+US-CA-CCPA\s+\S+\s+\d{4}-\d\d-\d\dT\S+\s+1$/);
    // An unknown study is a 404 for the admin, said plainly.
    const missing = await cli(['node', 'ls', '--study', 'no-such-study']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/404 NOT_FOUND study no-such-study does not exist/);
  }, 180_000);
});
