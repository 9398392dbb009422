import type { DataReport, StudyConfig } from '../protocols/messages.ts';
import { featureColumns, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { DataError } from '../models/errors.ts';
import { encodeTable, subset } from '../models/encode.ts';
import type { CsvTable } from '../models/csv-table.ts';
import { buildForecastRows, type ForecastEncoded } from '../models/forecast-features.ts';
import type { LoadedData } from './data.ts';

/**
 * The data stage of a forecast study (issue 9): the node's long-format table becomes derived rows
 * (lags, windows, calendar, covariates: models/forecast-features.ts) encoded with the study's
 * FeatureSpec, split in TIME: the last `horizon` periods of every series are the validation rows
 * (never a random split; validationFraction does not apply), the rest is trained on. No row and
 * no series id leaves the node: the validation rows carry their series index and seasonal-naive
 * value for the node's own evaluation only.
 */
export function loadForecastTable(table: CsvTable, path: string, study: StudyConfig, mtimeMs: number, policy: PolicyProfile | undefined, droppedNoConsent: number | undefined): LoadedData {
  const task = study.task;
  if (task.kind !== 'forecast') throw new Error(`loadForecastTable: task.kind is ${task.kind}`);
  const rows = buildForecastRows(table, task, study.features.target.column, study.features.missingValues);
  const all = encodeTable(rows.table, study.features);
  const forbidden = policy ? study.features.features.filter((f) => f.category && policy.forbiddenFeatureCategories.includes(f.category)).map((f) => f.name) : [];
  if (forbidden.length > 0) {
    const columns = featureColumns(study.features);
    for (const name of forbidden) {
      const { offset, width } = columns.get(name)!;
      for (let r = 0; r < all.n; r++) all.x.fill(0, r * all.width + offset, r * all.width + offset + width);
    }
  }
  const trainIdx: number[] = [];
  const validationIdx: number[] = [];
  rows.validation.forEach((held, i) => (held ? validationIdx : trainIdx).push(i));
  const longest = Math.max(...task.lags, ...task.windows.map((w) => w + task.horizon - 1));
  if (trainIdx.length === 0) throw new DataError('no-usable-rows', `no row of ${path} to train on: each series needs values for more than ${longest} periods (its longest lag or window) plus the ${task.horizon} held-out periods`, 1);
  if (validationIdx.length === 0) throw new DataError('no-usable-rows', `no row of ${path} to validate on: the last ${task.horizon} periods of every series lack a value, a lag or a seasonal-naive value`, 1);
  const validation: ForecastEncoded = {
    ...subset(all, validationIdx),
    forecast: {
      series: Int32Array.from(validationIdx, (i) => rows.rowSeries[i]),
      naive: Float64Array.from(validationIdx, (i) => rows.naive[i]),
      scales: rows.scales,
    },
  };
  const report: DataReport = {
    rows: all.report.rows,
    ...(droppedNoConsent !== undefined ? { droppedNoConsent } : {}),
    ...(forbidden.length ? { droppedFeatures: forbidden } : {}),
    missingFilled: all.report.missingFilled,
    unseenCategories: all.report.unseenCategories,
  };
  return { mtimeMs, train: subset(all, trainIdx), validation, report };
}
