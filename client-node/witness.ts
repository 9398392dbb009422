import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { verifyCheckpointSignature, type Checkpoint } from '../protocols/audit/audit-chain.ts';
import { readWitnessFile, WITNESS_FILE, witnessLine, type WitnessRecord } from '../protocols/audit/witness.ts';
import type { Task } from '../protocols/messages.ts';
import type { CoordinatorTrust } from './identity.ts';

/**
 * The node as a witness of the coordinator's audit log: every signed checkpoint that comes with a
 * task is checked against the pinned coordinator key and appended to
 * `audit-witness.jsonl` in the state folder, once. An auditor then runs
 * `fedmark audit verify EXPORT --witness STATE_DIR`: a log rewritten after this node saw a
 * checkpoint (even one re-signed by the coordinator key) no longer matches this copy. The node
 * itself raises an alarm in its log when a new checkpoint contradicts one it kept.
 */
class AuditWitness {
  private readonly seen: Set<string>;

  private constructor(
    private readonly path: string,
    private readonly records: WitnessRecord[],
    private readonly log: Logger,
  ) {
    this.seen = new Set(records.map((r) => keyOf(r.checkpoint)));
  }

  static open(stateDir: string, log: Logger): AuditWitness {
    let records: WitnessRecord[] = [];
    try {
      records = readWitnessFile(stateDir);
    } catch (err) {
      // No file yet is the normal start; a damaged one is kept as it is and appended to.
      if (!/no witness file/.test(String(err))) log.error({ err: String(err) }, 'audit witness file unreadable; new checkpoints are still appended');
    }
    return new AuditWitness(join(stateDir, WITNESS_FILE), records, log);
  }

  async observe(checkpoint: Checkpoint | undefined, trust: Pick<CoordinatorTrust, 'key' | 'fingerprint' | 'followRotations'>): Promise<void> {
    if (!checkpoint || this.seen.has(keyOf(checkpoint))) return;
    if (checkpoint.coordinatorFingerprint !== trust.fingerprint.toLowerCase()) await trust.followRotations().catch(() => false);
    if (!(await verifyCheckpointSignature(checkpoint, trust.key))) {
      this.log.warn({ seq: checkpoint.seq, number: checkpoint.number, signedBy: checkpoint.coordinatorFingerprint }, 'audit checkpoint not kept: its signature does not verify with the pinned coordinator key');
      return;
    }
    const conflict = this.conflictWith(checkpoint);
    // Kept even when it conflicts: the two signed checkpoints side by side are the evidence.
    this.append({ receivedAt: new Date().toISOString(), checkpoint });
    if (conflict) this.log.error({ seq: checkpoint.seq, number: checkpoint.number, headHash: checkpoint.headHash, witnessed: conflict }, 'AUDIT ALARM: the coordinator signed an audit checkpoint that contradicts one this node witnessed: its log was rewritten');
  }

  /** A kept checkpoint this one contradicts: same seq or number with another head, or a head older than the latest seen. */
  private conflictWith(c: Checkpoint): Checkpoint | undefined {
    const latest = this.records.reduce<Checkpoint | undefined>((a, r) => (!a || r.checkpoint.seq > a.seq ? r.checkpoint : a), undefined);
    return (
      this.records.map((r) => r.checkpoint).find((w) => (w.seq === c.seq && w.headHash !== c.headHash) || (w.number !== undefined && w.number === c.number && w.seq !== c.seq)) ??
      (latest && c.seq < latest.seq ? latest : undefined)
    );
  }

  /**
   * Appended without an fsync: a new checkpoint comes with every task, and the fsync was the
   * witness's main cost (~10 ms a round, 208 ms of a demo node's CPU). The line is in the page
   * cache once written, so a crash of the node process loses nothing; only a machine crash can
   * lose the last few lines, and each later checkpoint covers the log up to a later head anyway.
   * (The privacy ledger, which must survive, still fsyncs every spend.)
   */
  private append(record: WitnessRecord): void {
    const fd = openSync(this.path, 'a', 0o600);
    try {
      writeSync(fd, witnessLine(record));
    } finally {
      closeSync(fd);
    }
    this.records.push(record);
    this.seen.add(keyOf(record.checkpoint));
  }
}

const keyOf = (c: Checkpoint) => `${c.seq}:${c.headHash}:${c.number ?? ''}`;
const witnesses = new Map<string, AuditWitness>();

/** The hook where a task arrives: keeps its audit checkpoint. Never fails the task (a witness problem is logged). */
export async function witnessCheckpoint(stateDir: string, task: Pick<Task, 'auditCheckpoint'>, trust: Pick<CoordinatorTrust, 'key' | 'fingerprint' | 'followRotations'>, log: Logger): Promise<void> {
  try {
    let witness = witnesses.get(stateDir);
    if (!witness) witnesses.set(stateDir, (witness = AuditWitness.open(stateDir, log)));
    await witness.observe(task.auditCheckpoint, trust);
  } catch (err) {
    log.error({ err: err instanceof Error ? err.message : String(err) }, 'audit witness: could not keep the checkpoint');
  }
}
