import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { validationSplit } from '../../client-node/data.ts';
import { encodeTable, initBackend, readCsvTable, writeCsvTable, type CsvTable } from '../../models/index.ts';
import * as tf from '../../models/tf.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { CHURN, coordinatorProcess } from '../helpers/federation.ts';
import { BIN, runFedmark, type RunningProcess } from '../helpers/processes.ts';

const run = promisify(execFile);

/**
 * Issue 12's operator path, end to end with real processes on PostgreSQL and nothing but the CLI
 * between the operator and the coordinator: `study init` writes the YAML, `study create` creates
 * it, three `token issue`, three `fedmark node` processes, `study watch` to the end, `model
 * export`; then TensorFlow.js's own `tf.loadLayersModel` and `fedmark predict` on the export
 * reproduce the coordinator's validation AUC from the nodes' own held-out rows, and `audit report`
 * on an audit export names the three nodes, their jurisdiction and the policy version in force.
 */
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** AUC of scores against 0/1 labels: every positive-negative pair, ties counted half (exact; a few hundred rows). */
function auc(scores: number[], labels: number[]): number {
  const pos = scores.filter((_, i) => labels[i] === 1);
  const neg = scores.filter((_, i) => labels[i] === 0);
  let wins = 0;
  for (const p of pos) for (const n of neg) wins += p > n ? 1 : p === n ? 0.5 : 0;
  return wins / (pos.length * neg.length);
}

describe('the operator path: init, create, tokens, nodes, watch, export, predict, audit report', () => {
  it('runs from the CLI alone, and the exported model reproduces the coordinator\'s metric', async (ctx) => {
    const postgres = await backendOrSkip('postgres');
    if (!postgres) return ctx.skip();
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-operator-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const database = await postgres.create();
    cleanup.push(() => database.drop());

    // Three partners, split by area code as in the fault tests.
    const table = readCsvTable({ path: CHURN });
    const column = table.header.indexOf('area_code');
    const partners = [
      { name: 'oakland', code: 'area_code_510' },
      { name: 'san-jose', code: 'area_code_408' },
      { name: 'san-francisco', code: 'area_code_415' },
    ].map((p) => {
      mkdirSync(join(dir, p.name), { recursive: true });
      const csv = join(dir, p.name, 'data.csv');
      writeCsvTable(csv, table.header, table.rows.filter((r) => r[column] === p.code));
      return { ...p, csv };
    });

    const coordinator = await coordinatorProcess(dir, { databaseUrl: database.databaseUrl });
    const nodes: RunningProcess[] = [];
    cleanup.push(async () => {
      for (const n of nodes) await n.stop();
      for (const c of coordinator.all) await c.stop();
    });
    await coordinator.start();
    const env = { ...process.env, FEDMARK_COORDINATOR: coordinator.url, FEDMARK_TOKEN: coordinator.admin };
    const fedmark = (args: string[]) => run(process.execPath, [BIN, ...args], { env, maxBuffer: 16 << 20 });

    // 1. study init -> YAML (the operator edits two numbers), study create.
    const init = await fedmark(['study', 'init', '--data', partners[0].csv, '--target', 'churn', '--model', 'logreg', '--jurisdiction', 'US-CA-CCPA', '--exclude', 'area_code,state', '--name', 'operator path']);
    const doc = parseDocument(init.stdout);
    doc.set('rounds', 2);
    doc.set('minNodesPerRound', 3);
    doc.set('minNodesToStart', 3);
    doc.set('roundDeadlineSeconds', 600);
    doc.set('evaluationDeadlineSeconds', 600);
    doc.setIn(['training', 'learningRate'], 0.05);
    const yamlFile = join(dir, 'study.yaml');
    writeFileSync(yamlFile, doc.toString());
    const created = JSON.parse((await fedmark(['study', 'create', '--config', yamlFile, '--json'])).stdout);
    const studyId: string = created.id ?? created.study?.id;
    expect(studyId).toBeTruthy();

    // 2. Three tokens, three nodes.
    for (const p of partners) {
      const issued = JSON.parse((await fedmark(['token', 'issue', '--study', studyId, '--node-name', p.name, '--region', 'us-west', '--jurisdiction', 'US-CA-CCPA', '--json'])).stdout);
      nodes.push(runFedmark(['node', '--coordinator', coordinator.url, '--token', issued.token, '--data', p.csv, '--state-dir', join(dir, p.name, 'state'), '--jurisdiction', 'US-CA-CCPA', '--backend', 'wasm']));
    }

    // 3. study watch to the end (no terminal: plain lines), exit 0.
    const watched = await fedmark(['study', 'watch', '--study', studyId]);
    expect(watched.stdout + watched.stderr).toMatch(/completed/);
    const summary = JSON.parse((await fedmark(['study', 'status', '--study', studyId, '--json'])).stdout);
    expect([summary.state, summary.roundsDone, summary.roundsFailed]).toEqual(['completed', 2, 0]);
    const status = await (await coordinator.api(`/v1/studies/${studyId}`)).json();
    const last = status.rounds.at(-1);
    expect([last.phase, last.updatesReceived, last.validationAuc]).toEqual(['completed', 3, summary.lastMetrics.validationAuc]);

    // 4. model export, then TensorFlow.js's own loader and fedmark predict on the nodes' held-out rows.
    const exported = join(dir, 'export');
    await fedmark(['model', 'export', '--study', studyId, '--format', 'tfjs', '--out', exported]);
    const config = StudyConfig.parse(status.config);
    const heldOut: CsvTable = { header: table.header, rows: [], lineOf: (i) => i + 2 };
    for (const p of partners) {
      const mine = readCsvTable({ path: p.csv });
      const [, validation] = validationSplit(mine, config, studyId);
      heldOut.rows.push(...validation.map((i) => mine.rows[i]));
    }
    const heldOutCsv = join(dir, 'held-out.csv');
    writeCsvTable(heldOutCsv, heldOut.header, heldOut.rows);
    const scoresCsv = join(dir, 'scores.csv');
    await fedmark(['predict', '--model', exported, '--data', heldOutCsv, '--out', scoresCsv]);
    const scored = readCsvTable({ path: scoresCsv });
    const scores = scored.rows.map((r) => Number(r[scored.header.indexOf('score')]));
    const labels = Array.from(encodeTable(heldOut, config.features).y);
    expect(scores.length).toBe(labels.length);
    // The coordinator pooled the nodes' exact 1000-bin histograms of these same rows (no DP).
    expect(Math.abs(auc(scores, labels) - last.validationAuc)).toBeLessThan(0.01);

    await initBackend('wasm');
    const server = createServer((req, res) => res.end(readFileSync(join(exported, new URL(req.url!, 'http://x').pathname))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const net = await tf.loadLayersModel(`http://127.0.0.1:${(server.address() as { port: number }).port}/model.json`);
      const x = encodeTable(heldOut, config.features);
      const out = tf.tidy(() => (net.predict(tf.tensor2d(x.x, [x.n, x.width])) as tf.Tensor).dataSync());
      for (let i = 0; i < x.n; i++) expect(Math.abs(out[i] - scores[i])).toBeLessThan(1e-5);
      net.dispose();
    } finally {
      server.close();
    }

    // 5. The compliance officer: an audit export, verified, and the report on it.
    const auditDir = join(dir, 'audit');
    await fedmark(['audit', 'export', '--coordinator', coordinator.url, '--out', auditDir]);
    const report = (await fedmark(['audit', 'report', auditDir, '--study', studyId])).stdout;
    expect(report).toMatch(/Verification: verified/);
    expect(report).toMatch(/## Model version 2 \(round 2/);
    for (const p of partners) expect(report).toMatch(new RegExp(`\\| ${p.name} \\| us-west \\| US-CA-CCPA \\| US-CA-CCPA v1 \\(built-in\\) \\|`));
  }, 900_000);
});
