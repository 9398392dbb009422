/**
 * Witnesses: every node keeps each signed checkpoint the coordinator handed it with its tasks
 * (client-node/witness.ts writes them), in `audit-witness.jsonl` in its state folder, one line per
 * checkpoint: canonical JSON of {receivedAt, checkpoint}.
 *
 * A checkpoint proves what the log held when it was signed, but whoever holds the coordinator key
 * can rewrite the log and sign it all again. Copies kept by the nodes, outside the operator's
 * reach, close that gap: an export must contain every checkpoint a node saw, with the same head
 * hash, and extend the latest one. Rewriting history then needs every partner's copies too.
 *
 * Pure apart from reading the file: zod, the chain's schemas and protocols/crypto.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { PublicKey } from '../crypto/keys.ts';
import { Checkpoint, canonicalJson, verifyCheckpointSignature, type AuditEntry, type VerifyResult } from './audit-chain.ts';

export const WITNESS_FILE = 'audit-witness.jsonl';

export const WitnessRecord = z.strictObject({
  /** When the node received the checkpoint (its own clock). */
  receivedAt: z.iso.datetime({ offset: true }),
  checkpoint: Checkpoint,
});
export type WitnessRecord = z.infer<typeof WitnessRecord>;

export interface WitnessReport {
  stateDir: string;
  /** Distinct checkpoints the node witnessed; each is in the export. */
  checkpoints: number;
  latestSeq: number | null;
  latestNumber: number | null;
}

type Failure = Extract<VerifyResult, { ok: false }>;

/** The one line a node appends for a checkpoint. */
export function witnessLine(record: WitnessRecord): string {
  return canonicalJson(record) + '\n';
}

/**
 * Every record of a node's witness file. A line cut short by a crash is the last one and is
 * skipped (the node appends and fsyncs, so only the last line can be partial); any other bad line
 * throws, naming the file and line.
 */
export function readWitnessFile(stateDir: string): WitnessRecord[] {
  const path = join(stateDir, WITNESS_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${path}: ${code === 'ENOENT' ? 'no witness file (is this a node state folder, and has the node received a task since it was upgraded?)' : `cannot be read (${code ?? String(err)})`}`);
  }
  const lines = text.split('\n');
  const records: WitnessRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] === '') continue;
    let parsed: ReturnType<typeof WitnessRecord.safeParse>;
    try {
      parsed = WitnessRecord.safeParse(JSON.parse(lines[i]));
    } catch {
      if (i === lines.length - 1) break; // the partial last line of a crash
      throw new Error(`${path} line ${i + 1}: not valid JSON`);
    }
    if (!parsed.success) throw new Error(`${path} line ${i + 1}: ${parsed.error.issues[0]?.message}`);
    records.push(parsed.data);
  }
  return records;
}

const short = (hash: string) => hash.slice(0, 12);
const named = (c: Checkpoint) => `checkpoint ${c.number !== undefined ? `#${c.number} ` : ''}(seq ${c.seq}, head ${short(c.headHash)}, signed ${c.at})`;

/**
 * The export against one node's witnessed checkpoints: each must be signed by a key the export
 * trusts, be in the export at the same seq with the same head hash (and number), and the export's
 * chain must reach the latest one.
 */
export async function checkWitnesses(
  stateDir: string,
  data: { entries: readonly AuditEntry[]; checkpoints: readonly Checkpoint[] },
  trusted: ReadonlyMap<string, { key: PublicKey; fromSeq: number }>,
): Promise<{ ok: true; report: WitnessReport } | { ok: false; failure: Failure }> {
  const conflict = (seq: number | null, message: string) => ({ ok: false as const, failure: { ok: false as const, problem: 'witness-conflict' as const, seq, message: `witness ${stateDir}: ${message}` } });
  let records: WitnessRecord[];
  try {
    records = readWitnessFile(stateDir);
  } catch (err) {
    return conflict(null, err instanceof Error ? err.message : String(err));
  }
  const bySeq = new Map(data.checkpoints.map((c) => [c.seq, c]));
  const seen = new Set<string>();
  let latest: Checkpoint | null = null;
  for (const { checkpoint: w, receivedAt } of records) {
    const signer = trusted.get(w.coordinatorFingerprint);
    if (!signer || !(await verifyCheckpointSignature(w, signer.key))) {
      return conflict(w.seq, `the node's ${named(w)} is not signed by the export's coordinator key or a key it rotated to: the export comes from another coordinator, or the witness file was altered`);
    }
    const exported = bySeq.get(w.seq);
    if (!exported) {
      return conflict(w.seq, `${named(w)}, which the node received on ${receivedAt}, is not in the export: the log was cut or rewritten after it was signed`);
    }
    if (exported.headHash !== w.headHash || exported.number !== w.number) {
      return conflict(w.seq, `${named(w)}, which the node received on ${receivedAt}, conflicts with the export's ${named(exported)}: the history up to seq ${w.seq} was rewritten and signed again`);
    }
    seen.add(`${w.seq}:${w.headHash}`);
    if (!latest || w.seq > latest.seq) latest = w;
  }
  if (latest && data.entries[latest.seq - 1]?.hash !== latest.headHash) {
    return conflict(latest.seq, `the export does not extend the latest witnessed ${named(latest)}: its entry ${latest.seq} is ${data.entries[latest.seq - 1] ? `hashed ${short(data.entries[latest.seq - 1].hash)}` : 'missing'}`);
  }
  return { ok: true, report: { stateDir, checkpoints: seen.size, latestSeq: latest?.seq ?? null, latestNumber: latest?.number ?? null } };
}
