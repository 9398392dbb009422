import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { BIN } from '../helpers/processes.ts';
import { seededRandom } from '../../cli/partition.ts';

const run = promisify(execFile);

/** The demo exactly as a user runs it (`npm start -- ...`), through the CLI in its own process. */
describe('fedmark demo', () => {
  it('runs on the shipped data and ends with one line of JSON: rounds, AUCs, model path', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-'));
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--rounds', '3', '--nodes', '4', '--model', 'logreg', '--local-epochs', '2', '--out', out], { maxBuffer: 16 << 20 });
      const lines = stdout.trim().split('\n');
      expect(lines).toHaveLength(1); // progress goes to stderr with --json
      const result = JSON.parse(lines[0]);
      expect(result.rounds).toHaveLength(3);
      expect(result.rounds.every((r: { phase: string; nodes: number }) => r.phase === 'completed' && r.nodes === 4)).toBe(true);
      expect(result.globalTestAuc).toBeGreaterThan(0.7);
      expect(result.localOnly).toHaveLength(4);
      expect(result.meanLocalOnlyAuc).toBeGreaterThan(0.5);
      expect(existsSync(result.modelPath)).toBe(true);
      expect(decodeWeights(new Uint8Array(readFileSync(result.modelPath))).map((w) => w.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);
      expect(stderr).toMatch(/round\s+3\/3\s+nodes 4\/4/);
      expect(stderr).toMatch(/federated global model/);
      // Raw rows of a region exist only in that node's own folder.
      expect(existsSync(join(out, 'nodes', 'region-01', 'data.csv'))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('works on any tabular CSV with a binary target, split by Dirichlet label skew', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-generic-'));
    try {
      // A synthetic propensity data set: the label depends on visits and the channel.
      const random = seededRandom(7);
      const lines = ['visits,cart_adds,channel,bought'];
      for (let i = 0; i < 600; i++) {
        const visits = Math.floor(random() * 20);
        const cart = Math.floor(random() * 5);
        const channel = ['email', 'search', 'social'][Math.floor(random() * 3)];
        const logit = -3 + 0.2 * visits + 0.6 * cart + (channel === 'email' ? 1 : 0);
        const bought = random() < 1 / (1 + Math.exp(-logit)) ? 'true' : 'false';
        lines.push(`${i % 50 === 0 ? 'NA' : visits},${cart},${channel},${bought}`);
      }
      const csv = join(out, 'propensity.csv');
      writeFileSync(csv, lines.join('\n') + '\n');
      const { stdout } = await run(process.execPath, [BIN, 'demo', '--json', '--data', csv, '--target', 'bought', '--nodes', '3', '--dirichlet', '0.5', '--rounds', '3', '--model', 'logreg', '--out', join(out, 'run')], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      expect(result.nodes).toBe(3);
      expect(result.partition).toMatch(/Dirichlet\(0\.5\)/);
      expect(result.globalTestAuc).toBeGreaterThan(0.65);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('runs with central DP and DP-SGD, printing epsilon spent per round within the budget', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-dp-'));
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--rounds', '2', '--nodes', '3', '--model', 'logreg', '--epsilon', '8', '--delta', '1e-5', '--dp-sgd', '--dp-sgd-epsilon', '3', '--no-local-baseline', '--out', out], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      expect(result.privacy.central.epsilonBudget).toBe(8);
      expect(result.privacy.central.epsilonSpent).toBeGreaterThan(0);
      expect(result.privacy.central.epsilonSpent).toBeLessThanOrEqual(8);
      expect(result.privacy.dpSgd.epsilonSpentMax).toBeLessThanOrEqual(3 + 1e-9);
      expect(result.rounds[0].epsilonTotal).toBeLessThan(result.rounds[1].epsilonTotal);
      expect(result.rounds[1].epsilonTotal).toBeCloseTo(result.privacy.central.epsilonSpent, 10);
      expect(result.rounds[1].dpSgdEpsilonTotal).toBeGreaterThan(0);
      expect(stderr).toMatch(/round\s+1\/2 .*eps \+[\d.]+ = [\d.]+ .*DP-SGD eps/);
      expect(result.audit.ok).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('refuses a missing target with a clear message and exit code', async () => {
    const err = await run(process.execPath, [BIN, 'demo', '--data', BIN]).catch((e) => e);
    expect(err.code).not.toBe(0);
    expect(String(err.stderr)).toMatch(/--target is required/);
  });
});
