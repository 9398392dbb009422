import { statSync } from 'node:fs';
import type { Logger } from 'pino';
import type { DataReport, StudyConfig } from '../protocols/messages.ts';
import { consentFilter, featureColumns, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { DataError, encodeTable, readCsvTable, splitRows, subset, type EncodedData } from '../models/index.ts';
import type { DataErrorKind } from '../models/errors.ts';
import type { StatusFacts } from './release.ts';

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
export function loadData(path: string, study: StudyConfig, mtimeMs: number, policy?: PolicyProfile): LoadedData {
  let table = readCsvTable({ path });
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
  const fraction = study.training.validationFraction;
  // Stratified by label for a binary study (each part keeps the class mix); a regression target
  // has no classes to keep.
  const labels = study.task.kind === 'binary' ? all.y : undefined;
  const [trainIdx, validationIdx] = fraction > 0 ? splitRows(all.n, [1 - fraction, fraction], study.training.seed, labels) : [Array.from({ length: all.n }, (_, i) => i), []];
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
 * The node's data file as it is now: reread when its mtime changes (or when the policy that
 * decides its forbidden features changed), each (re)read reported to the coordinator.
 */
export class DataSource {
  private loaded: LoadedData | undefined;
  private lastMtime = -1;
  /** The last failure, in full (it may quote a cell): for this node's own log only. */
  lastError: string | undefined;
  /** Set once the node stopped training for good (a refusal or its ceiling): no rereads. */
  frozen = false;

  constructor(
    private readonly path: string,
    private readonly study: StudyConfig,
    private readonly report: (status: StatusFacts) => Promise<void>,
    private readonly log: Logger,
  ) {}

  get current(): LoadedData | undefined {
    return this.loaded;
  }

  /** Forgets the file's mtime, so the next refresh rereads it (e.g. under a new policy). */
  invalidate() {
    this.lastMtime = -1;
  }

  /** (Re)reads the CSV when it changed; a file that cannot be read means no training until it is fixed. */
  async refresh(policy: PolicyProfile): Promise<LoadedData | undefined> {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.path).mtimeMs;
    } catch {
      mtimeMs = -2;
    }
    if (mtimeMs === this.lastMtime || this.frozen) return this.loaded;
    this.lastMtime = mtimeMs;
    try {
      this.loaded = loadData(this.path, this.study, mtimeMs, policy);
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
