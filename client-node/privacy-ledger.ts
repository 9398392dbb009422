import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { computeEpsilon, epsilonFromRdp, rdpCurve, type AccountantName } from '../protocols/privacy/index.ts';

/**
 * The node's own record of what its rows have paid in privacy, trusted over anything the
 * coordinator says, and kept per DATA SOURCE, not per enrollment: one append-only JSONL file per
 * data source in a ledger directory shared by every enrollment on the machine (`--ledger-dir`,
 * FEDMARK_NODE_LEDGER_DIR, default ~/.fedmark/ledgers). The same CSV used by two studies (two
 * state dirs) is one ledger, and `--max-epsilon` bounds what all of them spend together.
 *
 * Composition across studies: entries of different (q, sigma) compose by adding their RDP curves
 * (Mironov 2017, "Renyi Differential Privacy", Proposition 1), which is the composition of the
 * per-study mechanisms, not a sum of their epsilons; when every entry shares one (q, sigma), the
 * accountant is asked for the whole composition at once, which lets the PLD accountant be tight.
 *
 * Durability: each spend is one line, appended and fsynced before training starts (a model
 * trained is a release that may leave). A crash mid-append leaves a last line without its
 * newline: it is detected on read (tornTail) and cut off before the next append, which is safe
 * because training starts only after the fsync returned. A malformed line that is not the last
 * is corruption: the ledger refuses to be read (the node stops training) rather than forget a
 * spend. Appends by several node processes are serialized by a lock file, and the ceiling is
 * checked again under the lock, so two studies cannot both pass the last check and overspend.
 */
export interface LedgerEntry {
  studyId: string;
  round: number;
  samplingRate: number;
  noiseMultiplier: number;
  steps: number;
  at: string;
  /** The accountant and delta of the study that spent it (for `fedmark privacy report --node-state`). */
  accountant?: AccountantName;
  delta?: number;
}

/** File in a node's state dir naming its shared ledger. */
export const LEDGER_REF = 'privacy-ledger.ref';

export class LedgerCeilingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LedgerCeilingError';
  }
}

/** Where the shared ledgers live: the option, else FEDMARK_NODE_LEDGER_DIR, else ~/.fedmark/ledgers. */
export function ledgerDirectory(option?: string): string {
  return resolve(option ?? process.env.FEDMARK_NODE_LEDGER_DIR ?? join(homedir(), '.fedmark', 'ledgers'));
}

/**
 * The data source's key: SHA-256 of the id the partner gave it (FEDMARK_NODE_DATA_SOURCE_ID:
 * the same data under two paths, or moved, stays one ledger), else of the data file's canonical
 * path (symlinks and relative paths resolved).
 */
export function dataSourceKey(dataPath: string, dataSourceId?: string): string {
  // A PostgreSQL source is its server and database (the credentials left out): every table of
  // one database shares a ledger unless the partner names the source (over-counting, never under).
  if (/^postgres(ql)?:\/\//i.test(dataPath) && !dataSourceId) {
    let u: URL;
    try {
      u = new URL(dataPath);
    } catch {
      // The message must not carry the URL: it may hold a password.
      throw new Error('the PostgreSQL --data URL cannot be parsed (check its quoting); give the password through PGPASSWORD or ~/.pgpass, not in the URL');
    }
    return createHash('sha256').update(`fedmark/data-source/v1\0postgres\0${u.hostname}:${u.port || 5432}/${u.pathname.replace(/^\//, '')}`).digest('hex');
  }
  let canonical = resolve(dataPath);
  try {
    canonical = realpathSync(canonical);
  } catch {
    // Not there (yet): the resolved path is its name.
  }
  const name = dataSourceId ? `id\0${dataSourceId}` : `path\0${canonical}`;
  return createHash('sha256').update(`fedmark/data-source/v1\0${name}`).digest('hex');
}

export interface LedgerSource {
  data: string;
  stateDir: string;
  ledgerDir?: string;
  dataSourceId?: string;
}

/** LEDGER_REF files this process wrote, with the ledger path each names. */
const refsWritten = new Map<string, string>();

export class NodePrivacyLedger {
  private entries: LedgerEntry[] = [];
  /** The file's last line had no newline when it was last read (a crash mid-append). */
  tornTail = false;
  private validBytes = 0;

  constructor(
    readonly file: string,
    readonly accountant: AccountantName,
    readonly delta: number,
    /** The partner's ceiling, checked again under the lock by record(). */
    readonly ceiling?: number,
  ) {
    this.reload();
  }

  /** The shared ledger of `source`'s data (created if new; a legacy per-state-dir ledger is moved in once). */
  static for(source: LedgerSource, accountant: AccountantName, delta: number, ceiling?: number): NodePrivacyLedger {
    const dir = ledgerDirectory(source.ledgerDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `${dataSourceKey(source.data, source.dataSourceId ?? process.env.FEDMARK_NODE_DATA_SOURCE_ID)}.jsonl`);
    const ledger = new NodePrivacyLedger(file, accountant, delta, ceiling);
    ledger.adoptLegacy(join(source.stateDir, 'privacy-ledger.json'));
    // Where this enrollment's ledger is, for `fedmark privacy report --node-state DIR`. Written
    // once per process: for() runs at every fit task, and this rewrite was most of its cost
    // (130 ms of a demo node's CPU; the ledger itself is still reread every time).
    const ref = join(source.stateDir, LEDGER_REF);
    if (refsWritten.get(ref) !== file && existsSync(source.stateDir)) {
      writeFileSync(ref, file + '\n');
      refsWritten.set(ref, file);
    }
    return ledger;
  }

  get all(): readonly LedgerEntry[] {
    return this.entries;
  }

  /** Rereads the file (another enrollment may have appended). */
  reload(): void {
    this.entries = [];
    this.tornTail = false;
    this.validBytes = 0;
    if (!existsSync(this.file)) return;
    const bytes = readFileSync(this.file);
    const text = bytes.toString('utf8');
    if (this.file.endsWith('.json')) {
      // A ledger written before 2026-12-02 (one JSON document in the state dir): read-only.
      this.entries = legacyEntries(text);
      return;
    }
    const end = bytes.lastIndexOf(0x0a) + 1;
    this.validBytes = end;
    this.tornTail = end < bytes.length;
    const lines = bytes.subarray(0, end).toString('utf8').split('\n').slice(0, -1);
    this.entries = lines.map((line, i) => parseEntry(line, this.file, i + 1));
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
   * Records a spend, before training: under the lock, rereads the file, refuses
   * (LedgerCeilingError) if the ceiling would be crossed, cuts a torn tail, appends one line and
   * fsyncs. Every training run counts, even a second one for the same round after a failed
   * submission: each used fresh sampling and noise.
   */
  record(entry: Omit<LedgerEntry, 'at'>): void {
    this.locked(() => {
      this.reload();
      if (this.ceiling !== undefined) {
        const after = this.epsilonIf(entry);
        if (after > this.ceiling) {
          throw new LedgerCeilingError(`round ${entry.round} of study ${entry.studyId} would bring this data source to epsilon ${after.toFixed(4)} (delta ${this.delta}), over its ceiling of ${this.ceiling}`);
        }
      }
      this.append([{ ...entry, accountant: this.accountant, delta: this.delta, at: new Date().toISOString() }]);
    });
  }

  private append(entries: LedgerEntry[]): void {
    const created = !existsSync(this.file);
    if (this.tornTail) truncateSync(this.file, this.validBytes);
    const fd = openSync(this.file, 'a', 0o600);
    try {
      writeSync(fd, entries.map((e) => JSON.stringify(e) + '\n').join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (created) fsyncDirectory(join(this.file, '..'));
    this.reload();
  }

  /** Moves a ledger kept in the state dir before ledgers were shared into this one, once. */
  private adoptLegacy(legacy: string): void {
    if (!existsSync(legacy)) return;
    this.locked(() => {
      this.reload();
      const old = legacyEntries(readFileSync(legacy, 'utf8'));
      const seen = new Set(this.entries.map((e) => `${e.studyId}/${e.round}/${e.at}`));
      const missing = old.filter((e) => !seen.has(`${e.studyId}/${e.round}/${e.at}`));
      if (missing.length > 0) this.append(missing);
      renameSync(legacy, `${legacy}.moved-to-shared-ledger`);
    });
  }

  /** Runs `fn` holding `<file>.lock` (O_EXCL); a lock left by a dead process is broken. */
  private locked<T>(fn: () => T): T {
    const lock = `${this.file}.lock`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const fd = openSync(lock, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (!holderAlive(lock)) {
          try {
            unlinkSync(lock);
          } catch {
            // Another process broke it first.
          }
          continue;
        }
        if (Date.now() > deadline) throw new Error(`the privacy ledger ${this.file} stayed locked for 30 s (${lock})`);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      }
    }
    try {
      return fn();
    } finally {
      unlinkSync(lock);
    }
  }
}

/** Entries of a pre-2026-12-02 ledger (one JSON document; accountant and delta at the top). */
function legacyEntries(text: string): LedgerEntry[] {
  const doc = JSON.parse(text) as { accountant: AccountantName; delta: number; entries: LedgerEntry[] };
  return doc.entries.map((e) => ({ accountant: doc.accountant, delta: doc.delta, ...e }));
}

function holderAlive(lock: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(lock, 'utf8'));
  } catch {
    return true; // just created, pid not written yet (or just removed): try again
  }
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function fsyncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not supported on this platform: the file's own fsync still holds its contents.
  }
}

function parseEntry(line: string, file: string, lineNumber: number): LedgerEntry {
  let e: LedgerEntry;
  try {
    e = JSON.parse(line) as LedgerEntry;
  } catch {
    throw new Error(`the privacy ledger ${file} is corrupt at line ${lineNumber} (not its last line): refusing to use it until it is repaired`);
  }
  const ok = typeof e?.studyId === 'string' && [e.round, e.samplingRate, e.noiseMultiplier, e.steps].every((v) => typeof v === 'number' && Number.isFinite(v));
  if (!ok) throw new Error(`the privacy ledger ${file} has a malformed entry at line ${lineNumber}: refusing to use it until it is repaired`);
  return e;
}
