import { encodedWidth, isNumericTarget, type FeatureSpec } from '../protocols/feature-spec.ts';
import { cellPlace, makeMissingTest, parseNumericCell, quoteCell } from './cells.ts';
import type { CsvTable } from './csv-table.ts';
import { DataError } from './errors.ts';
import { mulberry32, shuffleInPlace } from '../protocols/random.ts';

/** What encoding did to a table. Counts are per feature name; features with a zero count are left out. */
export interface DataReport {
  rows: number;
  /** Rows whose label is the positive class (0 for a numeric target). */
  positives: number;
  /** Missing cells: numeric ones replaced by the spec's fill, categorical ones sent to the missing bucket. */
  missingFilled: Record<string, number>;
  /** Categorical cells whose value is not in the spec's vocabulary, sent to the other bucket. */
  unseenCategories: Record<string, number>;
}

export interface EncodedData {
  /** Row-major n x width inputs. */
  x: Float32Array;
  /**
   * Labels, 1 for the positive class, 0 otherwise; for a numeric target (regression), the raw
   * target on its own scale (the regression kind transforms it for training).
   */
  y: Float32Array;
  n: number;
  width: number;
  report: DataReport;
  /**
   * For each numeric feature with at least one filled cell, a 0/1 flag per row (1 = filled), so
   * that `subset` can count fills exactly. Absent when nothing was filled.
   */
  filled?: Record<string, Uint8Array>;
}

interface NumericPlan {
  kind: 0;
  name: string;
  column: number;
  offset: number;
  mean: number;
  std: number;
  fill: number;
  filled: number;
  flags?: Uint8Array;
}

interface CategoricalPlan {
  kind: 1;
  name: string;
  column: number;
  offset: number;
  index: Map<string, number>;
  otherSlot: number;
  missingSlot: number;
  missing: number;
  unseen: number;
}

/**
 * Encodes a table with a feature spec, in one pass over the cells.
 *
 * Numeric feature: missing cell (blank or one of `spec.missingValues`) -> `fill`, counted in
 * `report.missingFilled`; then `(value - mean) / std`. Text in a numeric column is a DataError.
 * Categorical feature: one-hot over `categories`, then one slot for unseen values (counted in
 * `report.unseenCategories`) and one for missing cells (counted in `report.missingFilled`).
 * Label: 1 when the target cell equals `spec.target.positive`, 0 for any other value; a missing
 * target cell is a DataError (a row without a label cannot be trained on). A numeric target
 * (`kind: 'numeric'`) is read as a number, raw (text in it is a DataError, as for features).
 * Columns of the table that the spec does not name are ignored; a spec column missing from the
 * header is a DataError.
 */
export function encodeTable(table: CsvTable, spec: FeatureSpec): EncodedData {
  const { header, rows } = table;
  const columnOf = (name: string, what: string): number => {
    const c = header.indexOf(name);
    if (c < 0) {
      throw new DataError(
        'missing-column',
        `line 1: ${what} ${JSON.stringify(name)} of the feature spec is missing from the header (columns: ${header.map((h) => JSON.stringify(h)).join(', ')})`,
        1,
        name,
      );
    }
    return c;
  };

  const width = encodedWidth(spec);
  const n = rows.length;
  const plans: (NumericPlan | CategoricalPlan)[] = [];
  let offset = 0;
  for (const f of spec.features) {
    const column = columnOf(f.name, 'feature column');
    if (f.kind === 'numeric') {
      plans.push({ kind: 0, name: f.name, column, offset, mean: f.mean, std: f.std, fill: f.fill, filled: 0 });
      offset += 1;
    } else {
      const index = new Map<string, number>();
      f.categories.forEach((category, i) => index.set(category, offset + i));
      const otherSlot = offset + f.categories.length;
      plans.push({ kind: 1, name: f.name, column, offset, index, otherSlot, missingSlot: otherSlot + 1, missing: 0, unseen: 0 });
      offset += f.categories.length + 2;
    }
  }
  const targetColumn = columnOf(spec.target.column, 'target column');
  const numericTarget = isNumericTarget(spec.target);
  const positive = isNumericTarget(spec.target) ? '' : spec.target.positive;
  const isMissing = makeMissingTest(spec.missingValues);

  const x = new Float32Array(n * width); // zero-filled: one-hot slots only need their 1 written
  const y = new Float32Array(n);
  let positives = 0;
  for (let r = 0; r < n; r++) {
    const row = rows[r];
    const base = r * width;
    for (let p = 0; p < plans.length; p++) {
      const plan = plans[p];
      const cell = row[plan.column];
      if (plan.kind === 0) {
        let v: number;
        if (isMissing(cell)) {
          v = plan.fill;
          plan.filled++;
          (plan.flags ??= new Uint8Array(n))[r] = 1;
        } else {
          v = parseNumericCell(cell);
          if (Number.isNaN(v)) {
            throw new DataError(
              'non-numeric',
              `${cellPlace(table.lineOf(r), plan.name, plan.column)}: ${quoteCell(cell)} is not a number, but the study's spec makes the column numeric; fix the cell, or have the study declare it missing (missingValues)`,
              table.lineOf(r),
              plan.name,
            );
          }
        }
        x[base + plan.offset] = (v - plan.mean) / plan.std;
      } else {
        let slot: number;
        if (isMissing(cell)) {
          slot = plan.missingSlot;
          plan.missing++;
        } else {
          const known = plan.index.get(cell);
          if (known === undefined) {
            slot = plan.otherSlot;
            plan.unseen++;
          } else slot = known;
        }
        x[base + slot] = 1;
      }
    }
    const label = row[targetColumn];
    if (numericTarget && !isMissing(label)) {
      const v = parseNumericCell(label);
      if (Number.isNaN(v)) {
        throw new DataError(
          'non-numeric',
          `${cellPlace(table.lineOf(r), spec.target.column, targetColumn)}: the target is numeric but holds ${quoteCell(label)}`,
          table.lineOf(r),
          spec.target.column,
        );
      }
      y[r] = v;
    } else if (!numericTarget && label === positive) {
      y[r] = 1;
      positives++;
    } else if (isMissing(label)) {
      throw new DataError(
        'missing-label',
        `line ${table.lineOf(r)}: target column ${JSON.stringify(spec.target.column)} is missing (a row without a label cannot be trained on)`,
        table.lineOf(r),
        spec.target.column,
      );
    }
  }

  const missingFilled: Record<string, number> = {};
  const unseenCategories: Record<string, number> = {};
  let filled: Record<string, Uint8Array> | undefined;
  for (const plan of plans) {
    if (plan.kind === 0) {
      if (plan.filled > 0) missingFilled[plan.name] = plan.filled;
      if (plan.flags !== undefined) (filled ??= {})[plan.name] = plan.flags;
    } else {
      if (plan.missing > 0) missingFilled[plan.name] = plan.missing;
      if (plan.unseen > 0) unseenCategories[plan.name] = plan.unseen;
    }
  }
  const data: EncodedData = { x, y, n, width, report: { rows: n, positives, missingFilled, unseenCategories } };
  if (filled !== undefined) data.filled = filled;
  // Keep the layout needed to recount a subset's categorical buckets.
  layouts.set(data, categoricalLayout(plans));
  return data;
}

interface BucketLayout {
  name: string;
  otherSlot: number;
  missingSlot: number;
}

function categoricalLayout(plans: readonly (NumericPlan | CategoricalPlan)[]): BucketLayout[] {
  const out: BucketLayout[] = [];
  for (const plan of plans) if (plan.kind === 1) out.push({ name: plan.name, otherSlot: plan.otherSlot, missingSlot: plan.missingSlot });
  return out;
}

/** Where each categorical feature's other/missing slots are, for data made by encodeTable or subset. */
const layouts = new WeakMap<EncodedData, BucketLayout[]>();

/**
 * The rows `indices` of `data` (copied, in that order). The report describes the subset: rows,
 * positives, and (for data made by `encodeTable` or `subset`) exact missing and unseen counts.
 */
export function subset(data: EncodedData, indices: ArrayLike<number>): EncodedData {
  const { width } = data;
  const n = indices.length;
  const x = new Float32Array(n * width);
  const y = new Float32Array(n);
  let positives = 0;
  for (let i = 0; i < n; i++) {
    const r = indices[i];
    if (!Number.isInteger(r) || r < 0 || r >= data.n) throw new RangeError(`subset: row index ${r} out of range [0, ${data.n})`);
    x.set(data.x.subarray(r * width, (r + 1) * width), i * width);
    y[i] = data.y[r];
    if (y[i] > 0.5) positives++;
  }

  const missingFilled: Record<string, number> = {};
  const unseenCategories: Record<string, number> = {};
  let filled: Record<string, Uint8Array> | undefined;
  for (const [name, flags] of Object.entries(data.filled ?? {})) {
    const sub = new Uint8Array(n);
    let count = 0;
    for (let i = 0; i < n; i++) count += sub[i] = flags[indices[i]];
    if (count > 0) {
      missingFilled[name] = count;
      (filled ??= {})[name] = sub;
    }
  }
  const layout = layouts.get(data);
  for (const bucket of layout ?? []) {
    let missing = 0;
    let unseen = 0;
    for (let i = 0; i < n; i++) {
      missing += x[i * width + bucket.missingSlot];
      unseen += x[i * width + bucket.otherSlot];
    }
    if (missing > 0) missingFilled[bucket.name] = missing;
    if (unseen > 0) unseenCategories[bucket.name] = unseen;
  }
  const out: EncodedData = { x, y, n, width, report: { rows: n, positives, missingFilled, unseenCategories } };
  if (filled !== undefined) out.filled = filled;
  if (layout !== undefined) layouts.set(out, layout);
  return out;
}

/**
 * Splits row indices 0..n-1 into parts of the given fractions (which must sum to 1), shuffled
 * with `seed`. With `labels`, the split is stratified: each label value (positive > 0.5 or not)
 * is split separately, so every part keeps the label mix. Each part's size is rounded by largest
 * remainder (per stratum), so sizes sum to n. Indices come back sorted within each part.
 */
export function splitRows(n: number, fractions: readonly number[], seed: number, labels?: ArrayLike<number>): number[][] {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`splitRows: n must be a non-negative integer, got ${n}`);
  if (fractions.length === 0) throw new RangeError('splitRows: no fractions');
  let total = 0;
  for (const f of fractions) {
    if (!(f >= 0) || !Number.isFinite(f)) throw new RangeError(`splitRows: fractions must be finite and >= 0, got ${f}`);
    total += f;
  }
  if (Math.abs(total - 1) > 1e-9) throw new RangeError(`splitRows: fractions must sum to 1, got ${total}`);
  if (labels !== undefined && labels.length !== n) throw new RangeError(`splitRows: ${labels.length} labels for ${n} rows`);

  const strata: number[][] = [];
  if (labels === undefined) strata.push(Array.from({ length: n }, (_, i) => i));
  else {
    const negatives: number[] = [];
    const positives: number[] = [];
    for (let i = 0; i < n; i++) (labels[i] > 0.5 ? positives : negatives).push(i);
    strata.push(negatives, positives);
  }

  const random = mulberry32(seed);
  const parts: number[][] = fractions.map(() => []);
  for (const stratum of strata) {
    shuffleInPlace(stratum, random);
    const sizes = largestRemainder(stratum.length, fractions);
    let at = 0;
    for (let p = 0; p < parts.length; p++) {
      for (let k = 0; k < sizes[p]; k++) parts[p].push(stratum[at++]);
    }
  }
  return parts.map((part) => part.sort((a, b) => a - b));
}

/** Integer sizes summing to `count`, proportional to `fractions`; ties go to the earlier part. */
function largestRemainder(count: number, fractions: readonly number[]): number[] {
  const total = fractions.reduce((a, b) => a + b, 0);
  const exact = fractions.map((f) => (f / total) * count);
  const sizes = exact.map((e) => Math.min(count, Math.floor(e)));
  let left = count - sizes.reduce((a, b) => a + b, 0);
  for (let p = sizes.length - 1; left < 0; p = (p + sizes.length - 1) % sizes.length) {
    // Only reachable through rounding in the floors above: take the excess back from the last parts.
    if (sizes[p] > 0) {
      sizes[p]--;
      left++;
    }
  }
  const order = exact.map((e, i) => ({ i, rest: e - sizes[i] })).sort((a, b) => b.rest - a.rest || a.i - b.i);
  for (let k = 0; left > 0; k = (k + 1) % order.length) {
    if (fractions[order[k].i] > 0) {
      sizes[order[k].i]++;
      left--;
    }
  }
  return sizes;
}
