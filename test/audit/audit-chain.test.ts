import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AuditEntry,
  GENESIS_HASH,
  appendEntry,
  canonicalJson,
  checkpointPayload,
  entryHash,
  signCheckpoint,
  verifyChain,
  type Checkpoint,
} from '../../protocols/audit/audit-chain.ts';
import { buildLog, generateTestKey, type TestKey } from './fixture.ts';

let key: TestKey;
let entries: AuditEntry[];
let checkpoints: Checkpoint[];

beforeAll(async () => {
  key = await generateTestKey('fedmark coordinator');
  ({ entries, checkpoints } = await buildLog(30, key));
});

const verify = (e: AuditEntry[], c: Checkpoint[] = checkpoints, k = key.publicKeyArmored) => verifyChain(e, c, k);
const failure = (problem: string, seq: number | null) => expect.objectContaining({ ok: false, problem, seq });

describe('canonicalJson', () => {
  it('sorts keys at every depth, drops whitespace and prints numbers as JavaScript does', () => {
    expect(canonicalJson({ b: [3, { z: 1, a: null }], a: 'é\n"', c: 1e-7, d: -0, e: 1e21, f: true })).toBe(
      '{"a":"é\\n\\"","b":[3,{"a":null,"z":1}],"c":1e-7,"d":0,"e":1e+21,"f":true}',
    );
  });

  it('orders keys by UTF-16 code units, like JSON canonicalization (RFC 8785)', () => {
    expect(canonicalJson({ '\uff01': 1, '😀': 2, B: 3, a: 4 })).toBe('{"B":3,"a":4,"😀":2,"！":1}');
  });

  it('does not depend on key order (what jsonb does to our data)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (obj) => {
        const reversed = Object.fromEntries(Object.entries(obj).reverse());
        expect(canonicalJson(reversed)).toBe(canonicalJson(obj));
        expect(canonicalJson(JSON.parse(canonicalJson(obj)))).toBe(canonicalJson(obj));
      }),
    );
  });

  it.each([
    ['NaN', { x: Number.NaN }],
    ['Infinity', [Number.POSITIVE_INFINITY]],
    ['undefined property', { x: undefined }],
    ['undefined', undefined],
    ['array hole', [1, , 3]],
    ['bigint', { x: 1n }],
    ['Date', { at: new Date(0) }],
    ['function', { f: () => 1 }],
  ])('rejects %s', (_name, value) => {
    expect(() => canonicalJson(value)).toThrow(/JSON/);
  });

  it('rejects cycles', () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    expect(() => canonicalJson(a)).toThrow(/circular/);
  });
});

describe('appendEntry', () => {
  it('numbers entries from 1, links them and hashes them with the domain prefix', () => {
    const first = appendEntry(null, { at: '2025-01-01T00:00:00.000Z', actor: 'admin', kind: 'study.created', studyId: 's', data: { b: 1, a: 2 } });
    expect(first).toMatchObject({ seq: 1, prevHash: GENESIS_HASH, round: null });
    expect(first.hash).toBe(entryHash(first));
    const second = appendEntry(first, { at: '2025-01-01T00:00:01.000Z', actor: 'coordinator', kind: 'round.started', studyId: 's', round: 1 });
    expect(second).toMatchObject({ seq: 2, prevHash: first.hash, data: {} });
  });

  it('copies data, so later mutation by the caller cannot break the hash', () => {
    const data = { participants: ['a'] };
    const entry = appendEntry(null, { at: '2025-01-01T00:00:00.000Z', actor: 'admin', kind: 'x', data });
    data.participants.push('b');
    expect(entry.data).toEqual({ participants: ['a'] });
    expect(entryHash(entry)).toBe(entry.hash);
  });

  it('refuses a head that no longer matches its hash (e.g. mangled by a database round trip)', () => {
    const first = appendEntry(null, { at: '2025-01-01T00:00:00.000Z', actor: 'admin', kind: 'x', data: { n: 1 } });
    expect(() => appendEntry({ ...first, at: '2025-01-01T00:00:00Z' }, { at: '2025-01-01T00:00:01.000Z', actor: 'admin', kind: 'y' })).toThrow(/does not match its hash/);
  });

  it('refuses non-JSON data', () => {
    expect(() => appendEntry(null, { at: '2025-01-01T00:00:00.000Z', actor: 'admin', kind: 'x', data: { norm: Number.NaN } })).toThrow(/JSON/);
  });
});

describe('verifyChain', () => {
  it('accepts the untouched log', async () => {
    expect(checkpoints.map((c) => c.seq)).toEqual([12, 20, 28, 30]);
    expect(await verify(entries)).toEqual({
      ok: true,
      entries: 30,
      checkpoints: 4,
      head: entries[29].hash,
      coordinatorFingerprint: key.fingerprint,
      lastCheckpointSeq: 30,
      lastCheckpointNumber: 4,
      uncheckpointedEntries: 0,
    });
  });

  it('does not care about key order inside data (jsonb reorders keys)', async () => {
    const reordered = entries.map((e) => ({ ...e, data: Object.fromEntries(Object.entries(e.data).reverse()) }));
    expect((await verify(reordered)).ok).toBe(true);
  });

  it('pins the coordinator key when given the published fingerprint', async () => {
    expect((await verifyChain(entries, checkpoints, key.publicKeyArmored, { expectedFingerprint: key.fingerprint.toUpperCase().replace(/(.{4})/g, '$1 ') })).ok).toBe(true);
    const other = await generateTestKey('someone else');
    expect(await verifyChain(entries, checkpoints, key.publicKeyArmored, { expectedFingerprint: other.fingerprint })).toEqual(failure('bad-checkpoint-signature', null));
  });

  it('names an entry that was replaced with a recomputed hash (only the next link catches it)', async () => {
    const forged = entries.slice();
    const { hash: _, ...body } = { ...entries[14], actor: 'node:evil' };
    forged[14] = { ...body, hash: entryHash(body) };
    expect(await verify(forged)).toEqual(failure('modified', 15));
  });

  it('names an entry whose prevHash was rewritten along with its hash', async () => {
    const forged = entries.slice();
    const { hash: _, ...body } = { ...entries[14], prevHash: 'f'.repeat(64) };
    forged[14] = { ...body, hash: entryHash(body) };
    expect(await verify(forged)).toEqual(failure('modified', 15));
  });

  it('with several tamperings names the first: entry 12 deleted and entry 13 edited is a deletion at 12', async () => {
    const tampered = entries.filter((_, i) => i !== 11).map((e) => (e.seq === 13 ? { ...e, actor: 'admin' } : e));
    expect(await verify(tampered)).toEqual(failure('deleted', 12));
    const alsoLater = entries.map((e) => (e.seq === 25 ? { ...e, actor: 'admin' } : e.seq === 9 ? { ...e, kind: 'x' } : e));
    expect(await verify(alsoLater)).toEqual(failure('modified', 9));
  });

  it('calls a second copy of an entry an insertion', async () => {
    const copied = [...entries.slice(0, 8), entries[2], ...entries.slice(8)];
    expect(await verify(copied)).toEqual(failure('inserted', 3));
  });

  it('detects a chain rewritten from seq 15 on with recomputed hashes through the checkpoint at 20', async () => {
    const rewritten = entries.slice(0, 14);
    for (const e of entries.slice(14)) {
      rewritten.push(appendEntry(rewritten.at(-1)!, { ...e, actor: e.seq === 15 ? 'admin' : e.actor }));
    }
    const result = await verify(rewritten);
    expect(result).toEqual(failure('checkpoint-mismatch', 20));
    expect(!result.ok && result.message).toMatch(/after seq 12/);
  });

  it('reports a checkpoint signed by another key', async () => {
    const other = await generateTestKey('intruder');
    const forged = checkpoints.slice();
    forged[1] = { ...(await signCheckpoint(entries[19], other.privateKey, checkpoints[1].at)), coordinatorFingerprint: key.fingerprint };
    expect(await verify(entries, forged)).toEqual(failure('bad-checkpoint-signature', 20));
    // and one that says so honestly
    forged[1] = await signCheckpoint(entries[19], other.privateKey, checkpoints[1].at);
    const result = await verify(entries, forged);
    expect(result).toEqual(failure('bad-checkpoint-signature', 20));
    expect(!result.ok && result.message).toMatch(new RegExp(other.fingerprint));
  });

  it('verifies checkpoints as of their own time: an old log stays verifiable after the key expired', async () => {
    const expiring = await generateTestKey('coordinator 2025', { keyExpirationTime: 180 * 24 * 3600 }); // expired since mid-2025
    const log = await buildLog(30, expiring);
    expect(await verifyChain(log.entries, log.checkpoints, expiring.publicKeyArmored)).toMatchObject({ ok: true, checkpoints: 4 });
    // but a checkpoint dated after the expiry does not verify (it cannot even be signed then)
    await expect(signCheckpoint(log.entries[29], expiring.privateKey, '2025-12-01T00:00:00.000Z')).rejects.toThrow();
    const late = { ...log.checkpoints[3], at: '2025-12-01T00:00:00.000Z' };
    const result = await verifyChain(log.entries, [...log.checkpoints.slice(0, 3), late], expiring.publicKeyArmored);
    expect(result).toEqual(failure('bad-checkpoint-signature', 30));
    expect(!result.ok && result.message).toMatch(/expired at 2025-12-01/);
  });

  it('fails every checkpoint once the coordinator key is revoked (the revocation is dated at key creation)', async () => {
    const { publicKey } = await openpgp.revokeKey({ key: key.privateKey, format: 'object' });
    const result = await verify(entries, checkpoints, publicKey.armor());
    expect(result).toEqual(failure('bad-checkpoint-signature', 12));
    expect(!result.ok && result.message).toMatch(/revoked/);
  });

  it('signs exactly the canonical payload', async () => {
    const c = checkpoints[0];
    expect(checkpointPayload(c)).toBe(`{"at":"${c.at}","coordinatorFingerprint":"${key.fingerprint}","headHash":"${entries[11].hash}","number":1,"seq":12}`);
  });

  it('rejects a private key where the public key belongs', async () => {
    expect(await verify(entries, checkpoints, key.privateKey.armor())).toEqual(failure('malformed', null));
  });

  it('reports malformed entries', async () => {
    const bad = entries.slice();
    bad[4] = { ...bad[4], seq: 4.5 };
    expect(await verify(bad)).toEqual(failure('malformed', 4.5));
    bad[4] = { ...entries[4], note: 'approved' } as AuditEntry;
    expect(await verify(bad)).toEqual(failure('malformed', 5));
  });

  it('accepts an empty log without checkpoints', async () => {
    expect(await verify([], [])).toMatchObject({ ok: true, entries: 0, head: GENESIS_HASH, lastCheckpointSeq: null });
  });
});

describe('verifyChain properties', () => {
  const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
  const changes = {
    seq: fc.integer({ min: 1, max: 1_000_000 }),
    at: fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
    actor: fc.string({ minLength: 1 }),
    kind: fc.string({ minLength: 1 }),
    studyId: fc.option(fc.string({ minLength: 1 }), { nil: null }),
    round: fc.option(fc.nat(), { nil: null }),
    data: fc.dictionary(fc.string(), fc.jsonValue()),
    prevHash: hex64,
    hash: hex64,
  } as const;
  const fields = Object.keys(changes) as (keyof typeof changes)[];
  const modification = fc
    .record({ index: fc.nat({ max: 29 }), field: fc.constantFrom(...fields) })
    .chain(({ index, field }) => changes[field].map((value: unknown) => ({ index, field, value })));

  it('any single modification of any field of any entry is reported as modified at that seq', async () => {
    await fc.assert(
      fc.asyncProperty(modification, async ({ index, field, value }) => {
        const original = entries[index] as Record<string, unknown>;
        fc.pre(canonicalJson(value) !== canonicalJson(original[field]));
        const tampered = entries.slice();
        tampered[index] = { ...entries[index], [field]: value };
        expect(await verify(tampered)).toEqual(failure('modified', index + 1));
      }),
      { numRuns: 300 },
    );
  });

  it('any replacement of any field by any JSON value is detected', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 29 }), fc.constantFrom(...fields), fc.jsonValue(), async (index, field, value) => {
        fc.pre(canonicalJson(value) !== canonicalJson((entries[index] as Record<string, unknown>)[field]));
        const tampered = entries.slice();
        tampered[index] = { ...entries[index], [field]: value } as AuditEntry;
        const result = await verify(tampered);
        expect(result.ok).toBe(false);
        expect(['modified', 'malformed']).toContain(!result.ok && result.problem);
      }),
      { numRuns: 200 },
    );
  });

  it('deleting any single entry is reported as deleted at its seq', async () => {
    for (let i = 0; i < entries.length; i++) {
      expect(await verify(entries.filter((_, j) => j !== i))).toEqual(failure('deleted', i + 1));
    }
  });

  it('swapping any two entries is reported as reordered at the lower seq', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.nat({ max: 29 }), { minLength: 2, maxLength: 2 }), async ([a, b]) => {
        const swapped = entries.slice();
        [swapped[a], swapped[b]] = [swapped[b], swapped[a]];
        expect(await verify(swapped)).toEqual(failure('reordered', Math.min(a, b) + 1));
      }),
      { numRuns: 100 },
    );
  });

  it('a forged entry with a valid hash inserted anywhere before the head is reported as inserted at its seq', async () => {
    for (let i = 0; i < entries.length; i++) {
      const forged = appendEntry(i === 0 ? null : entries[i - 1], { at: entries[i].at, actor: 'admin', kind: 'policy.set', studyId: 'x', data: { epsilon: 100 } });
      const tampered = [...entries.slice(0, i), forged, ...entries.slice(i)];
      expect(await verify(tampered)).toEqual(failure('inserted', i + 1));
      // the same, but its hash left stale
      const stale = [...entries.slice(0, i), { ...forged, hash: 'ab'.repeat(32) }, ...entries.slice(i)];
      expect(await verify(stale)).toEqual(failure('inserted', i + 1));
    }
  });

  it('an entry appended after the last checkpoint is not detectable by the chain: it fails as an unsealed tail, or is counted with allowUnsealedTail', async () => {
    const extra = appendEntry(entries[29], { at: '2025-03-02T00:00:00.000Z', actor: 'admin', kind: 'policy.set', data: {} });
    expect(await verify([...entries, extra])).toMatchObject({ ok: false, problem: 'unsealed-tail', seq: 31, message: expect.stringMatching(/^1 entry \(seq 31\.\.31\) after the last signed checkpoint: the last checkpoint \(#4\) covers up to seq 30/) });
    expect(await verifyChain([...entries, extra], checkpoints, key.publicKeyArmored, { allowUnsealedTail: true })).toMatchObject({ ok: true, entries: 31, lastCheckpointSeq: 30, uncheckpointedEntries: 1 });
  });
});
