import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { StudyStatus } from '../../protocols/messages.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const ADMIN = 'integration-admin-token-0123456789';

/**
 * The real thing: a coordinator process and node processes talking HTTP on loopback, three
 * regions of the shipped data plus one node whose CSV is broken. Runs on PGlite and PostgreSQL.
 */
for (const backendName of BACKEND_NAMES) {
  describe(`federation of real processes on ${backendName}`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-federation-'));
    const processes: RunningProcess[] = [];
    let drop: (() => Promise<void>) | undefined;
    let status: StudyStatus | undefined;
    let skipped = false;
    let url = '';
    let brokenLine = 0;

    const api = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
      return res;
    };

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) {
        skipped = true;
        return;
      }
      const database = await backend.create();
      drop = database.drop;
      const coordinator = runFedmark(['coordinator', '--port', '0', '--data-dir', database.dataDir ?? join(dir, 'unused')], {
        FEDMARK_ADMIN_TOKEN: ADMIN,
        FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'),
        DATABASE_URL: database.databaseUrl ?? '',
      });
      processes.push(coordinator);
      url = String((await coordinator.waitForLog((l) => l.msg === 'coordinator listening')).url);

      // Three regions by area code, a spec derived from the whole file (the operator's declaration).
      const table = readCsvTable({ path: DATA });
      const spec = inferFeatureSpec(table, { target: 'churn' });
      const areaCol = table.header.indexOf('area_code');
      const regions = ['area_code_408', 'area_code_415', 'area_code_510'];
      const study = await (
        await api('/v1/studies', {
          method: 'POST',
          body: JSON.stringify({ name: 'integration', model: { kind: 'logreg' }, features: spec, training: { localEpochs: 2, learningRate: 0.02 }, rounds: 3, minNodesPerRound: 2, minNodesToStart: 3, roundDeadlineSeconds: 60 }),
        })
      ).json();
      for (const region of [...regions, 'broken']) {
        const nodeDir = join(dir, region);
        mkdirSync(nodeDir, { recursive: true });
        const rows = region === 'broken' ? table.rows.slice(0, 50).map((r) => [...r]) : table.rows.filter((r) => r[areaCol] === region);
        if (region === 'broken') rows[6][table.header.indexOf('total_day_minutes')] = 'lots';
        brokenLine = 8; // header is line 1, row index 6 is line 8
        writeCsvTable(join(nodeDir, 'data.csv'), table.header, rows);
        const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
        processes.push(runFedmark(['node', '--coordinator', url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'wasm']));
      }
      for (;;) {
        status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
        if (status.state === 'completed') break;
        await new Promise((r) => setTimeout(r, 200));
      }
    }, 180_000);

    afterAll(async () => {
      await Promise.all(processes.map((p) => p.stop()));
      await drop?.();
      rmSync(dir, { recursive: true, force: true });
    });

    it('runs every round with the three healthy nodes and improves the model', (ctx) => {
      if (skipped) return ctx.skip();
      expect(status!.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
      for (const r of status!.rounds) expect(r.participants).toHaveLength(3);
      const auc = status!.rounds.map((r) => r.validationAuc!);
      expect(auc[2]).toBeGreaterThan(0.7);
      expect(status!.rounds[2].numExamples).toBeGreaterThan(3000);
    });

    it('the broken node reports the line and column and trains on nothing', (ctx) => {
      if (skipped) return ctx.skip();
      const broken = status!.nodes.find((n) => n.name === 'broken')!;
      expect(broken.state).toBe('data-error');
      expect(broken.message).toContain(`line ${brokenLine}`);
      expect(broken.message).toContain('total_day_minutes');
      expect(broken.message).not.toContain('lots'); // the cell itself never leaves the node
      const brokenNode = processes[4];
      expect(brokenNode.logs.some((l) => l.msg === 'sent model update')).toBe(false);
    });

    it('each healthy node logged what it sent: bytes and tensor names, and exited when the study completed', async (ctx) => {
      if (skipped) return ctx.skip();
      for (const node of processes.slice(1, 4)) {
        const sent = node.logs.filter((l) => l.msg === 'sent model update');
        expect(sent).toHaveLength(3);
        expect(sent[0].bytes).toBeGreaterThan(0);
        expect(sent[0].tensors).toEqual([expect.stringMatching(/^dense_0\/kernel\[\d+x1\]$/), 'dense_0/bias[1]']);
        expect(await node.exited).toBe(0);
      }
    });

    it('a node rotates its key, then withdraws, through the CLI; both are in the audit log', async (ctx) => {
      if (skipped) return ctx.skip();
      const nodeDir = join(dir, 'area_code_408');
      const rotate = runFedmark(['node', '--coordinator', url, '--state-dir', join(nodeDir, 'state'), '--rotate-key']);
      expect(await rotate.exited).toBe(0);
      const withdraw = runFedmark(['node', '--coordinator', url, '--state-dir', join(nodeDir, 'state'), '--withdraw', '--reason', 'test']);
      expect(await withdraw.exited).toBe(0);
      const after = StudyStatus.parse(await (await api(`/v1/studies/${status!.id}`)).json());
      expect(after.nodes.find((n) => n.name === 'area_code_408')!.state).toBe('withdrawn');
      const log = (await (await api('/v1/audit/export')).json()) as { entries: Array<{ kind: string }> };
      expect(log.entries.map((e) => e.kind)).toEqual(expect.arrayContaining(['node.key-rotated', 'node.withdrawn']));
    });

    it('serves the final global model as binary weights', async (ctx) => {
      if (skipped) return ctx.skip();
      const res = await api(`/v1/studies/${status!.id}/model`);
      expect(res.headers.get('content-type')).toBe('application/octet-stream');
      const weights = decodeWeights(new Uint8Array(await res.arrayBuffer()));
      expect(weights.map((w) => w.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);
      expect(res.headers.get('fedmark-sha256')).toBe(status!.rounds[2].modelSha256);
    });
  });
}

