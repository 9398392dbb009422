import * as openpgp from 'openpgp';
import { appendEntry, signCheckpoint, type AuditEntry, type AuditEntryFields, type Checkpoint } from '../../protocols/audit/audit-chain.ts';

export interface TestKey {
  privateKey: openpgp.PrivateKey;
  publicKeyArmored: string;
  fingerprint: string;
}

/** Key creation time of test keys: before the fixture's log (checkpoints are verified as of their time). */
export const KEY_CREATED = new Date('2025-01-01T00:00:00Z');

/**
 * One Ed25519 signing key (EdDSA "legacy" encoding, the one GnuPG 2.2/2.4 verifies), unencrypted
 * in memory; created at KEY_CREATED unless told otherwise.
 */
export async function generateTestKey(name: string, options: { date?: Date; keyExpirationTime?: number } = {}): Promise<TestKey> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ name, email: `${name.replace(/\W+/g, '-')}@fedmark.test` }],
    date: options.date ?? KEY_CREATED,
    keyExpirationTime: options.keyExpirationTime ?? 0,
    format: 'object',
  });
  return { privateKey, publicKeyArmored: publicKey.armor(), fingerprint: publicKey.getFingerprint() };
}

const T0 = Date.parse('2025-03-01T09:00:00.000Z');
const time = (seq: number) => new Date(T0 + seq * 61_000).toISOString();
const STUDY = 'churn-eu-2025q1';
const NODES = ['eu-west', 'us-east', 'cn-north'];

/**
 * The coordinator's log for a small study: setup (1..6), then rounds of 6 entries
 * (round.started, 3 x update.received, aggregate.published, privacy.spent) with a signed
 * checkpoint at each round's end, interleaved with key changes, refusals and auth failures.
 * For 30 entries: checkpoints at 12, 20, 28 and 30 (study completed).
 */
export function studyEvents(count: number): { fields: AuditEntryFields; checkpointAfter: boolean }[] {
  const setup: AuditEntryFields[] = [
    { at: '', actor: 'admin', kind: 'study.created', studyId: STUDY, data: { purpose: 'churn prediction (Zürich, 北京) ✓', features: ['tenure', 'calls', 'plan'], target: 'churn', labels: { '\uff01': 1, '😀': 2, B: 3, a: 4 } } },
    { at: '', actor: 'admin', kind: 'policy.set', studyId: STUDY, data: { epsilon: 3, delta: 1e-5, tolerance: 1e-9, maxRows: 1e21, clipNorm: 0.5, minNodes: 2, consentPurpose: 'personalization' } },
    ...NODES.map((n): AuditEntryFields => ({ at: '', actor: 'admin', kind: 'node.enrolled', studyId: null, data: { nodeId: n, region: n.split('-')[0], keyFingerprint: `${n}-fpr` } })),
    { at: '', actor: 'anonymous', kind: 'auth.failed', studyId: null, data: { route: 'POST /v1/updates', reason: 'bad token', ip: '203.0.113.7' } },
  ];
  const out: { fields: AuditEntryFields; checkpointAfter: boolean }[] = setup.map((fields) => ({ fields, checkpointAfter: false }));
  let round = 0;
  let between = 0;
  while (out.length < count) {
    round++;
    out.push({ fields: { at: '', actor: 'coordinator', kind: 'round.started', studyId: STUDY, round, data: { participants: NODES, config: { localEpochs: 2, learningRate: 0.01, batchSize: 64, clipNorm: 0.5, noiseMultiplier: 1.1 }, modelHash: `model-${round - 1}` } }, checkpointAfter: false });
    NODES.forEach((n, i) =>
      out.push({ fields: { at: '', actor: `node:${n}`, kind: 'update.received', studyId: STUDY, round, data: { nodeId: n, bytes: 4096 + i, sha256: `${n}-${round}`.padEnd(64, '0'), clippedNorm: 0.31 + 0.07 * i + round / 1000, examples: 1200 + 10 * i } }, checkpointAfter: false }),
    );
    out.push({ fields: { at: '', actor: 'coordinator', kind: 'aggregate.published', studyId: STUDY, round, data: { modelHash: `model-${round}`, nodes: 3, sigma: 0.55 } }, checkpointAfter: false });
    out.push({ fields: { at: '', actor: 'coordinator', kind: 'privacy.spent', studyId: STUDY, round, data: { epsilonRound: 0.4123, epsilonTotal: 0.4123 * round, delta: 1e-5 } }, checkpointAfter: true });
    const extra: AuditEntryFields[] =
      between++ % 2 === 0
        ? [
            { at: '', actor: 'node:us-east', kind: 'node.key-changed', studyId: null, data: { nodeId: 'us-east', oldFingerprint: 'a', newFingerprint: 'b' } },
            { at: '', actor: 'node:cn-north', kind: 'update.refused', studyId: STUDY, round, data: { reason: 'round closed' } },
          ]
        : [{ at: '', actor: 'anonymous', kind: 'auth.failed', studyId: null, data: { route: 'GET /v1/tasks', reason: 'expired token' } }, { at: '', actor: 'admin', kind: 'policy.set', studyId: STUDY, data: { epsilon: 4 } }];
    out.push(...extra.map((fields) => ({ fields, checkpointAfter: false })));
  }
  out.length = Math.min(out.length, count);
  if (out.length > 0) out[out.length - 1] = { ...out[out.length - 1], checkpointAfter: true };
  return out.map((e, i) => ({ ...e, fields: { ...e.fields, at: time(i + 1) } }));
}

export function buildEntries(count: number): { entries: AuditEntry[]; checkpointSeqs: number[] } {
  const entries: AuditEntry[] = [];
  const checkpointSeqs: number[] = [];
  for (const { fields, checkpointAfter } of studyEvents(count)) {
    const entry = appendEntry(entries.at(-1) ?? null, fields);
    entries.push(entry);
    if (checkpointAfter) checkpointSeqs.push(entry.seq);
  }
  return { entries, checkpointSeqs };
}

export async function buildLog(count: number, key: TestKey): Promise<{ entries: AuditEntry[]; checkpoints: Checkpoint[] }> {
  const { entries, checkpointSeqs } = buildEntries(count);
  const checkpoints: Checkpoint[] = [];
  // Numbered 1, 2, 3, ... as the coordinator numbers them.
  for (const seq of checkpointSeqs) checkpoints.push(await signCheckpoint(entries[seq - 1], key.privateKey, new Date(Date.parse(entries[seq - 1].at) + 1000).toISOString(), checkpoints.length + 1));
  return { entries, checkpoints };
}

/**
 * What only the coordinator key's holder can do: rewrite history from `fromSeq` (that entry's data
 * changed, every later entry rehashed) and sign every checkpoint from there again, with the same
 * numbers and times. The result is a perfect export on its own; only copies kept elsewhere (the
 * nodes' witnessed checkpoints) can show it is not the history that was signed before.
 */
export async function rewriteAndResign(entries: readonly AuditEntry[], checkpoints: readonly Checkpoint[], fromSeq: number, privateKey: openpgp.PrivateKey): Promise<{ entries: AuditEntry[]; checkpoints: Checkpoint[] }> {
  const rewritten: AuditEntry[] = entries.slice(0, fromSeq - 1);
  for (const e of entries.slice(fromSeq - 1)) {
    const data = e.seq === fromSeq ? { ...e.data, rewritten: true } : e.data;
    rewritten.push(appendEntry(rewritten.at(-1) ?? null, { at: e.at, actor: e.actor, kind: e.kind, studyId: e.studyId, round: e.round, data }));
  }
  const resigned: Checkpoint[] = [];
  for (const c of checkpoints) {
    resigned.push(c.seq < fromSeq ? c : await signCheckpoint(rewritten[c.seq - 1], privateKey, c.at, c.number));
  }
  return { entries: rewritten, checkpoints: resigned };
}
