import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { StudyStatus } from '../../protocols/messages.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const ADMIN = 'rotation-admin-token-0123456789';

/**
 * The coordinator rotates its key between rounds while real nodes run: they follow the rotation
 * through the announcement signed by the key they pinned, and the study goes on; the audit log
 * still verifies against the first key.
 */
describe('coordinator key rotation with running nodes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-rotation-'));
  const processes: RunningProcess[] = [];
  let url = '';
  let status: StudyStatus;
  let firstFingerprint = '';
  let newFingerprint = '';

  const api = async (path: string, body?: unknown) => {
    const res = await fetch(url + path, { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const waitFor = async (studyId: string, done: (s: StudyStatus) => boolean) => {
    for (;;) {
      const s = StudyStatus.parse(await api(`/v1/studies/${studyId}`));
      if (done(s)) return s;
      await new Promise((r) => setTimeout(r, 150));
    }
  };

  beforeAll(async () => {
    const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', join(dir, 'db')], { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'keys'), DATABASE_URL: '' });
    processes.push(coordinator);
    url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);
    firstFingerprint = (await api('/v1/coordinator/key')).fingerprint;
    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn' });
    const study = await api('/v1/studies', { name: 'rotation', model: { kind: 'logreg' }, features: spec, rounds: 3, minNodesPerRound: 2, autoAdvance: false, roundDeadlineSeconds: 60 });
    const area = table.header.indexOf('area_code');
    for (const region of ['area_code_408', 'area_code_510']) {
      mkdirSync(join(dir, region), { recursive: true });
      writeCsvTable(join(dir, region, 'data.csv'), table.header, table.rows.filter((r) => r[area] === region));
      const { token } = await api('/v1/enrollment-tokens', { studyId: study.id, nodeName: region, region });
      processes.push(runFedmark(['node', '--coordinator', url, '--token', token, '--data', join(dir, region, 'data.csv'), '--state-dir', join(dir, region, 'state'), '--backend', 'wasm']));
    }
    await waitFor(study.id, (s) => s.nodes.filter((n) => n.state === 'ready').length === 2);
    await api(`/v1/studies/${study.id}/rounds`, {});
    await waitFor(study.id, (s) => s.rounds[0]?.phase === 'completed');
    newFingerprint = (await api('/v1/coordinator/key/rotate', {})).fingerprint;
    for (const round of [2, 3]) {
      await api(`/v1/studies/${study.id}/rounds`, {});
      status = await waitFor(study.id, (s) => s.rounds[round - 1]?.phase === 'completed' || s.rounds[round - 1]?.phase === 'failed');
    }
    await api(`/v1/studies/${study.id}/rounds`, {}).catch(() => undefined); // no rounds left: completes the study
  }, 180_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('the study goes on through the rotation, every round with both nodes', () => {
    expect(newFingerprint).not.toBe(firstFingerprint);
    expect(status.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
    for (const r of status.rounds) expect(r.participants).toHaveLength(2);
  });

  it('each node verified the announcement with the key it had pinned before trusting the new one', () => {
    for (const node of processes.slice(1)) {
      const followed = node.logs.find((l) => l.msg === 'coordinator key rotation verified; now trusting the new key');
      expect(followed).toMatchObject({ from: firstFingerprint, to: newFingerprint });
      expect(node.logs.some((l) => l.msg === 'refused an unsigned or wrongly signed global model')).toBe(false);
    }
  });

  it('the audit log still verifies offline against the first key', async () => {
    const out = join(dir, 'audit');
    const exported = runFedmark(['audit', 'export', '--coordinator', url, '--token', ADMIN, '--out', out]);
    expect(await exported.exited).toBe(0);
    const verify = runFedmark(['audit', 'verify', out, '--fingerprint', firstFingerprint]);
    expect(await verify.exited).toBe(0);
  });
});
