import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../helpers/processes.ts';

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

/** `fedmark forecast` refusals (its run on a real exported model: test/integration/forecast.test.ts). */
describe('fedmark forecast: bad input is a clear error, never a stack trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-forecast-cli-'));

  it('--horizon must be a positive whole number', async () => {
    const res = await cli(['forecast', '--model', dir, '--data', join(dir, 'h.csv'), '--horizon', '0']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/--horizon.*must be a positive whole number of periods, got "0"/);
  });

  it('a folder that is not an export names preprocessing.json', async () => {
    const res = await cli(['forecast', '--model', dir, '--data', join(dir, 'h.csv')]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/preprocessing\.json: cannot read it as JSON/);
    expect(res.stderr).not.toMatch(/\n\s+at /);
  });

  it('a model whose study is not a forecast study is refused, naming its kind', async () => {
    // preprocessing.json is read (and its task checked) before anything else of the folder.
    const prep = { format: 'fedmark-preprocessing', version: 1, featureSpec: { version: 1, target: { column: 'churn', positive: 'yes' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }], missingValues: ['NA'] }, task: { kind: 'binary' }, inputWidth: 1, columns: [{ name: 'a', kind: 'numeric', slot: 0, mean: 0, std: 1, fill: 0 }], encoding: [], output: { kind: 'binary', activation: 'sigmoid', positive: 'yes', formula: '' } };
    writeFileSync(join(dir, 'preprocessing.json'), JSON.stringify(prep));
    const res = await cli(['forecast', '--model', dir, '--data', join(dir, 'h.csv')]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).not.toMatch(/\n\s+at /);
    expect(res.stderr).toMatch(/its study is a binary study, not a forecast study \(task.kind "forecast"\); score it with fedmark predict/);
  });
});
