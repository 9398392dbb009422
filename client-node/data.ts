import { createHash, createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { DataReport, StudyConfig } from '../protocols/messages.ts';
import { consentFilter, featureColumns, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
// Not models/index.ts: it re-exports TensorFlow.js's side, which the node loads only on first need (issue 13).
import { DataError } from '../models/errors.ts';
import { encodeTable, subset, type EncodedData } from '../models/encode.ts';
import { readCsvTable, type CsvTable } from '../models/csv-table.ts';
import type { DataErrorKind } from '../models/errors.ts';
import type { StatusFacts } from './release.ts';
import { csvSource, type TableSource } from '../models/table-sources.ts';
import { loadRecommendTable } from './data-recommend.ts';
import { loadForecastTable } from './data-forecast.ts';

/**
 * The data stage: the node's CSV, read for the study under its policy, reread when the file
 * changes. A file that cannot be used means no training until it is fixed, and the coordinator
 * hears where and what kind the problem is, never a value from the file.
 */

export interface LoadedData {
  mtimeMs: number;
  train: EncodedData;
  validation: EncodedData;
  /** Counts of rows and fixes: all the release step may pass on (if the study releases it). */
  report: DataReport;
  /** Rows of the positive class (binary studies): for this node's own log, never sent. */
  positives?: number;
}

/**
 * Reads the node's CSV for a study: rows without consent for the study's purpose are left out,
 * features the node's policy forbids are zeroed (their information never reaches the model),
 * and the counts of both go into the report; the rows themselves never leave.
 */
export function loadData(path: string, study: StudyConfig, mtimeMs: number, policy?: PolicyProfile, studyId?: string): LoadedData {
  return loadTable(readCsvTable({ path }), path, study, mtimeMs, policy, studyId);
}

/** loadData on a table already read from any source (models/table-sources.ts); `path` names the source in messages. */
export function loadTable(source: CsvTable, path: string, study: StudyConfig, mtimeMs: number, policy?: PolicyProfile, studyId?: string): LoadedData {
  let table = source;
  let droppedNoConsent: number | undefined;
  if (study.consent) {
    const col = table.header.indexOf(study.consent.column);
    if (col < 0) throw new DataError('consent-column-missing', `the study needs consent column "${study.consent.column}", which ${path} does not have`, 1, study.consent.column);
    const { keep, dropped } = consentFilter(table.rows.map((r) => r[col]), study.consent.purpose, policy ?? { consentFor: { basic: ['basic', 'personalization'], personalization: ['personalization'] } });
    droppedNoConsent = dropped;
    const rows = keep.map((i) => table.rows[i]);
    const lines = keep.map((i) => table.lineOf(i));
    table = { header: table.header, rows, lineOf: (i: number) => lines[i] };
  }
  // Recommend (issue 9): interactions and a leave-last-out split per user, not encoded rows.
  if (study.task.kind === 'recommend') return loadRecommendTable(table, path, study, mtimeMs, droppedNoConsent !== undefined ? { droppedNoConsent } : {});
  // Forecast (issue 9): derived lag/calendar rows and a time split (last horizon periods), not validationSplit.
  if (study.task.kind === 'forecast') return loadForecastTable(table, path, study, mtimeMs, policy, droppedNoConsent);
  const all = encodeTable(table, study.features);
  const forbidden = policy ? study.features.features.filter((f) => f.category && policy.forbiddenFeatureCategories.includes(f.category)).map((f) => f.name) : [];
  if (forbidden.length > 0) {
    const columns = featureColumns(study.features);
    for (const name of forbidden) {
      const { offset, width } = columns.get(name)!;
      for (let r = 0; r < all.n; r++) all.x.fill(0, r * all.width + offset, r * all.width + offset + width);
    }
  }
  if (all.n === 0) throw new DataError('no-usable-rows', `no usable rows in ${path}${droppedNoConsent ? ` (${droppedNoConsent} left out for lack of consent)` : ''}`, 1);
  const [trainIdx, validationIdx] = validationSplit(table, study, studyId);
  if (trainIdx.length === 0) throw new DataError('no-usable-rows', `no usable rows in ${path} to train on after the validation split`, 1);
  // Counts of rows and of fixes, never a label statistic (the class balance stays in this node's
  // own log); the release step picks these fields again by name.
  const report: DataReport = {
    rows: all.report.rows,
    ...(droppedNoConsent !== undefined ? { droppedNoConsent } : {}),
    ...(forbidden.length ? { droppedFeatures: forbidden } : {}),
    missingFilled: all.report.missingFilled,
    unseenCategories: all.report.unseenCategories,
  };
  return { mtimeMs, train: subset(all, trainIdx), validation: subset(all, validationIdx), report, positives: (all.report as { positives?: number }).positives };
}

/**
 * The train/validation split: row i goes to validation iff HMAC-SHA256(key, row key) read as a
 * 53-bit fraction is below validationFraction. Each row's side depends on that row alone, so
 * adding or removing a row of the CSV moves no other row across the split, and DP-SGD's
 * record-level epsilon (add/remove one training row) holds for neighbouring CSVs, not only for
 * neighbouring training sets. (The seeded shuffle cut at fixed sizes used before moved 79 of 400
 * other rows when one row was added: at CSV level that was a group bound over ~80 rows.)
 * The row key is the study's declared id column (training.idColumn) when there is one, else the
 * row's content in the study's columns (target, then features in spec order, trimmed), so
 * reordering rows or adding an unrelated column moves nothing either. The key is per study and
 * stable across rounds and restarts (studyKey). The validation share is Binomial(n, fraction), no
 * longer exact, and no longer stratified by label.
 */
export function validationSplit(table: CsvTable, study: StudyConfig, studyId?: string): [number[], number[]] {
  const fraction = study.training.validationFraction;
  const train: number[] = [];
  const validation: number[] = [];
  if (!(fraction > 0)) return [table.rows.map((_, i) => i), []];
  const keys = rowKeys(table, study);
  const key = studyKey(study, studyId);
  keys.forEach((rowKey, i) => (hashFraction(key, rowKey) < fraction ? validation : train).push(i));
  return [train, validation];
}

/** The split's HMAC key: SHA-256 of the study id (its name when the id is not known) and the training seed. */
export function studyKey(study: StudyConfig, studyId?: string): Buffer {
  return createHash('sha256').update(`fedmark/validation-split/v1\0${studyId ?? `name:${study.name}`}\0${study.training.seed}`).digest();
}

/** HMAC-SHA256(key, rowKey) as a fraction in [0, 1) with 53 bits. */
export function hashFraction(key: Buffer, rowKey: string): number {
  const h = createHmac('sha256', key).update(rowKey).digest();
  return (h.readUInt32BE(0) * 2 ** 21 + (h.readUInt32BE(4) >>> 11)) / 2 ** 53;
}

function rowKeys(table: CsvTable, study: StudyConfig): string[] {
  const idColumn = study.training.idColumn;
  const columns = idColumn ? [idColumn] : [study.features.target.column, ...study.features.features.map((f) => f.name)];
  const index = columns.map((c) => {
    const i = table.header.indexOf(c);
    if (i < 0) throw new DataError('missing-column', `the study's ${c === idColumn ? 'id column' : 'column'} "${c}" is missing from the data`, 1, c);
    return i;
  });
  return table.rows.map((row) => (idColumn ? `id:${(row[index[0]] ?? '').trim()}` : JSON.stringify(index.map((i) => (row[i] ?? '').trim()))));
}

/**
 * The node's data file as it is now: reread when its mtime changes (or when the policy that
 * decides its forbidden features changed), each (re)read reported to the coordinator.
 */
export class DataSource {
  private loaded: LoadedData | undefined;
  private lastMtime = -1;
  private readonly source: TableSource;
  private readonly path: string;
  /** The last failure, in full (it may quote a cell): for this node's own log only. */
  lastError: string | undefined;
  /** Set once the node stopped training for good (a refusal or its ceiling): no rereads. */
  frozen = false;

  constructor(
    /** A CSV path, or any table source (a Parquet file, a PostgreSQL table or query). */
    source: string | TableSource,
    private readonly study: StudyConfig,
    private readonly report: (status: StatusFacts) => Promise<void>,
    private readonly log: Logger,
    /** The study's id: keys the train/validation split (validationSplit). */
    private readonly studyId?: string,
  ) {
    this.source = typeof source === 'string' ? csvSource(source) : source;
    this.path = this.source.describe;
  }

  get current(): LoadedData | undefined {
    return this.loaded;
  }

  /** Forgets the file's mtime, so the next refresh rereads it (e.g. under a new policy). */
  invalidate() {
    this.lastMtime = -1;
  }

  /** (Re)reads the CSV when it changed; a file that cannot be read means no training until it is fixed. */
  async refresh(policy: PolicyProfile): Promise<LoadedData | undefined> {
    const mtimeMs = this.source.version();
    if (mtimeMs === this.lastMtime || this.frozen) return this.loaded;
    this.lastMtime = mtimeMs;
    try {
      this.loaded = loadTable(await this.source.read(), this.path, this.study, mtimeMs, policy, this.studyId);
      this.lastError = undefined;
      const { train, validation, report, positives } = this.loaded;
      this.log.info({ file: this.path, ...report, positives, trainRows: train.n, validationRows: validation.n }, 'data loaded');
      await this.report({ state: 'ready', data: report });
    } catch (err) {
      this.loaded = undefined;
      this.lastError = `${this.path}: ${err instanceof Error ? err.message : String(err)}`;
      // The full message (which may quote a cell) stays in the node's own log; the coordinator
      // gets where the problem is and what kind it is, never a value from the file.
      this.log.error({ file: this.path, error: this.lastError }, 'data file cannot be used; not training until it is fixed');
      await this.report({ state: 'data-error', message: describeDataError(err) });
    }
    return this.loaded;
  }
}

/** How each kind of data problem is named to the coordinator (every kind has words: the map is total). */
const DATA_ERROR_WORDS: Record<DataErrorKind, string> = {
  'csv-syntax': 'CSV syntax error',
  'empty-file': 'empty file',
  'duplicate-column': 'duplicate column name',
  'field-count': 'wrong number of fields',
  'missing-column': 'a column of the study is missing',
  'non-numeric': 'text in a numeric column',
  'missing-label': 'a row without a label',
  'consent-column-missing': 'consent column missing',
  'no-usable-rows': 'no usable rows',
  'source-unreadable': 'the data source cannot be read',
  'source-options': 'the data source options do not fit it',
};

/**
 * A data problem in words that carry no value from the file: line, column name, kind. The kind
 * was set where the error was thrown; the message (which may quote a cell, the path or column
 * names) is never looked at.
 */
export function describeDataError(err: unknown): string {
  if (!(err instanceof DataError)) return 'the data file cannot be read (details in the node log)';
  return `line ${err.line}${err.column ? `, column ${err.column}` : ''}: ${DATA_ERROR_WORDS[err.kind]} (details in the node's own log)`;
}
