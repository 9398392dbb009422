import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { computeEpsilon, epsilonFromRdp, rdpCurve, type AccountantName } from '../protocols/privacy/index.ts';

/**
 * The node's own record of what its rows have paid in privacy, kept next to its data and trusted
 * over anything the coordinator says. Entries of different (q, sigma) compose by adding RDP
 * curves (Mironov 2017, Proposition 1); when every entry shares one (q, sigma), the accountant
 * is asked for the whole composition at once, which lets the PLD accountant be tight.
 */
export interface LedgerEntry {
  studyId: string;
  round: number;
  samplingRate: number;
  noiseMultiplier: number;
  steps: number;
  at: string;
}

export class NodePrivacyLedger {
  private entries: LedgerEntry[];

  constructor(
    private readonly file: string,
    readonly accountant: AccountantName,
    readonly delta: number,
  ) {
    this.entries = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')).entries as LedgerEntry[]) : [];
  }

  static in(stateDir: string, accountant: AccountantName, delta: number) {
    return new NodePrivacyLedger(join(stateDir, 'privacy-ledger.json'), accountant, delta);
  }

  get all(): readonly LedgerEntry[] {
    return this.entries;
  }

  /** Epsilon at this ledger's delta after the given entries (all recorded ones by default). */
  epsilon(entries: readonly Omit<LedgerEntry, 'at'>[] = this.entries): number {
    if (entries.length === 0) return 0;
    const same = entries.every((e) => e.samplingRate === entries[0].samplingRate && e.noiseMultiplier === entries[0].noiseMultiplier);
    if (same) {
      const steps = entries.reduce((s, e) => s + e.steps, 0);
      return computeEpsilon({ q: entries[0].samplingRate, sigma: entries[0].noiseMultiplier, steps, delta: this.delta }, this.accountant);
    }
    let total: Float64Array | undefined;
    for (const e of entries) {
      const curve = rdpCurve(e.samplingRate, e.noiseMultiplier, e.steps);
      if (!total) total = Float64Array.from(curve);
      else for (let i = 0; i < total.length; i++) total[i] += curve[i];
    }
    return epsilonFromRdp(total!, this.delta).epsilon;
  }

  /** Epsilon if `next` were spent too: what the ceiling check compares. */
  epsilonIf(next: Omit<LedgerEntry, 'at'>): number {
    return this.epsilon([...this.entries, next]);
  }

  /**
   * Records a spend; written before training (a model trained is a release that may leave). Every
   * training run counts, even a second one for the same round after a failed submission: each
   * used fresh sampling and noise.
   */
  record(entry: Omit<LedgerEntry, 'at'>): void {
    this.entries.push({ ...entry, at: new Date().toISOString() });
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify({ accountant: this.accountant, delta: this.delta, entries: this.entries }, null, 2));
    renameSync(tmp, this.file);
  }
}
