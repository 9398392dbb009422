import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { speedFigures, type FederationTimeline } from '../../cli/demo-federation.ts';
import { parseResourcesLine, peakRssMb, RESOURCES_MESSAGE } from '../../cli/process-resources.ts';

const run = promisify(execFile);
const timeline = {} as FederationTimeline;
const round = (n: number, seconds: number, phase = 'completed') => ({ round: n, phase, seconds });

/** Issue 13's figures in the demo's JSON (cli/demo-federation.ts speedFigures, cli/process-resources.ts). */
describe('demo speed figures', () => {
  it('the median round leaves round 1 (start-up) and failed rounds out', () => {
    const rounds = [round(1, 15), round(2, 1), round(3, 3), round(4, 9, 'failed'), round(5, 2)];
    const figures = speedFigures({ rounds, roundOneSeconds: 16, resources: { coordinator: null, nodes: [] }, timeline });
    expect(figures.medianRoundSeconds).toBe(2);
    expect(figures.roundOneSeconds).toBe(16);
    expect(speedFigures({ rounds: [round(1, 5)], roundOneSeconds: 5, resources: { coordinator: null, nodes: [] }, timeline }).medianRoundSeconds).toBeNull();
    expect(speedFigures({ rounds: [round(1, 5), round(2, 1), round(3, 4)], roundOneSeconds: 5, resources: { coordinator: null, nodes: [] }, timeline }).medianRoundSeconds).toBe(2.5);
  });

  it('node peak RSS is the largest over the nodes that reported; CPU is their sum', () => {
    const resources = { coordinator: { peakRssMb: 300, cpuSeconds: 20 }, nodes: [{ peakRssMb: 120, cpuSeconds: 3 }, null, { peakRssMb: 150, cpuSeconds: 4 }] };
    const figures = speedFigures({ rounds: [], roundOneSeconds: null, resources, timeline });
    expect(figures).toMatchObject({ coordinatorPeakRssMb: 300, nodePeakRssMb: 150, coordinatorCpuSeconds: 20, nodeCpuSeconds: 7 });
    expect(speedFigures({ rounds: [], roundOneSeconds: null, resources: { coordinator: null, nodes: [null] }, timeline })).toMatchObject({ coordinatorPeakRssMb: null, nodePeakRssMb: null });
  });

  it('peak RSS is the high-water mark: it does not fall when memory is released', () => {
    const before = peakRssMb();
    expect(before).toBeGreaterThan(10);
    let big: Buffer | null = Buffer.alloc(64 << 20, 1); // touched, so resident
    const during = peakRssMb();
    expect(during).toBeGreaterThanOrEqual(before + 32);
    big = null;
    expect(big).toBeNull();
    expect(peakRssMb()).toBeGreaterThanOrEqual(during);
  });

  it('a child started with FEDMARK_REPORT_RESOURCES=1 says its resources as its last stdout line, however it exits', async () => {
    const script = `import { reportResourcesAtExit } from ${JSON.stringify(new URL('../../cli/process-resources.ts', import.meta.url).pathname)}; reportResourcesAtExit(); const b = Buffer.alloc(80 << 20, 1); let x = 0; for (let i = 0; i < 3e7; i++) x += i; console.log(JSON.stringify({ msg: 'work', x, n: b.length })); process.exit(3);`;
    const child = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, FEDMARK_REPORT_RESOURCES: '1' } }).then(
      () => { throw new Error('expected exit code 3'); },
      (err: { code: number; stdout: string }) => err,
    );
    expect(child.code).toBe(3);
    const lines = child.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1).msg).toBe(RESOURCES_MESSAGE);
    const resources = parseResourcesLine(lines.at(-1))!;
    expect(resources.peakRssMb).toBeGreaterThan(80); // the 80 MB buffer was resident
    expect(resources.cpuSeconds).toBeGreaterThan(0);
    // Without the variable, nothing is added to the process's output.
    const quiet = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script.replace('process.exit(3)', 'process.exit(0)')], { env: { ...process.env, FEDMARK_REPORT_RESOURCES: '' } });
    expect(quiet.stdout.trim().split('\n')).toHaveLength(1);
  }, 60_000);
});
