/**
 * Start-up breakdown of a finished demo run, from its output folder (issue 13: round 1 and what
 * precedes it). Reads OUT/summary.json (the demo's timeline, wall seconds from the federation's
 * start) and OUT/logs/*.log (every child line carries `cpuMs`, its process's CPU so far, and its
 * last line its peak RSS: cli/process-resources.ts). Prints one JSON object:
 *   node bin/run-ts.js bench/demo-startup.ts [OUT]   (default .fedmark/demo)
 * Run the demo first, e.g. `node bin/fedmark.js demo --json --no-local-baseline --out OUT`.
 * CPU milestones are medians over the nodes; on a loaded machine prefer them to the wall times.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

type Line = Record<string, unknown> & { msg?: string; time?: number; cpuMs?: number; round?: number };

const NODE_STEPS = ['tensorflow backend', 'node identity', 'enrolled', 'node policy', 'data loaded', 'sent model update', 'sent evaluation (sufficient statistics)', 'node finished'];
const COORDINATOR_STEPS = ['database ready', 'coordinator identity', 'coordinator listening', 'study created', 'round started', 'round completed', 'study completed'];

function readLog(file: string): Line[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Line];
      } catch {
        return [];
      }
    });
}

/** The first line of each step (for per-round messages, the one of round 1). */
function firstOf(lines: Line[], steps: string[]): Record<string, Line> {
  const out: Record<string, Line> = {};
  for (const l of lines) if (l.msg && steps.includes(l.msg) && !(l.msg in out) && (l.round === undefined || l.round === 1)) out[l.msg] = l;
  return out;
}

const median = (xs: number[]) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function main() {
  const out = resolve(process.argv[2] ?? join('.fedmark', 'demo'));
  const summaryFile = join(out, 'summary.json');
  if (!existsSync(summaryFile)) throw new Error(`${summaryFile} not found: run the demo with --out ${out} first`);
  const summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
  const logs = join(out, 'logs');
  const coordinatorLines = readLog(join(logs, 'coordinator.log'));
  const coordinator = firstOf(coordinatorLines, COORDINATOR_STEPS);
  const resources = (lines: Line[]) => lines.find((l) => l.msg === 'process resources');
  const nodeFiles = readdirSync(logs).filter((f) => f.startsWith('node-'));
  const nodes = nodeFiles.map((f) => readLog(join(logs, f)));
  const nodeSteps = nodes.map((lines) => firstOf(lines, NODE_STEPS));
  const t0 = Math.min(...[...coordinatorLines, ...nodes.flat()].map((l) => l.time ?? Infinity));
  const step = (name: string) => ({
    medianCpuMs: median(nodeSteps.map((s) => s[name]?.cpuMs).filter((x): x is number => typeof x === 'number')),
    medianWallSecondsSinceFirstLog: median(nodeSteps.map((s) => s[name]?.time).filter((x): x is number => typeof x === 'number').map((t) => (t - t0) / 1000)),
  });
  const result = {
    out,
    wallSeconds: summary.wallSeconds,
    roundOneSeconds: summary.roundOneSeconds,
    medianRoundSeconds: summary.medianRoundSeconds,
    coordinatorPeakRssMb: summary.coordinatorPeakRssMb,
    nodePeakRssMb: summary.nodePeakRssMb,
    timeline: summary.timeline,
    coordinator: Object.fromEntries(COORDINATOR_STEPS.map((s) => [s, coordinator[s] ? { cpuMs: coordinator[s].cpuMs ?? null, wallSecondsSinceFirstLog: ((coordinator[s].time ?? t0) - t0) / 1000 } : null])),
    coordinatorCpuSeconds: resources(coordinatorLines)?.cpuSeconds ?? null,
    nodes: Object.fromEntries(NODE_STEPS.map((s) => [s, step(s)])),
    nodeCpuSecondsEach: nodes.map((lines) => resources(lines)?.cpuSeconds ?? null),
    loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number),
  };
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}

main();
