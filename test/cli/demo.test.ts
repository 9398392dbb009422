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
      // The default split (10 regions by state): the setting where federation must pay off.
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--rounds', '4', '--model', 'logreg', '--out', out], { maxBuffer: 16 << 20 });
      const lines = stdout.trim().split('\n');
      expect(lines).toHaveLength(1); // progress goes to stderr with --json
      const result = JSON.parse(lines[0]);
      expect(result.rounds).toHaveLength(4);
      expect(result.rounds.every((r: { phase: string; nodes: number }) => r.phase === 'completed' && r.nodes === 10)).toBe(true);
      expect(result.globalTestAuc).toBeGreaterThan(0.7);
      expect(result.localOnly).toHaveLength(10);
      expect(result.meanLocalOnlyAuc).toBeGreaterThan(0.5);
      // The promise of the product: the federated model beats what the average region reaches alone.
      expect(result.globalTestAuc).toBeGreaterThanOrEqual(result.meanLocalOnlyAuc);
      expect(existsSync(result.modelPath)).toBe(true);
      expect(decodeWeights(new Uint8Array(readFileSync(result.modelPath))).map((w) => w.name)).toEqual(['dense_0/kernel', 'dense_0/bias']);
      // Issue 13's figures, measured (cli/demo-federation.ts speedFigures): numbers, not placeholders.
      const seconds = result.rounds.map((r: { seconds: number }) => r.seconds);
      expect(result.medianRoundSeconds).toBeGreaterThan(0);
      expect(result.medianRoundSeconds).toBeLessThanOrEqual(Math.max(...seconds.slice(1)));
      expect(result.roundOneSeconds).toBeGreaterThanOrEqual(seconds[0]);
      expect(result.roundOneSeconds).toBeLessThan(result.wallSeconds);
      // A Node.js process with its dependencies loaded is resident in well over 30 MB; the coordinator (PGlite) more.
      expect(result.coordinatorPeakRssMb).toBeGreaterThan(30);
      expect(result.nodePeakRssMb).toBeGreaterThan(30);
      expect(result.coordinatorCpuSeconds).toBeGreaterThan(0);
      expect(result.nodeCpuSeconds).toBeGreaterThan(0);
      const t = result.timeline;
      expect(t.coordinatorListening).toBeGreaterThan(0);
      const steps = [t.coordinatorListening, t.studyCreated, t.nodesStarted, t.roundOneCompleted, t.studyEnded, t.auditVerified, t.childrenStopped];
      expect(steps).toEqual([...steps].sort((x, y) => x - y));
      // Downloaded side by side with the audit export: after the study, before the children stop.
      expect(t.modelDownloaded).toBeGreaterThanOrEqual(t.studyEnded);
      expect(t.modelDownloaded).toBeLessThanOrEqual(t.childrenStopped);
      expect(stderr).toMatch(/round\s+4\/4\s+nodes 10\/10/);
      expect(stderr).toMatch(/federated global model/);
      // Raw rows of a region exist only in that node's own folder.
      expect(existsSync(join(out, 'nodes', 'region-01', 'data.csv'))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  /** A synthetic propensity data set: the label depends on visits, cart adds and the channel. */
  function writePropensityCsv(path: string): void {
    const random = seededRandom(7);
    const lines = ['visits,cart_adds,channel,country,bought'];
    for (let i = 0; i < 600; i++) {
      const visits = Math.floor(random() * 20);
      const cart = Math.floor(random() * 5);
      const channel = ['email', 'search', 'social'][Math.floor(random() * 3)];
      const country = ['DE', 'FR', 'US', 'CN'][Math.floor(random() * 4)];
      const logit = -3 + 0.2 * visits + 0.6 * cart + (channel === 'email' ? 1 : 0);
      const bought = random() < 1 / (1 + Math.exp(-logit)) ? 'true' : 'false';
      lines.push(`${i % 50 === 0 ? 'NA' : visits},${cart},${channel},${country},${bought}`);
    }
    writeFileSync(path, lines.join('\n') + '\n');
  }

  it('works on any tabular CSV with a binary target, split by Dirichlet label skew', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-generic-'));
    try {
      const csv = join(out, 'propensity.csv');
      writePropensityCsv(csv);
      const { stdout } = await run(process.execPath, [BIN, 'demo', '--json', '--data', csv, '--target', 'bought', '--exclude', 'country', '--nodes', '3', '--dirichlet', '0.5', '--rounds', '3', '--model', 'logreg', '--out', join(out, 'run')], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      expect(result.nodes).toBe(3);
      expect(result.partition).toMatch(/Dirichlet\(0\.5\)/);
      expect(result.globalTestAuc).toBeGreaterThan(0.65);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('splits any CSV by a region column of the user\'s choice (--partition-by), with the MLP', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-partition-'));
    try {
      const csv = join(out, 'propensity.csv');
      writePropensityCsv(csv);
      const { stdout } = await run(process.execPath, [BIN, 'demo', '--json', '--data', csv, '--target', 'bought', '--partition-by', 'country', '--rounds', '2', '--model', 'mlp', '--no-local-baseline', '--out', join(out, 'run')], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      // four countries, four regions, each node holding exactly one country's rows
      expect(result.nodes).toBe(4);
      expect(result.partition).toMatch(/country/);
      expect(result.rounds.every((r: { phase: string; nodes: number }) => r.phase === 'completed' && r.nodes === 4)).toBe(true);
      for (const country of ['DE', 'FR', 'US', 'CN']) {
        const holders = [1, 2, 3, 4].filter((n) => readFileSync(join(out, 'run', 'nodes', `region-0${n}`, 'data.csv'), 'utf8').includes(`,${country},`));
        expect(holders).toHaveLength(1);
      }
      const names = decodeWeights(new Uint8Array(readFileSync(result.modelPath))).map((w) => w.name);
      expect(names.length).toBeGreaterThan(2); // hidden layers: the MLP, not logistic regression
      expect(result.globalTestAuc).toBeGreaterThan(0.6);
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

  /** A synthetic spend data set: spend grows with visits and tenure, more in the west; some zeros. */
  function writeSpendCsv(path: string): void {
    const random = seededRandom(11);
    const lines = ['visits,tenure,channel,region,spend'];
    for (let i = 0; i < 600; i++) {
      const visits = Math.floor(random() * 20);
      const tenure = Math.floor(random() * 60);
      const channel = ['email', 'search', 'social'][Math.floor(random() * 3)];
      const region = ['west', 'east', 'south'][i % 3];
      const mean = 20 + 6 * visits + 1.5 * tenure + (channel === 'email' ? 30 : 0) + (region === 'west' ? 25 : 0);
      const spend = random() < 0.1 ? 0 : Math.max(0, mean + 25 * (random() + random() + random() - 1.5));
      lines.push(`${visits},${tenure},${channel},${region},${spend.toFixed(2)}`);
    }
    writeFileSync(path, lines.join('\n') + '\n');
  }

  it('runs a regression study (--task regression --data --target --partition-by): R2 and RMSE against the mean-only baseline', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-regression-'));
    try {
      const csv = join(out, 'spend.csv');
      writeSpendCsv(csv);
      // 3 rounds on ~130 training rows a node: 10 local epochs so the one-layer model gets enough steps.
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--task', 'regression', '--data', csv, '--target', 'spend', '--partition-by', 'region', '--rounds', '3', '--local-epochs', '10', '--model', 'linear', '--out', join(out, 'run')], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      expect(result.task).toBe('regression');
      expect(result.loss).toBe('tweedie'); // the default regression loss
      expect(result.nodes).toBe(3);
      expect(result.rounds).toHaveLength(3);
      expect(result.rounds.every((r: { phase: string; nodes: number }) => r.phase === 'completed' && r.nodes === 3)).toBe(true);
      for (const field of ['globalR2', 'globalRmse', 'globalMae', 'meanLocalOnlyR2', 'meanLocalOnlyRmse', 'baselineRmse']) expect(typeof result[field], field).toBe('number');
      expect(result.globalTestAuc).toBeNull();
      // The federated model explains spend: better than predicting the mean for everyone.
      expect(result.globalR2).toBeGreaterThan(0);
      expect(result.globalRmse).toBeLessThan(result.baselineRmse);
      expect(result.localOnly).toHaveLength(3);
      expect(stderr).toMatch(/federated global model/);
      expect(stderr).toMatch(/mean-only baseline/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('runs FedProx from its flags (--strategy fedprox --mu 0.01)', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-fedprox-'));
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, 'demo', '--json', '--strategy', 'fedprox', '--mu', '0.01', '--rounds', '2', '--nodes', '3', '--model', 'logreg', '--no-local-baseline', '--out', out], { maxBuffer: 16 << 20 });
      const result = JSON.parse(stdout.trim());
      expect(result.strategy).toEqual({ name: 'fedprox', mu: 0.01 });
      expect(result.rounds.every((r: { phase: string; nodes: number }) => r.phase === 'completed' && r.nodes === 3)).toBe(true);
      expect(result.globalTestAuc).toBeGreaterThan(0.6);
      expect(stderr).toMatch(/2 rounds of fedprox \(mu 0\.01\)/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);

  it('refuses a strategy flag the chosen strategy does not take, naming the flag', async () => {
    const wrong = await run(process.execPath, [BIN, 'demo', '--strategy', 'fedavgm', '--mu', '0.1']).catch((e) => e);
    expect(wrong.code).not.toBe(0);
    expect(String(wrong.stderr)).toMatch(/--mu does not apply to --strategy fedavgm: it is a parameter of fedprox/);
    const noStrategy = await run(process.execPath, [BIN, 'demo', '--trim-fraction', '0.2']).catch((e) => e);
    expect(String(noStrategy.stderr)).toMatch(/--trim-fraction does not apply to --strategy fedavg/);
    const loss = await run(process.execPath, [BIN, 'demo', '--loss', 'mse']).catch((e) => e);
    expect(String(loss.stderr)).toMatch(/--loss mse is a regression loss/);
  });

  it('refuses a strategy the split or the privacy settings cannot run, before starting any process', async () => {
    const out = mkdtempSync(join(tmpdir(), 'fedmark-demo-refused-'));
    try {
      const krum = await run(process.execPath, [BIN, 'demo', '--strategy', 'krum', '--nodes', '4', '--out', out]).catch((e) => e);
      expect(krum.code).not.toBe(0);
      expect(String(krum.stderr)).toMatch(/krum needs at least 5 updates a round .* the split has 4 nodes/);
      const dp = await run(process.execPath, [BIN, 'demo', '--strategy', 'median', '--epsilon', '8', '--out', out]).catch((e) => e);
      expect(String(dp.stderr)).toMatch(/--epsilon \(central DP\) cannot wrap --strategy median/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('documents every strategy flag with its defaults in --help', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'demo', '--help']);
    const help = stdout.replace(/\s+/g, ' ');
    for (const flag of ['--strategy', '--mu', '--server-lr', '--momentum', '--beta1', '--beta2', '--tau', '--trim-fraction', '--byzantine', '--select', '--task', '--loss']) expect(help).toContain(flag);
    expect(help).toMatch(/fedprox \(default 0\.01\)/);
    expect(help).toMatch(/fedavgm \(default 1\), fedadam \(default 0\.1\)/);
    expect(help).toMatch(/krum \(default 1\)/);
  });

  it('refuses a missing target with a clear message and exit code', async () => {
    const err = await run(process.execPath, [BIN, 'demo', '--data', BIN]).catch((e) => e);
    expect(err.code).not.toBe(0);
    expect(String(err.stderr)).toMatch(/--target is required/);
  });
});
