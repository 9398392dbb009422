import { mkdtempSync, appendFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { childLog } from '../../cli/child-log.ts';

const dir = mkdtempSync(join(tmpdir(), 'child-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a child's log file, read back only for the lines waited for (cli/child-log.ts)", () => {
  it('finds a line written after the wait began, across partial writes and multi-byte characters', async () => {
    const file = join(dir, 'a.log');
    writeFileSync(file, '{"msg":"database ready"}\n');
    const log = childLog(file);
    const url = log.waitFor('coordinator listening', (l) => (l.msg === 'coordinator listening' ? String(l.url) : undefined), () => new Error('timeout'), 5000);
    const line = JSON.stringify({ msg: 'coordinator listening', url: 'http://127.0.0.1:1/é' });
    const bytes = Buffer.from(line + '\n');
    // Split inside the two-byte é: the decoder must not break it.
    const cut = bytes.indexOf(0xc3) + 1;
    appendFileSync(file, 'not json, a stack trace: coordinator listening\n');
    appendFileSync(file, bytes.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 60));
    appendFileSync(file, bytes.subarray(cut));
    await expect(url).resolves.toBe('http://127.0.0.1:1/é');
  });

  it('times out with the caller\'s error when the line never comes', async () => {
    const file = join(dir, 'b.log');
    writeFileSync(file, '');
    await expect(childLog(file).waitFor('never', () => true, () => new Error('no start'), 100)).rejects.toThrow('no start');
  });

  it("drain reads the rest, a last line without its newline too, and parses only the marker's lines", () => {
    const file = join(dir, 'c.log');
    const log = childLog(file);
    const seen: unknown[] = [];
    log.onLine('process resources', (l) => seen.push(l));
    writeFileSync(file, '{"msg":"round started"}\n{"msg":"process resources","peakRssMb":12,"cpuSeconds":1.5}');
    log.drain();
    expect(seen).toEqual([{ msg: 'process resources', peakRssMb: 12, cpuSeconds: 1.5 }]);
  });

  it('reads a log larger than its chunk, and past a line too long to keep, to the line waited for', () => {
    const file = join(dir, 'd.log');
    const log = childLog(file);
    const seen: unknown[] = [];
    log.onLine('process resources', (l) => seen.push(l));
    const filler = '{"msg":"update accepted","pad":"' + 'x'.repeat(200) + '"}\n';
    writeFileSync(file, filler.repeat(15_000)); // ~3.3 MB: several chunks
    appendFileSync(file, 'y'.repeat(3 << 20) + '\n'); // a 3 MB line: dropped, not kept
    appendFileSync(file, '{"msg":"process resources","peakRssMb":1,"cpuSeconds":2}\n');
    log.drain();
    expect(seen).toEqual([{ msg: 'process resources', peakRssMb: 1, cpuSeconds: 2 }]);
  });

  it("the child's exit (drain) ends a wait's polling and its timer", async () => {
    const file = join(dir, 'e.log');
    writeFileSync(file, '');
    const log = childLog(file);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    void log.waitFor('never', () => true, () => new Error('timeout'), 60_000);
    expect(timers()).toBe(before + 2);
    log.drain();
    expect(timers()).toBe(before);
  });
});
