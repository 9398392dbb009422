import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readCsvTable } from '../../models/index.ts';
import { backendOrSkip } from '../helpers/databases.ts';
import { churnStudy, coordinatorProcess, nodeProcess } from '../helpers/federation.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';
import { writeParquetTable, writePostgresTable } from '../helpers/table-files.ts';

/**
 * Three partners keep their data three ways (issue 12): one node reads a CSV, one a Parquet file,
 * one a PostgreSQL table (read-only, through a cursor); all three `fedmark node` processes train
 * the same study with the coordinator, and every round aggregates all three updates.
 */
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

describe('fedmark node --data: CSV, Parquet and PostgreSQL in one federation', () => {
  it('every node trains from its own kind of source, every round', async (ctx) => {
    const postgres = await backendOrSkip('postgres');
    if (!postgres) return ctx.skip();
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-sources-federation-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const partnerDb = await postgres.create();
    cleanup.push(() => partnerDb.drop());
    const { config, regions } = churnStudy(dir, { rounds: 2 });
    const parquet = join(dir, regions[1].region, 'data.parquet');
    writeParquetTable(parquet, readCsvTable({ path: regions[1].csv }));
    await writePostgresTable(partnerDb.databaseUrl!, 'crm_customers', readCsvTable({ path: regions[2].csv }));

    const coordinator = await coordinatorProcess(dir, { dataDir: join(dir, 'coordinator-db') });
    const nodes: RunningProcess[] = [];
    cleanup.push(async () => {
      for (const n of nodes) await n.stop();
      for (const c of coordinator.all) await c.stop();
    });
    await coordinator.start();
    const study = await (await coordinator.api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
    const tokens: string[] = [];
    for (const { region } of regions) tokens.push((await (await coordinator.api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json()).token);
    nodes.push(nodeProcess(coordinator.url, tokens[0], regions[0].csv));
    nodes.push(nodeProcess(coordinator.url, tokens[1], parquet));
    nodes.push(
      runFedmark(['node', '--coordinator', coordinator.url, '--token', tokens[2], '--data', partnerDb.databaseUrl!, '--table', 'crm_customers', '--batch-rows', '100', '--state-dir', join(dir, regions[2].region, 'state'), '--backend', 'wasm']),
    );
    for (const n of nodes) await n.waitForLog((l) => l.msg === 'node finished', 600_000);
    const status = await (await coordinator.api(`/v1/studies/${study.id}`)).json();
    expect(status.state).toBe('completed');
    expect(status.rounds.map((r: { phase: string; updatesReceived: number }) => [r.phase, r.updatesReceived])).toEqual([
      ['completed', 3],
      ['completed', 3],
    ]);
    // Each node says which source it read (the PostgreSQL one without a password) and how many rows.
    const loaded = nodes.map((n) => n.logs.find((l) => l.msg === 'data loaded')!);
    expect(String(loaded[1].file)).toMatch(/data\.parquet$/);
    expect(String(loaded[2].file)).toMatch(/^postgres(ql)?:\/\/.* table crm_customers$/);
    expect(loaded[2].rows).toBe(readCsvTable({ path: regions[2].csv }).rows.length);
    expect(loaded[1].rows).toBe(readCsvTable({ path: regions[1].csv }).rows.length);
  }, 900_000);
});
