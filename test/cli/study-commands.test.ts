import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { churnStudy, coordinatorProcess, nodeProcess, type CoordinatorProcess } from '../helpers/federation.ts';
import { BIN, runFedmark, type RunningProcess } from '../helpers/processes.ts';

/**
 * `fedmark study create|ls|status|watch|stop` as an operator runs them: real CLI processes against
 * a real coordinator process on PostgreSQL, with real node processes for a short study.
 */

type Database = Awaited<ReturnType<DatabaseBackend['create']>>;

let dir = '';
let database: Database | undefined;
let coordinator: CoordinatorProcess | undefined;
const processes: RunningProcess[] = [];

/** `fedmark <args>` to its exit: code, stdout, stderr. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, FEDMARK_COORDINATOR: coordinator!.url, FEDMARK_TOKEN: coordinator!.admin }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The churn study as a YAML file (`fedmark study create` reads it), with `extra` fields. */
function studyFile(name: string, extra: Record<string, unknown> = {}): { path: string; regions: ReturnType<typeof churnStudy>['regions'] } {
  const { config, regions } = churnStudy(dir, { name, roundDeadlineSeconds: 300, evaluationDeadlineSeconds: 300, ...extra });
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, stringify(config));
  return { path, regions };
}

beforeAll(async () => {
  const backend = await backendOrSkip('postgres');
  if (!backend) return;
  dir = mkdtempSync(join(tmpdir(), 'fedmark-study-cli-'));
  database = await backend.create();
  coordinator = await coordinatorProcess(dir, database);
  await coordinator.start();
}, 240_000);

afterAll(async () => {
  await Promise.all([...processes, ...(coordinator?.all ?? [])].map((p) => p.stop()));
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('fedmark study (CLI) against a coordinator on PostgreSQL', () => {
  it('a YAML error names the file, the line and the field; nothing is sent', async (ctx) => {
    if (!coordinator) return ctx.skip();
    const path = join(dir, 'broken.yaml');
    writeFileSync(path, ['name: broken', 'model:', '  kind: logreg', 'features:', '  target: { column: churn, positive: "yes" }', '  features:', '    - { name: a, kind: numeric, mean: 0, std: 1, fill: 0 }', 'rounds: many', ''].join('\n'));
    const bad = await cli(['study', 'create', '--config', path]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(new RegExp(`${path.replace(/[.]/g, '\\.')}:8:9: rounds: .*expected number`));
    writeFileSync(path, 'name: x\nmodel: {kind: logreg\n');
    const syntax = await cli(['study', 'create', '--config', path]);
    expect(syntax.code).toBe(2);
    expect(syntax.stderr).toMatch(/broken\.yaml:3:1: /);
    expect(JSON.parse((await cli(['study', 'ls', '--json'])).stdout)).toEqual([]);
  }, 300_000);

  it('--dry-run names every rule a planned jurisdiction would refuse and the privacy plan, and creates nothing; creation is refused naming the field\'s line', async (ctx) => {
    if (!coordinator) return ctx.skip();
    const { path } = studyFile('eu-plan', { minNodesPerRound: 2, minNodesToStart: 2, jurisdictions: ['US-CA-CCPA', 'CN-PIPL'] });
    const plan = await cli(['study', 'create', '--config', path, '--dry-run']);
    expect(plan.code).toBe(3);
    expect(plan.stdout).toMatch(/would be REFUSED \(3 policy rules broken\); nothing was created/);
    expect(plan.stdout).toMatch(/US-CA-CCPA v1 .*: ok/);
    expect(plan.stdout).toMatch(/- rule min-nodes \(\S+eu-plan\.yaml:\d+:\d+ minNodesPerRound\): CN-PIPL v1: aggregates need at least 3 nodes; the study allows 2/);
    expect(plan.stdout).toMatch(/- rule dp-required .*CN-PIPL v1: differential privacy/);
    expect(plan.stdout).toMatch(/privacy: no differential privacy/);
    const json = JSON.parse((await cli(['study', 'create', '--config', path, '--dry-run', '--json'])).stdout);
    expect(json.violations.map((v: { rule: string }) => v.rule)).toEqual(['min-nodes', 'dp-required', 'max-epsilon-total']);
    expect(JSON.parse((await cli(['study', 'ls', '--json'])).stdout)).toEqual([]);

    const refused = await cli(['study', 'create', '--config', path]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/eu-plan\.yaml:\d+:\d+: minNodesPerRound: POST \/v1\/studies: 409 POLICY_VIOLATION the study breaks CN-PIPL v1 min-nodes, CN-PIPL v1 dp-required, CN-PIPL v1 max-epsilon-total/);
    expect(JSON.parse((await cli(['study', 'ls', '--json'])).stdout)).toEqual([]);
  }, 300_000);

  it('create, then ls, status and watch follow a short study with three nodes to its end; watch exits 0', async (ctx) => {
    if (!coordinator) return ctx.skip();
    const { path, regions } = studyFile('churn-cli', { rounds: 2, jurisdictions: ['US-CA-CCPA'], training: { localEpochs: 1, learningRate: 0.05, validationFraction: 0.2 } });
    const created = await cli(['study', 'create', '--config', path, '--json']);
    expect(created.code).toBe(0);
    const { id } = JSON.parse(created.stdout);
    const ls = await cli(['study', 'ls']);
    expect(ls.stdout).toMatch(new RegExp(`${id}\\s+churn-cli\\s+binary/logreg\\s+running\\s+0/2`));

    const watch = runFedmark(['study', 'watch', '--study', id, '--coordinator', coordinator!.url, '--token', coordinator!.admin]);
    processes.push(watch);
    await watch.waitForLog((l) => String(l.raw ?? '').startsWith('watching study'), 120_000);
    for (const { region, csv } of regions) {
      const { token } = await (await coordinator!.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: id, nodeName: region, region, jurisdiction: 'US-CA-CCPA' }) })).json();
      processes.push(nodeProcess(coordinator!.url, token, csv));
    }
    expect(await watch.exited).toBe(0);
    const lines = watch.logs.map((l) => String(l.raw ?? JSON.stringify(l)));
    expect(lines).toContain('round 1/2 completed: 3/3 nodes reported');
    expect(lines).toContain('round 2/2 completed: 3/3 nodes reported');
    expect(lines).toContain('rounds: 2/2 done');

    const status = JSON.parse((await cli(['study', 'status', '--study', id, '--json'])).stdout);
    expect(status).toMatchObject({ id, state: 'completed', stopReason: null, roundsDone: 2, roundsPlanned: 2, nodes: 3, participants: 3, privacy: { dp: false } });
    expect(status.lastMetrics.round).toBe(2);
    expect(status.lastMetrics.validationAuc).toBeGreaterThan(0.5);
    const text = (await cli(['study', 'status', '--study', id])).stdout;
    expect(text).toMatch(/: completed\nrounds: 2\/2 done\nnodes: 3 enrolled, 3 in the latest round\nlast metrics \(round 2\): mean local loss \d\.\d{4}, validation AUC \d\.\d{4}/);
    const listed = JSON.parse((await cli(['study', 'ls', '--json'])).stdout);
    expect(listed.find((s: { id: string }) => s.id === id)).toMatchObject({ state: 'completed', roundsDone: 2, roundsPlanned: 2 });
  }, 600_000);

  it('stop: watch exits 3 with the reason, which every view shows; a second stop changes nothing', async (ctx) => {
    if (!coordinator) return ctx.skip();
    const { path } = studyFile('to-stop', { rounds: 5 });
    const { id } = JSON.parse((await cli(['study', 'create', '--config', path, '--json'])).stdout);
    const watch = runFedmark(['study', 'watch', '--study', id, '--coordinator', coordinator!.url, '--token', coordinator!.admin]);
    processes.push(watch);
    await watch.waitForLog((l) => String(l.raw ?? '').startsWith('watching study'), 120_000);
    const stop = await cli(['study', 'stop', '--study', id, '--reason', 'the partners asked to pause']);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toMatch(new RegExp(`^study ${id} stopped by admin:\\S+: the partners asked to pause`));
    expect(await watch.exited).toBe(3);
    expect(watch.stderr.join('\n')).toMatch(new RegExp(`study ${id} stopped: the partners asked to pause`));

    const status = await cli(['study', 'status', '--study', id]);
    expect(status.stdout).toMatch(/: stopped\nstopped by admin:\S+ at \S+: the partners asked to pause/);
    expect((await cli(['study', 'ls'])).stdout).toMatch(new RegExp(`${id}\\s+to-stop\\s+binary/logreg\\s+stopped\\s+0/5\\s+\\S+ \\S+\\s+the partners asked to pause`));
    const api = async (p: string) => (await coordinator!.api(p)).json();
    expect(await api(`/v1/studies/${id}`)).toMatchObject({ state: 'stopped', stopReason: 'the partners asked to pause' });
    expect((await api('/v1/studies')).studies.find((s: { id: string }) => s.id === id)).toMatchObject({ state: 'stopped', stopReason: 'the partners asked to pause' });
    expect(await api(`/v1/studies/${id}/privacy`)).toMatchObject({ state: 'stopped', stopReason: 'the partners asked to pause' });

    const again = await cli(['study', 'stop', '--study', id, '--reason', 'again', '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ state: 'stopped', stopReason: 'the partners asked to pause', changed: false });
    // Watching a stopped study ends at once, non-zero, with the reason.
    const late = await cli(['study', 'watch', '--study', id]);
    expect(late.code).toBe(3);
    expect(late.stderr).toMatch(/stopped: the partners asked to pause/);
  }, 300_000);
});
