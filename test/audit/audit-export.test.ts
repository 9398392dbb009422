import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEntry, canonicalJson, checkpointPayload, signCheckpoint, type AuditEntry, type Checkpoint } from '../../protocols/audit/audit-chain.ts';
import { readAuditExport, verifyAuditExport, writeAuditExport } from '../../protocols/audit/audit-export.ts';
import { buildLog, generateTestKey, type TestKey } from './fixture.ts';

let key: TestKey;
let otherKey: TestKey;
let entries: AuditEntry[];
let checkpoints: Checkpoint[];
let root: string;
let clean: string;
let copies = 0;

beforeAll(async () => {
  [key, otherKey] = await Promise.all([generateTestKey('fedmark coordinator'), generateTestKey('not the coordinator')]);
  ({ entries, checkpoints } = await buildLog(30, key));
  root = mkdtempSync(join(tmpdir(), 'fedmark-audit-'));
  clean = join(root, 'clean');
  await writeAuditExport(clean, { entries, checkpoints, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: '2025-03-02T00:00:00.000Z', source: 'test', signingKey: key.privateKey });
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A fresh copy of the clean export to tamper with. */
function copy(): string {
  const dir = join(root, `copy-${++copies}`);
  cpSync(clean, dir, { recursive: true });
  return dir;
}
const lines = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8').split('\n').slice(0, -1);
const writeLines = (dir: string, file: string, content: string[]) => writeFileSync(join(dir, file), content.map((l) => l + '\n').join(''));
const editEntries = (dir: string, edit: (lines: string[]) => string[]) => writeLines(dir, 'entries.jsonl', edit(lines(dir, 'entries.jsonl')));
const editCheckpoints = (dir: string, edit: (cps: Checkpoint[]) => Checkpoint[]) =>
  writeLines(dir, 'checkpoints.jsonl', edit(lines(dir, 'checkpoints.jsonl').map((l) => JSON.parse(l) as Checkpoint)).map((c) => canonicalJson(c)));
const failure = (problem: string, seq: number | null) => expect.objectContaining({ ok: false, problem, seq });

describe('audit export', () => {
  it('writes the four files; every line is a canonical entry and the manifest describes them', () => {
    const manifest = JSON.parse(readFileSync(join(clean, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({
      format: 'fedmark-audit-export',
      version: 1,
      entries: { count: 30, lastSeq: 30, headHash: entries[29].hash },
      checkpoints: { count: 4, lastSeq: 30 },
      coordinatorFingerprint: key.fingerprint,
    });
    expect(manifest.readme.join('\n')).toMatch(/gpg --homedir gnupg --verify cp.asc cp.json/);
    expect(lines(clean, 'entries.jsonl')).toEqual(entries.map((e) => canonicalJson(e)));
    expect(readAuditExport(clean)).toMatchObject({ entries, checkpoints, coordinatorPublicKeyArmored: expect.stringContaining('BEGIN PGP PUBLIC KEY BLOCK') });
  });

  it('refuses to overwrite an export', async () => {
    await expect(writeAuditExport(clean, { entries, checkpoints, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: '2025-03-02T00:00:00.000Z', source: 'test', signingKey: key.privateKey })).rejects.toThrow(/already holds an export/);
  });

  it('verifies the untouched export', async () => {
    expect(await verifyAuditExport(clean)).toMatchObject({ ok: true, entries: 30, checkpoints: 4, head: entries[29].hash, uncheckpointedEntries: 0 });
  });

  it.each([
    ['data', (e: AuditEntry) => ({ ...e, data: { ...e.data, participants: ['eu-west', 'us-east'] } })],
    ['actor', (e: AuditEntry) => ({ ...e, actor: 'admin' })],
    ['at', (e: AuditEntry) => ({ ...e, at: '2025-03-01T09:07:08.000Z' })],
  ])('names entry 7 when its %s was modified', async (_field, edit) => {
    const dir = copy();
    editEntries(dir, (ls) => ls.map((l, i) => (i === 6 ? canonicalJson(edit(JSON.parse(l))) : l)));
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('modified', 7));
    expect(!result.ok && result.message).toMatch(/entry 7 \(position 7\) was modified/);
  });

  it('names entry 12 when it was deleted', async () => {
    const dir = copy();
    editEntries(dir, (ls) => ls.filter((_, i) => i !== 11));
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('deleted', 12));
    expect(!result.ok && result.message).toMatch(/entry 12 is missing/);
  });

  it('catches the deletion of the last 3 entries through the signed checkpoint', async () => {
    const dir = copy();
    editEntries(dir, (ls) => ls.slice(0, 27));
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('deleted', 28));
    expect(!result.ok && result.message).toMatch(/entries 28\.\.28 were deleted|entry 28 was deleted/);
  });

  it('names a forged entry inserted between 5 and 6 with a recomputed hash', async () => {
    const dir = copy();
    const forged = appendEntry(entries[4], { at: entries[5].at, actor: 'admin', kind: 'node.enrolled', studyId: null, data: { nodeId: 'shadow-node', region: 'us' } });
    editEntries(dir, (ls) => [...ls.slice(0, 5), canonicalJson(forged), ...ls.slice(5)]);
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('inserted', 6));
    expect(!result.ok && result.message).toMatch(/entry 6 at position 6 was inserted/);
  });

  it('names entries 9 and 10 swapped as reordered at 9', async () => {
    const dir = copy();
    editEntries(dir, (ls) => [...ls.slice(0, 8), ls[9], ls[8], ...ls.slice(10)]);
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('reordered', 9));
    expect(!result.ok && result.message).toMatch(/entry 9 is out of order: expected at position 9, found at position 10/);
  });

  it("reports a checkpoint whose headHash was altered as a bad signature (the signature covers it)", async () => {
    const dir = copy();
    editCheckpoints(dir, (cps) => cps.map((c) => (c.seq === 20 ? { ...c, headHash: entries[18].hash } : c)));
    expect(await verifyAuditExport(dir)).toEqual(failure('bad-checkpoint-signature', 20));
  });

  it('reports a checkpoint signature replaced by one from another key', async () => {
    const dir = copy();
    const forged = await signCheckpoint(entries[19], otherKey.privateKey, checkpoints[1].at);
    editCheckpoints(dir, (cps) => cps.map((c) => (c.seq === 20 ? { ...c, signature: forged.signature } : c)));
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('bad-checkpoint-signature', 20));
    expect(!result.ok && result.message).toMatch(/does not verify/);
  });

  it('fails every checkpoint when coordinator.pub.asc is replaced by another key', async () => {
    const dir = copy();
    writeFileSync(join(dir, 'coordinator.pub.asc'), otherKey.publicKeyArmored);
    expect(await verifyAuditExport(dir)).toEqual(failure('bad-checkpoint-signature', 12));
    // each one on its own fails too, also when the fingerprint field is adjusted to the new key
    const { verifyChain } = await import('../../protocols/audit/audit-chain.ts');
    for (const c of checkpoints) {
      expect(await verifyChain(entries, [c], otherKey.publicKeyArmored)).toEqual(failure('bad-checkpoint-signature', c.seq));
      expect(await verifyChain(entries, [{ ...c, coordinatorFingerprint: otherKey.fingerprint }], otherKey.publicKeyArmored)).toEqual(failure('bad-checkpoint-signature', c.seq));
    }
  });

  it('detects a rewritten history (recomputed hashes) through the checkpoint that no longer matches', async () => {
    const dir = copy();
    const rewritten = entries.slice(0, 21);
    for (const e of entries.slice(21)) rewritten.push(appendEntry(rewritten.at(-1)!, e.seq === 22 ? { ...e, data: { epsilon: 40 } } : e));
    editEntries(dir, () => rewritten.map((e) => canonicalJson(e)));
    const result = await verifyAuditExport(dir);
    expect(result).toEqual(failure('checkpoint-mismatch', 28));
    expect(!result.ok && result.message).toMatch(/after seq 20/);
  });

  it('reports a truncated line with its file and line number', async () => {
    const dir = copy();
    const ls = lines(dir, 'entries.jsonl');
    writeFileSync(join(dir, 'entries.jsonl'), ls.slice(0, 16).map((l) => l + '\n').join('') + ls[16].slice(0, 40));
    expect(await verifyAuditExport(dir)).toEqual({ ok: false, problem: 'malformed', seq: null, file: 'entries.jsonl', line: 17, message: expect.stringMatching(/^entries\.jsonl line 17: not valid JSON/) });
  });

  it('reports a line that does not fit the schema, or is not canonical, with its line number', async () => {
    let dir = copy();
    editEntries(dir, (ls) => ls.map((l, i) => (i === 3 ? l.replace('"seq":4', '"seq":"4"') : l)));
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: false, problem: 'malformed', file: 'entries.jsonl', line: 4 });
    dir = copy();
    editEntries(dir, (ls) => ls.map((l, i) => (i === 6 ? l.replace('"actor":"coordinator"', '"actor":"coordinator","actor":"admin"') : l)));
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: false, problem: 'malformed', seq: 7, line: 7, message: expect.stringMatching(/canonical/) });
    dir = copy();
    editEntries(dir, (ls) => ls.map((l, i) => (i === 6 ? l.slice(0, -1) + ',"approvedBy":"auditor"}' : l)));
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: false, problem: 'malformed', seq: 7, line: 7 });
    dir = copy();
    rmSync(join(dir, 'checkpoints.jsonl'));
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: false, problem: 'malformed', file: 'checkpoints.jsonl', message: expect.stringMatching(/missing/) });
  });

  it('uses the signed manifest to notice changes the chain cannot see', async () => {
    // a harmless-looking edit of the key file: same key, different bytes
    let dir = copy();
    writeFileSync(join(dir, 'coordinator.pub.asc'), readFileSync(join(dir, 'coordinator.pub.asc'), 'utf8').replace('-----\n', '-----\nComment: edited\n'));
    expect(await verifyAuditExport(dir)).toMatchObject({ ok: false, problem: 'malformed', file: 'coordinator.pub.asc' });

    // entries after the last checkpoint: deleting them is only visible against the manifest
    const extended = [...entries];
    for (let i = 0; i < 2; i++) extended.push(appendEntry(extended.at(-1)!, { at: `2025-03-01T10:0${i}:00.000Z`, actor: 'admin', kind: 'policy.set', studyId: null, data: { i } }));
    dir = join(root, 'extended');
    await writeAuditExport(dir, { entries: extended, checkpoints, coordinatorPublicKeyArmored: key.publicKeyArmored, exportedAt: '2025-03-02T00:00:00.000Z', source: 'test', signingKey: key.privateKey });
    expect(await verifyAuditExport(dir, { allowUnsealedTail: true })).toMatchObject({ ok: true, entries: 32, lastCheckpointSeq: 30, uncheckpointedEntries: 2 });
    editEntries(dir, (ls) => ls.slice(0, 31));
    expect(await verifyAuditExport(dir, { allowUnsealedTail: true })).toEqual(failure('deleted', 32));
  });
});

describe('verifying by hand, as the manifest README says', () => {
  const has = (cmd: string) => spawnSync(cmd, ['--version']).status === 0;

  it.skipIf(!has('gpg') || !has('jq'))('gpg verifies a checkpoint signature over the payload jq extracts', () => {
    const dir = copy();
    const sh = (script: string) => spawnSync('sh', ['-c', script], { cwd: dir, encoding: 'utf8' });
    const run = sh(
      [
        'mkdir -m 700 gnupg && gpg --batch --homedir gnupg --import coordinator.pub.asc 2>/dev/null',
        "jq -r 'select(.seq==20) | .signature' checkpoints.jsonl > cp.asc",
        'jq -jcS \'select(.seq==20) | {seq, headHash, at, coordinatorFingerprint} + (if has("number") then {number} else {} end)\' checkpoints.jsonl > cp.json',
        'gpg --batch --homedir gnupg --status-fd 1 --verify cp.asc cp.json',
      ].join(' && '),
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`VALIDSIG ${key.fingerprint.toUpperCase()}`));
    expect(readFileSync(join(dir, 'cp.json'), 'utf8')).toBe(checkpointPayload(checkpoints[1]));
    // and a tampered payload does not verify
    writeFileSync(join(dir, 'cp.json'), checkpointPayload({ ...checkpoints[1], headHash: entries[18].hash }));
    expect(sh('gpg --batch --homedir gnupg --verify cp.asc cp.json').status).not.toBe(0);
  });

  it.skipIf(!has('gpg') || !has('jq'))('gpg verifies the manifest signature over the payload jq extracts, as the README says', () => {
    const dir = copy();
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { readme: string[] };
    const steps = manifest.readme.filter((l) => /^ {3}(jq .*manifest\.(asc|payload)|gpg --homedir gnupg --verify manifest)/.test(l)).map((l) => l.trim().replace('gpg --homedir', 'gpg --batch --status-fd 1 --homedir'));
    expect(steps).toHaveLength(3);
    const sh = (script: string) => spawnSync('sh', ['-c', script], { cwd: dir, encoding: 'utf8' });
    const run = sh(['mkdir -m 700 gnupg && gpg --batch --homedir gnupg --import coordinator.pub.asc 2>/dev/null', ...steps].join(' && '));
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`VALIDSIG ${key.fingerprint.toUpperCase()}`));
    // A regenerated manifest (one entry fewer) does not verify with the old signature.
    const edited = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    edited.entries.count -= 1;
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(edited));
    expect(sh(steps.join(' && ')).status).not.toBe(0);
  });

  it.skipIf(!has('python3'))('the Python snippet recomputes every entry hash', () => {
    const manifest = JSON.parse(readFileSync(join(clean, 'manifest.json'), 'utf8')) as { readme: string[] };
    const start = manifest.readme.findIndex((l) => l.includes("python3 - <<'PY'"));
    const end = manifest.readme.findIndex((l, i) => i > start && l.trim() === 'PY');
    const script = manifest.readme.slice(start + 1, end).map((l) => l.replace(/^ {3}/, '')).join('\n');
    const dir = copy();
    let run = spawnSync('python3', ['-'], { cwd: dir, input: script, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim().split('\n')).toEqual(entries.map((e) => `${e.seq} ok`));
    editEntries(dir, (ls) => ls.map((l, i) => (i === 6 ? l.replace('"actor":"coordinator"', '"actor":"admin"') : l)));
    run = spawnSync('python3', ['-'], { cwd: dir, input: script, encoding: 'utf8' });
    expect(run.stdout).toMatch(/^7 BROKEN$/m);
  });
});
