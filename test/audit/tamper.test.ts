import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerAuditCommands } from '../../cli/audit-command.ts';
import { witnessCheckpoint } from '../../client-node/witness.ts';
import { appendEntry, signCheckpoint, type AuditEntry, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { verifyAuditExport, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { readWitnessFile } from '../../protocols/audit/witness.ts';
import { buildLog, generateTestKey, rewriteAndResign, type TestKey } from './fixture.ts';

/**
 * Issue 11's audit gaps, each as an attacker would try it, with real OpenPGP signatures: a tail
 * cut with its last checkpoint and the manifest regenerated, checkpoints removed, an unsealed
 * tail, and (for the coordinator key's own holder) a history rewritten and signed again, which
 * only the nodes' witnessed checkpoints expose.
 */
let root: string;
let key: TestKey;
let entries: AuditEntry[];
let checkpoints: Checkpoint[];
const EXPORTED_AT = '2025-03-02T00:00:00.000Z';
let n = 0;

beforeAll(async () => {
  key = await generateTestKey('fedmark coordinator');
  ({ entries, checkpoints } = await buildLog(30, key)); // checkpoints #1..#4 at seq 12, 20, 28, 30
  root = mkdtempSync(join(tmpdir(), 'fedmark-audit-tamper-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** An export folder; `signed` false is what anyone without the coordinator key can write. */
async function exportOf(e: readonly AuditEntry[], c: readonly Checkpoint[], signed: boolean | 'stale-signature' = true): Promise<string> {
  const dir = join(root, `export-${++n}`);
  await writeAuditExport(dir, { entries: e, checkpoints: c, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: EXPORTED_AT, source: 'test', ...(signed === true ? { signingKey: key.privateKey } : {}) });
  if (signed === 'stale-signature') {
    // The regenerated manifest keeps the signature block of the genuine export.
    const genuine = JSON.parse(readFileSync(join(await exportOf(entries, checkpoints), 'manifest.json'), 'utf8'));
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, signature: genuine.signature }, null, 2));
  }
  return dir;
}

let stdout = '';
let stderr = '';
beforeEach(() => {
  stdout = '';
  stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  process.exitCode = undefined;
});
afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});
async function cli(args: string[]) {
  stdout = '';
  stderr = '';
  const program = new Command('fedmark').exitOverride();
  registerAuditCommands(program, {});
  await program.parseAsync(['audit', 'verify', ...args], { from: 'user' });
  return { stdout, stderr, exitCode: process.exitCode };
}

describe('what a database owner (no coordinator key) can do to an export', () => {
  it('the untouched, signed export verifies, and says who signed the manifest', async () => {
    const r = await cli([await exportOf(entries, checkpoints), '--fingerprint', key.fingerprint]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`manifest signed by ${key.fingerprint.toLowerCase()} at ${EXPORTED_AT}`);
  });

  it('cutting the tail with its last checkpoint and regenerating the manifest fails: the manifest is not the signed one', async () => {
    const cut = { entries: entries.slice(0, 28), checkpoints: checkpoints.slice(0, 3) }; // #4 (seq 30) gone
    // Regenerated without a signature (the attacker has no key)...
    const unsigned = await exportOf(cut.entries, cut.checkpoints, false);
    let r = await cli([unsigned, '--fingerprint', key.fingerprint]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: bad-manifest: manifest\.json is not signed by the coordinator, so nothing proves the export is complete/);
    // ...or keeping the genuine manifest's signature block.
    r = await cli([await exportOf(cut.entries, cut.checkpoints, 'stale-signature'), '--fingerprint', key.fingerprint]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: bad-manifest: the signature of manifest\.json does not verify with the coordinator key [0-9a-f]{40}: the manifest \(counts, head [0-9a-f]{12}, last checkpoint 28,/);
    // What --allow-unsigned-manifest gives up: the cut export is otherwise perfect.
    expect(await verifyAuditExport(unsigned, { allowUnsignedManifest: true })).toMatchObject({ ok: true, entries: 28, lastCheckpointNumber: 3 });
  });

  it('removing every checkpoint fails, even with --allow-unsealed-tail and a manifest that agrees', async () => {
    const dir = await exportOf(entries, [], true);
    for (const flags of [[], ['--allow-unsealed-tail']]) {
      const r = await cli([dir, ...flags]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toBe('FAILED: missing-checkpoint: the log has 30 entries but no signed checkpoint: nothing proves how far it went (the coordinator signs one at each round\'s end, at start-up and before every export)\n');
    }
  });

  it('removing a checkpoint from the middle fails, naming the missing number', async () => {
    const dir = await exportOf(entries, checkpoints.filter((c) => c.number !== 2), true);
    const r = await cli([dir]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('FAILED: missing-checkpoint at entry 28: checkpoint #2 is missing: checkpoint #3 (seq 28) is the 2nd in the export\n');
  });

  it('entries after the last checkpoint fail as an unsealed tail; --allow-unsealed-tail accepts them and reports how many', async () => {
    const extended = [...entries];
    for (let i = 0; i < 2; i++) extended.push(appendEntry(extended.at(-1)!, { at: `2025-03-01T10:0${i}:00.000Z`, actor: 'admin', kind: 'policy.set', data: { i } }));
    const dir = await exportOf(extended, checkpoints, true);
    let r = await cli([dir]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: unsealed-tail at entry 31: 2 entries \(seq 31\.\.32\) after the last signed checkpoint: the last checkpoint \(#4\) covers up to seq 30\. A log whose tail was cut together with its checkpoints looks exactly like this/);
    r = await cli([dir, '--allow-unsealed-tail']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('unsealed tail: 2 entries (seq 31..32) after the last signed checkpoint, accepted with --allow-unsealed-tail');
  });
});

describe('witnesses: what the coordinator key holder cannot do quietly', () => {
  let nodeDir: string;
  let nodeLog: string[];
  const trust = () => ({ key: key.privateKey.toPublic(), fingerprint: key.fingerprint, followRotations: async () => false });
  const logger = () => pino({ level: 'info' }, { write: (line: string) => void nodeLog.push(line) });

  beforeAll(async () => {
    nodeDir = mkdtempSync(join(root, 'node-state-'));
    nodeLog = [];
    // The node received each checkpoint with a task (twice for #3: kept once).
    for (const c of [checkpoints[0], checkpoints[1], checkpoints[2], checkpoints[2], checkpoints[3]]) await witnessCheckpoint(nodeDir, { auditCheckpoint: c }, trust(), logger());
  });

  it('the node keeps each checkpoint it was handed once, after checking its signature; a forged one is not kept', async () => {
    expect(readWitnessFile(nodeDir).map((r) => r.checkpoint.number)).toEqual([1, 2, 3, 4]);
    const other = await generateTestKey('someone else');
    const forged = await signCheckpoint(entries[29], other.privateKey, checkpoints[3].at, 5);
    const elsewhere = mkdtempSync(join(root, 'node-other-'));
    cpSync(nodeDir, elsewhere, { recursive: true });
    await witnessCheckpoint(elsewhere, { auditCheckpoint: { ...forged, coordinatorFingerprint: key.fingerprint.toLowerCase() } }, trust(), logger());
    expect(readWitnessFile(elsewhere)).toHaveLength(4);
    expect(nodeLog.join('')).toMatch(/audit checkpoint not kept: its signature does not verify with the pinned coordinator key/);
  });

  it('an honest export agrees with the witness', async () => {
    const r = await cli([await exportOf(entries, checkpoints), '--witness', nodeDir]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`witness ${nodeDir}: 4 checkpoints witnessed, all in the export; the export extends the latest (seq 30, #4)`);
  });

  it('history rewritten and every checkpoint signed again: the export alone verifies, the witness names the conflicting checkpoint', async () => {
    const forged = await rewriteAndResign(entries, checkpoints, 15, key.privateKey);
    const dir = await exportOf(forged.entries, forged.checkpoints, true);
    expect(await verifyAuditExport(dir, { expectedFingerprint: key.fingerprint })).toMatchObject({ ok: true });
    const r = await cli([dir, '--fingerprint', key.fingerprint, '--witness', nodeDir]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^FAILED: witness-conflict at entry 20: witness ${nodeDir}: checkpoint #2 \\(seq 20, head ${checkpoints[1].headHash.slice(0, 12)}, signed ${checkpoints[1].at}\\), which the node received on \\S+, conflicts with the export's checkpoint #2 \\(seq 20, head ${forged.checkpoints[1].headHash.slice(0, 12)}, signed ${checkpoints[1].at}\\): the history up to seq 20 was rewritten and signed again`),
    );
  });

  it('the tail cut and the manifest signed again by the key holder: the witnessed last checkpoint is missing', async () => {
    const dir = await exportOf(entries.slice(0, 28), checkpoints.slice(0, 3), true);
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: true, entries: 28 });
    const r = await cli([dir, '--witness', nodeDir]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: witness-conflict at entry 30: witness .*: checkpoint #4 \(seq 30, head [0-9a-f]{12}, signed \S+\), which the node received on \S+, is not in the export: the log was cut or rewritten after it was signed/);
  });

  it('the node raises an alarm when the coordinator hands it a checkpoint that contradicts one it kept, and keeps both', async () => {
    const forged = await rewriteAndResign(entries, checkpoints, 15, key.privateKey);
    const dir = mkdtempSync(join(root, 'node-alarm-'));
    cpSync(nodeDir, dir, { recursive: true });
    nodeLog = [];
    await witnessCheckpoint(dir, { auditCheckpoint: forged.checkpoints[3] }, trust(), logger());
    expect(readWitnessFile(dir)).toHaveLength(5);
    const alarm = nodeLog.map((l) => JSON.parse(l)).find((l) => l.level === 50);
    expect(alarm).toMatchObject({ msg: expect.stringMatching(/^AUDIT ALARM: the coordinator signed an audit checkpoint that contradicts one this node witnessed/), seq: 30, number: 4 });
  });
});
