import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseInitFrom } from '../../cli/study-command.ts';
import { ADMIN, bytesOrJson, inProcessCoordinator, tinyStudy, type Harness } from '../coordinator/harness.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { BIN } from '../helpers/processes.ts';

/**
 * `fedmark study create --init-from STUDY[:VERSION]` (issue 9 warm start): real CLI processes
 * against a coordinator listening on a real port in this process (PGlite). The flag reaches the
 * study config, the dry run names the model it would start from, refusals name the flag, and
 * `fedmark model verify` prints the source in the signed part of the lineage.
 */

let h: Harness | undefined;
let server: Server | undefined;
let url = '';
let dir = '';

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, FEDMARK_COORDINATOR: url, FEDMARK_TOKEN: ADMIN }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function studyFile(name: string, config: Record<string, unknown>): string {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, stringify(config));
  return path;
}

beforeAll(async () => {
  const backend = await backendOrSkip('pglite');
  if (!backend) return;
  dir = mkdtempSync(join(tmpdir(), 'fedmark-init-from-cli-'));
  h = await inProcessCoordinator(backend);
  server = h.app.listen(0, '127.0.0.1');
  await new Promise((r) => server!.once('listening', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 120_000);

afterAll(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  await h?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('parseInitFrom (--init-from STUDY[:VERSION])', () => {
  it('takes the version after the last colon when it is digits; ids may hold colons themselves', () => {
    expect(parseInitFrom('study_abc')).toEqual({ study: 'study_abc' });
    expect(parseInitFrom('study_abc:4')).toEqual({ study: 'study_abc', version: 4 });
    expect(parseInitFrom('team:q3:0')).toEqual({ study: 'team:q3', version: 0 });
    expect(parseInitFrom('team:q3')).toEqual({ study: 'team:q3' });
    expect(() => parseInitFrom('bad id')).toThrow(InvalidArgumentError);
    expect(() => parseInitFrom(':3')).toThrow(/"" is not a study id/);
  });
});

describe('fedmark study create --init-from (real CLI processes, coordinator in process)', () => {
  it('the flag reaches the config: the dry run names the source model, creation copies it, the study and verify name it', async (ctx) => {
    if (!h) return ctx.skip();
    const source = await h.createStudy(tinyStudy({ name: 'q3', seed: 3 }));
    const sourceSha = String((await h.admin('get', `/v1/studies/${source}/models/0`).buffer(true).parse(bytesOrJson)).headers['fedmark-sha256']);
    expect(sourceSha).toMatch(/^[0-9a-f]{64}$/);
    const path = studyFile('q4', tinyStudy({ name: 'q4', seed: 7 }) as Record<string, unknown>);

    const plan = await cli(['study', 'create', '--config', path, '--init-from', `${source}:0`, '--dry-run']);
    expect(plan.stderr).toBe('');
    expect(plan.code).toBe(0);
    expect(plan.stdout).toContain(`round-0 model: initialized from study ${source} version 0 (sha256 ${sourceSha})`);
    const seeded = await cli(['study', 'create', '--config', path, '--dry-run']);
    expect(seeded.stdout).toMatch(/round-0 model: seeded \(seed 7, sha256 [0-9a-f]{64}\)/);

    const created = await cli(['study', 'create', '--config', path, '--init-from', source]);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(new RegExp(`^created study (\\S+) from .*q4\\.yaml \\(round-0 model ${sourceSha.slice(0, 12)}, initialized from study ${source} version 0 \\(sha256 ${sourceSha}\\)\\)`));
    const id = /^created study (\S+)/.exec(created.stdout)![1];
    const status = (await h.admin('get', `/v1/studies/${id}`)).body;
    expect(status.config.initFrom).toEqual({ study: source, version: 0, sha256: sourceSha });
    const shown = await cli(['study', 'status', '--study', id]);
    expect(shown.stdout).toContain(`round-0 model: initialized from study ${source} version 0 (sha256 ${sourceSha})`);

    // The signed configuration carries the source: verify prints it with what the statement covers.
    const verify = await cli(['model', 'verify', '--study', id, '--version', '0']);
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);
    expect(verify.stdout).toContain(`round-0 model: initialized from study ${source} version 0 (sha256 ${sourceSha})`);
    expect(verify.stdout.indexOf('round-0 model:')).toBeLessThan(verify.stdout.indexOf('not signed:'));

    // An export's lineage.json says it too, and offline verify holds it to the signed configuration.
    const out = join(dir, 'export-q4');
    const exported = await cli(['model', 'export', '--study', id, '--version', '0', '--format', 'tfjs', '--out', out]);
    expect(exported.code, exported.stderr).toBe(0);
    const lineagePath = join(out, 'lineage.json');
    const lineage = JSON.parse(readFileSync(lineagePath, 'utf8'));
    expect(lineage.initializedFrom).toBe(`round-0 model: initialized from study ${source} version 0 (sha256 ${sourceSha})`);
    const offline = await cli(['model', 'verify', '--model', out]);
    expect(offline.code, offline.stderr).toBe(0);
    expect(offline.stdout).toContain(lineage.initializedFrom);
    writeFileSync(lineagePath, JSON.stringify({ ...lineage, initializedFrom: 'round-0 model: seeded (seed 7)' }));
    const forged = await cli(['model', 'verify', '--model', out]);
    expect(forged.code).toBe(1);
    expect(forged.stderr).toMatch(/lineage\.json: field initializedFrom is "round-0 model: seeded \(seed 7\)", but the signed configuration says "round-0 model: initialized from study/);
  }, 240_000);

  it('refusals name the flag: a malformed value (before anything is sent), an unknown study, a model that does not fit', async (ctx) => {
    if (!h) return ctx.skip();
    const path = studyFile('q4b', tinyStudy({ name: 'q4b' }) as Record<string, unknown>);
    const before = (await h.admin('get', '/v1/studies')).body.studies.length;
    const malformed = await cli(['study', 'create', '--config', path, '--init-from', 'no such id']);
    expect(malformed.code).not.toBe(0);
    expect(malformed.stderr).toMatch(/--init-from <STUDY\[:VERSION\]>.*"no such id" is not a study id/);
    const unknown = await cli(['study', 'create', '--config', path, '--init-from', 'study_nope:2']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/--init-from study_nope:2: .*404 NOT_FOUND initFrom\.study: study study_nope does not exist/);
    expect(unknown.stderr).not.toMatch(/\n\s+at /);
    const source = await h.createStudy(tinyStudy({ name: 'logreg-source' }));
    const mlp = studyFile('mlp', { ...tinyStudy({ name: 'mlp', model: { kind: 'mlp', hidden: [4] } }), initFrom: { study: source } });
    const misfit = await cli(['study', 'create', '--config', mlp]);
    expect(misfit.code).toBe(1);
    // From the file: the refusal names the file's line of initFrom and the first tensor that differs.
    expect(misfit.stderr).toMatch(/mlp\.yaml:\d+:\d+: initFrom: .*tensor "dense_0\/kernel": expected shape \[7,4\], got \[7,1\]/);
    expect((await h.admin('get', '/v1/studies')).body.studies.length).toBe(before + 1);
  }, 120_000);
});
