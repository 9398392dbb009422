import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerAuditCommands } from '../../cli/audit-command.ts';
import { appendEntry, signCheckpoint, type AuditEntry, type AuditEntryFields } from '../../protocols/audit/audit-chain.ts';
import { writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { buildAuditReport, privacySummary } from '../../protocols/audit/audit-report.ts';
import { generateTestKey, type TestKey } from './fixture.ts';

/**
 * `fedmark audit report`: the compliance officer's question "which partners' data went into model
 * version X, under which policy, at what privacy cost?" answered from an export alone. The log
 * below has the coordinator's own entry shapes: a DP-SGD study with three nodes in three
 * jurisdictions; round 1 records its policy versions (round.started.policies), round 2 is from an
 * older coordinator that did not (the version comes from the last policy.changed before it), round
 * 3 is refused by a policy, then the operator stops the study.
 */
const STUDY = 'churn-2026q4';
const NODES = [
  { nodeId: 'n-eu', name: 'berlin', region: 'eu', jurisdiction: 'EU-GDPR' },
  { nodeId: 'n-us', name: 'oakland', region: 'us', jurisdiction: 'US-CA-CCPA' },
  { nodeId: 'n-cn', name: 'shanghai', region: 'cn', jurisdiction: 'CN-PIPL' },
];
const spend = (round: number) => ({ accountant: 'pld', delta: 1e-5, epsilonRound: 0.5, epsilonTotal: 0.5 * round, noiseMultiplier: 4.2, samplingRate: 0.5, steps: 4, clipNorm: 1 });

function fields(): AuditEntryFields[] {
  const at = '';
  const f: AuditEntryFields[] = [
    { at, actor: 'admin', kind: 'study.created', studyId: STUDY, round: null, data: { config: { name: 'churn', task: { kind: 'binary' }, model: { kind: 'mlp', hidden: [32, 16] } }, initialModelSha256: 'a'.repeat(64) } },
    ...NODES.map((n): AuditEntryFields => ({ at, actor: 'admin', kind: 'node.enrolled', studyId: STUDY, round: null, data: { ...n, keyFingerprint: `${n.nodeId}-fpr` } })),
  ];
  const policies = NODES.map((n) => ({ jurisdiction: n.jurisdiction, version: n.jurisdiction === 'US-CA-CCPA' ? 2 : 1, builtIn: n.jurisdiction !== 'US-CA-CCPA', profileSha256: `${n.jurisdiction}`.padEnd(64, '0').slice(0, 64), nodeIds: [n.nodeId] }));
  const round = (r: number, withPolicies: boolean, contributors: typeof NODES): AuditEntryFields[] => [
    { at, actor: 'coordinator', kind: 'round.started', studyId: STUDY, round: r, data: { participants: NODES.map((n) => n.nodeId), ...(withPolicies ? { policies } : {}), mechanism: { strategy: 'fedavg', privacy: { dpSgd: { targetEpsilon: 3 } } } } },
    ...contributors.map((n): AuditEntryFields => ({ at, actor: `node:${n.nodeId}`, kind: 'update.received', studyId: STUDY, round: r, data: { nodeId: n.nodeId, sha256: `${n.nodeId}-${r}`.padEnd(64, 'f'), numExamples: 1, clipped: false, dpSgd: spend(r) } })),
    { at, actor: 'coordinator', kind: 'aggregate.published', studyId: STUDY, round: r, data: { modelVersion: r, modelSha256: `${r}`.repeat(64), bytes: 12_000, signerFingerprint: 'c'.repeat(40), nodes: contributors.map((n) => n.nodeId), failures: [] } },
    { at, actor: 'coordinator', kind: 'round.completed', studyId: STUDY, round: r, data: { validationAuc: 0.8 + r / 100, evaluations: contributors.length } },
  ];
  f.push(...round(1, true, NODES));
  f.push({ at, actor: 'admin', kind: 'policy.changed', studyId: null, round: null, data: { policy: { jurisdiction: 'US-CA-CCPA', version: 3 } } });
  f.push(...round(2, false, NODES.slice(0, 2)));
  f.push({ at, actor: 'coordinator', kind: 'round.refused', studyId: STUDY, round: 3, data: { violations: [{ jurisdiction: 'CN-PIPL', version: 1, rule: 'cross-border', message: 'CN-PIPL v1: model weights may not leave the region' }] } });
  f.push({ at, actor: 'admin', kind: 'study.stopped', studyId: STUDY, round: 3, data: { reason: 'stopped by admin: partner withdrew' } });
  // Another study's round must not leak into this report.
  f.push({ at, actor: 'coordinator', kind: 'aggregate.published', studyId: 'other', round: 1, data: { modelVersion: 1, modelSha256: 'e'.repeat(64), nodes: ['n-eu'] } });
  return f;
}

function buildEntries(): AuditEntry[] {
  const out: AuditEntry[] = [];
  const t0 = Date.parse('2026-11-30T09:00:00Z');
  for (const [i, f] of fields().entries()) out.push(appendEntry(out.at(-1) ?? null, { ...f, at: new Date(t0 + i * 1000).toISOString() }));
  return out;
}

let root: string;
let key: TestKey;
let entries: AuditEntry[];
let exportDir: string;

beforeAll(async () => {
  key = await generateTestKey('fedmark coordinator');
  entries = buildEntries();
  const last = entries.at(-1)!;
  const checkpoints = [await signCheckpoint(last, key.privateKey, new Date(Date.parse(last.at) + 1000).toISOString(), 1)];
  root = mkdtempSync(join(tmpdir(), 'fedmark-audit-report-'));
  exportDir = join(root, 'export');
  await writeAuditExport(exportDir, { entries, checkpoints, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: new Date(Date.parse(last.at) + 2000).toISOString(), source: 'test', signingKey: key.privateKey });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('buildAuditReport', () => {
  it('names every contributor of a version with region, jurisdiction and the policy version in force', () => {
    const report = buildAuditReport(entries, { studyId: STUDY });
    expect(report.versions.map((v) => v.version)).toEqual([1, 2]);
    const v1 = report.versions[0];
    expect(v1.contributors.map((c) => [c.name, c.region, c.jurisdiction, c.policy?.version, c.policy?.builtIn, c.policy?.source])).toEqual([
      ['berlin', 'eu', 'EU-GDPR', 1, true, 'round.started'],
      ['oakland', 'us', 'US-CA-CCPA', 2, false, 'round.started'],
      ['shanghai', 'cn', 'CN-PIPL', 1, true, 'round.started'],
    ]);
    // Round 2 recorded no versions: the US one is the last published change before it, the EU
    // one was never published (a built-in profile), so the report says it is not recorded.
    const v2 = report.versions[1];
    expect(v2.contributors.map((c) => c.name)).toEqual(['berlin', 'oakland']);
    expect(v2.contributors.map((c) => [c.policy?.version, c.policy?.source])).toEqual([
      [0, 'not recorded'],
      [3, 'policy.changed'],
    ]);
  });

  it('gives the model hash, its signer, the mechanism and the privacy spent', () => {
    const [v1, v2] = buildAuditReport(entries, { studyId: STUDY }).versions;
    expect(v1.modelSha256).toBe('1'.repeat(64));
    expect(v1.signerFingerprint).toBe('c'.repeat(40));
    expect(v1.strategy).toBe('fedavg');
    expect(v1.clientLevel).toBeNull();
    expect(v2.contributors.map((c) => c.dpSgd?.epsilonTotal)).toEqual([1, 1]);
    expect(privacySummary(v2)).toMatch(/record-level \(DP-SGD.*up to epsilon 1\.0000 per node.*delta 1e-5 \(pld/);
    expect(privacySummary({ ...v2, contributors: [], clientLevel: null })).toMatch(/^no differential privacy/);
  });

  it('lists refused rounds and the stop with their reasons, and only this study', () => {
    const report = buildAuditReport(entries, { studyId: STUDY });
    expect(report.state).toBe('stopped');
    expect(report.stopReason).toBe('stopped by admin: partner withdrew');
    expect(report.refusals.map((r) => [r.kind, r.round])).toEqual([
      ['round.refused', 3],
      ['study.stopped', 3],
    ]);
    expect(report.refusals[0].reason).toContain('CN-PIPL v1: model weights may not leave the region');
    expect(report.versions.every((v) => v.modelSha256 !== 'e'.repeat(64))).toBe(true);
  });

  it('filters versions and reports the ones the export does not hold', () => {
    const report = buildAuditReport(entries, { studyId: STUDY, versions: [2, 7] });
    expect(report.versions.map((v) => v.version)).toEqual([2]);
    expect(report.missingVersions).toEqual([7]);
  });
});

describe('fedmark audit report', () => {
  let stdout = '';
  let stderr = '';
  beforeEach(() => {
    stdout = '';
    stderr = '';
    process.exitCode = undefined;
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((stdout += String(c)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += String(c)), true));
    return () => {
      vi.restoreAllMocks();
      process.exitCode = undefined;
    };
  });
  const run = async (...args: string[]) => {
    const program = new Command().exitOverride();
    registerAuditCommands(program, {});
    await program.parseAsync(['node', 'fedmark', 'audit', 'report', ...args]);
    return process.exitCode;
  };

  it('writes Markdown naming the nodes, their jurisdictions and policy versions, after verifying the export', async () => {
    expect(await run(exportDir, '--study', STUDY, '--fingerprint', key.fingerprint)).toBe(0);
    expect(stdout).toContain('# Audit report: study churn-2026q4');
    expect(stdout).toMatch(/Verification: verified: \d+ entries, 1 signed checkpoints.*matches the published fingerprint/);
    expect(stdout).toContain('| berlin | eu | EU-GDPR | EU-GDPR v1 (built-in) |');
    expect(stdout).toContain('| oakland | us | US-CA-CCPA | US-CA-CCPA v2 |');
    expect(stdout).toContain('| shanghai | cn | CN-PIPL | CN-PIPL v1 (built-in) |');
    expect(stdout).toContain('**round.refused**: CN-PIPL v1: model weights may not leave the region');
  });

  it('writes HTML to a file with the same facts, escaped', async () => {
    const out = join(root, 'report.html');
    expect(await run(exportDir, '--study', STUDY, '--format', 'html', '--out', out)).toBe(0);
    const html = readFileSync(out, 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('<td>oakland</td><td>us</td><td>US-CA-CCPA</td><td>US-CA-CCPA v2</td>');
    expect(html).not.toContain('<script');
  });

  it('refuses to report on an export that does not verify', async () => {
    const tampered = join(root, 'tampered');
    rmSync(tampered, { recursive: true, force: true });
    await writeAuditExport(tampered, { entries, checkpoints: [await signCheckpoint(entries.at(-1)!, key.privateKey, new Date(Date.parse(entries.at(-1)!.at) + 1000).toISOString(), 1)], coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: new Date().toISOString(), source: 'test', signingKey: key.privateKey });
    const file = join(tampered, 'entries.jsonl');
    // A partner quietly removed from version 1.
    writeFileSync(file, readFileSync(file, 'utf8').replace('"nodes":["n-eu","n-us","n-cn"]', '"nodes":["n-eu","n-us"]'));
    expect(await run(tampered, '--study', STUDY)).toBe(1);
    expect(stderr).toMatch(/^FAILED: the export does not verify, so no report/);
    expect(stdout).toBe('');
  });

  it('text from the log cannot forge a section or a table row of the Markdown report', async () => {
    const forged = entries.map((e) => e);
    const at = (i: number) => new Date(Date.parse(entries.at(-1)!.at) + i * 1000).toISOString();
    forged.push(appendEntry(forged.at(-1)!, { at: at(1), actor: 'admin', kind: 'node.enrolled', studyId: STUDY, round: null, data: { nodeId: 'n-eu', name: 'berlin | xx | EU-GDPR v9 |', region: 'eu', jurisdiction: 'EU-GDPR' } }));
    forged.push(appendEntry(forged.at(-1)!, { at: at(2), actor: 'admin', kind: 'study.stopped', studyId: STUDY, round: 3, data: { reason: 'withdrew\n\n## Model version 99 (round 99)\n- Privacy: none' } }));
    const dir = join(root, 'forged');
    const last = forged.at(-1)!;
    await writeAuditExport(dir, { entries: forged, checkpoints: [await signCheckpoint(last, key.privateKey, new Date(Date.parse(last.at) + 1000).toISOString(), 1)], coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: new Date(Date.parse(last.at) + 2000).toISOString(), source: 'test', signingKey: key.privateKey });
    expect(await run(dir, '--study', STUDY)).toBe(0);
    const lines = stdout.split('\n');
    expect(lines.filter((l) => l.startsWith('## Model version')).map((l) => l.slice(0, 19))).toEqual(['## Model version 1 ', '## Model version 2 ']);
    // Every table row keeps its 7 cells (8 separators), the escaped pipes inside the name included.
    for (const row of lines.filter((l) => l.startsWith('| `n-'))) expect(row.match(/(?<!\\)\|/g)!.length).toBe(8);
    expect(stdout).toContain('berlin \\| xx \\| EU-GDPR v9 \\|');
  });

  it('fails on a version the export does not hold, and on an unknown study', async () => {
    expect(await run(exportDir, '--study', STUDY, '--version', '9')).toBe(1);
    expect(stderr).toContain('version(s) 9 not in this export');
    stderr = '';
    expect(await run(exportDir, '--study', 'nope')).toBe(1);
    expect(stderr).toContain('study nope is not in this export');
  });
});
