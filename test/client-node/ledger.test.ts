import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { registerPrivacyReportCommand } from '../../cli/privacy-report-command.ts';
import { checkFitTask } from '../../client-node/policy.ts';
import { dataSourceKey, LedgerCeilingError, NodePrivacyLedger } from '../../client-node/privacy-ledger.ts';
import { StudyConfig, type Task } from '../../protocols/messages.ts';
import { PolicyProfile } from '../../protocols/policy/jurisdiction-policy.ts';
import { computeEpsilon } from '../../protocols/privacy/index.ts';

const root = mkdtempSync(join(tmpdir(), 'fedmark-ledger-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const dpSgd = { noiseMultiplier: 1.1, clipNorm: 1, samplingRate: 0.01, stepsPerRound: 100 };
const config = StudyConfig.parse({
  name: 'ledger study',
  model: { kind: 'logreg' },
  rounds: 50,
  features: { target: { column: 'y', positive: '1' }, features: [{ name: 'x', kind: 'numeric', mean: 0, std: 1, fill: 0 }] },
  privacy: { accountant: 'rdp', delta: 1e-5, dpSgd },
});
const task = (studyId: string, round: number): Task => ({ kind: 'fit', studyId, round, modelVersion: round - 1, modelSha256: '0'.repeat(64), deadline: new Date(Date.now() + 60_000).toISOString(), config });
const policy = PolicyProfile.parse({ jurisdiction: 'US-TX', version: 1 });
const perRound = computeEpsilon({ q: 0.01, sigma: 1.1, steps: 100, delta: 1e-5 });

/** Runs one fit task the way the node does: check, then record before training. */
function fit(node: { stateDir: string }, data: string, ledgerDir: string, ceiling: number, studyId: string, round: number) {
  const permission = checkFitTask(task(studyId, round), policy, { stateDir: node.stateDir, data, ledgerDir, maxEpsilon: ceiling, maxEpsilonDelta: 1e-5 });
  if (permission.allowed) permission.ledger.record(permission.spend!);
  return permission;
}

describe("the node's privacy ledger is keyed by the data source and shared by every study using it", () => {
  it('the same CSV in two studies with two state dirs: the second refuses once the shared ceiling would be crossed', async () => {
    const dir = join(root, 'two-studies');
    const data = join(dir, 'customers.csv');
    const ledgerDir = join(dir, 'ledgers');
    mkdirSync(dir, { recursive: true });
    writeFileSync(data, 'x,y\n1,0\n');
    const a = { stateDir: join(dir, 'state-a') };
    const b = { stateDir: join(dir, 'state-b') };
    mkdirSync(a.stateDir);
    mkdirSync(b.stateDir);
    // A ceiling that fits four rounds of this DP-SGD, not five.
    const ceiling = (computeEpsilon({ q: 0.01, sigma: 1.1, steps: 400, delta: 1e-5 }) + computeEpsilon({ q: 0.01, sigma: 1.1, steps: 500, delta: 1e-5 })) / 2;
    expect(ceiling).toBeGreaterThan(perRound);
    for (let r = 1; r <= 3; r++) expect(fit(a, data, ledgerDir, ceiling, 'study_a', r).allowed).toBe(true);
    expect(fit(b, data, ledgerDir, ceiling, 'study_b', 1).allowed).toBe(true);
    const refused = fit(b, data, ledgerDir, ceiling, 'study_b', 2);
    expect(refused).toMatchObject({ allowed: false, state: 'privacy-ceiling' });
    expect(refused.allowed ? '' : refused.message).toMatch(/every study using it on this machine/);
    expect(fit(a, data, ledgerDir, ceiling, 'study_a', 4)).toMatchObject({ allowed: false, state: 'privacy-ceiling' });
    // One file for the data source, composed across both studies (RDP composition, not a sum of epsilons).
    const ledger = NodePrivacyLedger.for({ data, stateDir: a.stateDir, ledgerDir }, 'rdp', 1e-5);
    expect(ledger.all.map((e) => e.studyId)).toEqual(['study_a', 'study_a', 'study_a', 'study_b']);
    expect(ledger.epsilon()).toBeCloseTo(computeEpsilon({ q: 0.01, sigma: 1.1, steps: 400, delta: 1e-5 }), 10);
    expect(ledger.epsilon()).toBeLessThan(4 * perRound);
    // `fedmark privacy report --node-state` of either enrollment reports the shared ledger.
    const report = await reportJson(['privacy', 'report', '--node-state', b.stateDir, '--json']);
    expect(report.rounds.map((r: { studyId: string }) => r.studyId)).toEqual(['study_a', 'study_a', 'study_a', 'study_b']);
    expect(report.epsilonTotal).toBeCloseTo(ledger.epsilon(), 10);
    // A symlink to the same file is the same data source; a data-source id overrides the path.
    symlinkSync(data, join(dir, 'link.csv'));
    expect(dataSourceKey(join(dir, 'link.csv'))).toBe(dataSourceKey(data));
    expect(dataSourceKey(data, 'crm-export')).toBe(dataSourceKey('/elsewhere/copy.csv', 'crm-export'));
  });

  it('checks the ceiling again under the lock: a spend that passed an earlier check but would now cross it is refused', () => {
    const dir = join(root, 'race');
    mkdirSync(join(dir, 's1'), { recursive: true });
    mkdirSync(join(dir, 's2'));
    const data = join(dir, 'd.csv');
    writeFileSync(data, 'x,y\n');
    const ceiling = (perRound + computeEpsilon({ q: 0.01, sigma: 1.1, steps: 200, delta: 1e-5 })) / 2; // one spend fits, two do not
    const first = NodePrivacyLedger.for({ data, stateDir: join(dir, 's1'), ledgerDir: join(dir, 'l') }, 'rdp', 1e-5, ceiling);
    const second = NodePrivacyLedger.for({ data, stateDir: join(dir, 's2'), ledgerDir: join(dir, 'l') }, 'rdp', 1e-5, ceiling);
    const spend = { studyId: 's', round: 1, samplingRate: 0.01, noiseMultiplier: 1.1, steps: 100 };
    expect(first.epsilonIf(spend)).toBeLessThan(ceiling);
    expect(second.epsilonIf(spend)).toBeLessThan(ceiling); // both checked before either recorded
    first.record(spend);
    expect(() => second.record({ ...spend, studyId: 't' })).toThrow(LedgerCeilingError);
  });

  it('is append-only JSONL, fsynced per spend; a torn last line is detected and cut, a corrupt middle line refused', () => {
    const dir = join(root, 'torn');
    mkdirSync(join(dir, 'state'), { recursive: true });
    const data = join(dir, 'd.csv');
    writeFileSync(data, 'x,y\n');
    const source = { data, stateDir: join(dir, 'state'), ledgerDir: join(dir, 'l') };
    const ledger = NodePrivacyLedger.for(source, 'rdp', 1e-5);
    const spend = { studyId: 's', round: 1, samplingRate: 0.01, noiseMultiplier: 1.1, steps: 100 };
    ledger.record(spend);
    ledger.record({ ...spend, round: 2 });
    const text = readFileSync(ledger.file, 'utf8');
    expect(text.split('\n')).toHaveLength(3);
    expect(JSON.parse(text.split('\n')[0])).toMatchObject({ ...spend, accountant: 'rdp', delta: 1e-5 });
    appendFileSync(ledger.file, '{"studyId":"s","round":3,"sampl'); // a crash mid-append
    const reread = NodePrivacyLedger.for(source, 'rdp', 1e-5);
    expect(reread.tornTail).toBe(true);
    expect(reread.all).toHaveLength(2);
    reread.record({ ...spend, round: 3 });
    expect(readFileSync(ledger.file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).round)).toEqual([1, 2, 3]);
    writeFileSync(ledger.file, text.replace('"round":1', '"round":1,,'));
    expect(() => NodePrivacyLedger.for(source, 'rdp', 1e-5)).toThrow(/corrupt at line 1/);
  });

  it('moves a ledger kept in the state dir before ledgers were shared into the shared one, once', () => {
    const dir = join(root, 'legacy');
    mkdirSync(join(dir, 'state'), { recursive: true });
    const data = join(dir, 'd.csv');
    writeFileSync(data, 'x,y\n');
    const entry = { studyId: 'old', round: 1, samplingRate: 0.01, noiseMultiplier: 1.1, steps: 100, at: '2026-11-30T00:00:00.000Z' };
    writeFileSync(join(dir, 'state', 'privacy-ledger.json'), JSON.stringify({ accountant: 'pld', delta: 1e-6, entries: [entry] }));
    const ledger = NodePrivacyLedger.for({ data, stateDir: join(dir, 'state'), ledgerDir: join(dir, 'l') }, 'rdp', 1e-5);
    expect(ledger.all).toEqual([{ ...entry, accountant: 'pld', delta: 1e-6 }]);
    expect(existsSync(join(dir, 'state', 'privacy-ledger.json'))).toBe(false);
    expect(NodePrivacyLedger.for({ data, stateDir: join(dir, 'state'), ledgerDir: join(dir, 'l') }, 'rdp', 1e-5).all).toHaveLength(1);
  });
});

/** Runs `fedmark privacy report ... --json` in this process and parses its output. */
async function reportJson(args: string[]) {
  const program = new Command().exitOverride();
  registerPrivacyReportCommand(program);
  let stdout = '';
  const out = process.stdout.write;
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    process.stdout.write = out;
  }
  return JSON.parse(stdout);
}

describe('dataSourceKey of a PostgreSQL source', () => {
  it('is one ledger per server and database, whoever connects, and an unparsable URL never echoes its password', async () => {
    const { dataSourceKey } = await import('../../client-node/privacy-ledger.ts');
    expect(dataSourceKey('postgresql://a:pw1@db.internal/crm')).toBe(dataSourceKey('postgres://b:pw2@db.internal:5432/crm?sslmode=require'));
    expect(dataSourceKey('postgresql://a@db.internal/crm')).not.toBe(dataSourceKey('postgresql://a@db.internal/other'));
    expect(() => dataSourceKey('postgresql://u:se cret@[bad/crm')).toThrow(/cannot be parsed/);
    try {
      dataSourceKey('postgresql://u:se cret@[bad/crm');
    } catch (e) {
      expect(String(e)).not.toContain('se cret');
    }
  });
});
