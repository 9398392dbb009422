import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_POLICIES, type PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import type { FeatureSpec } from '../protocols/feature-spec.ts';
import { delimiterName, parseDelimiter, readCsvTable, type CsvDelimiter } from '../models/csv-table.ts';
import { flagColumns, type ColumnFlag } from '../models/column-flags.ts';
import { inferFeatureSpecReport, writeFeatureSpecFile, type MissingMarker } from '../models/infer-spec.ts';

/**
 * `fedmark spec infer data.csv --target T`: the study's feature spec (protocols/feature-spec.ts)
 * from a CSV the study owner may look at, with the columns to decide about flagged (ids, free
 * text, sensitive categories under the planned jurisdictions: models/column-flags.ts). Flagged
 * ids and free text are left out unless kept (--keep): minimization is the default, keeping is
 * a decision. So is a sensitive column a planned jurisdiction forbids. Other sensitive columns
 * stay in, tagged with their category, so that the coordinator refuses a study a participant's
 * law forbids them in, and nodes zero them.
 */

/** What `spec infer` and `study init` need to build a spec. */
export interface SpecPlanOptions {
  data: string;
  target: string;
  task?: 'binary' | 'regression';
  positive?: string;
  jurisdictions?: string[];
  exclude?: string[];
  keep?: string[];
  missingValues?: string[];
  delimiter?: CsvDelimiter;
}

export interface FlaggedColumn extends ColumnFlag {
  /** Left out of the spec (ids and free text unless kept; never sensitive ones). */
  excluded: boolean;
}

/** A spec and what the owner should know about it. */
export interface SpecPlan {
  file: string;
  rows: number;
  delimiter: CsvDelimiter;
  spec: FeatureSpec;
  flagged: FlaggedColumn[];
  /** Columns left out because they were flagged (the owner's own --exclude not included). */
  excluded: string[];
  missingMarkers: MissingMarker[];
  jurisdictions: PolicyProfile[];
}

/** Built-in profiles by name; an unknown name is an error naming the flag and the known ones. */
export function resolveJurisdictions(names: readonly string[]): PolicyProfile[] {
  return names.map((name) => {
    const profile = DEFAULT_POLICIES.find((p) => p.jurisdiction.toLowerCase() === name.trim().toLowerCase());
    if (!profile) throw new InvalidArgumentError(`--jurisdiction: unknown profile ${JSON.stringify(name)}; built-in profiles: ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}`);
    return profile;
  });
}

/** Reads the CSV, flags its columns, and infers the spec without the flagged ids and free text. */
export function planSpec(options: SpecPlanOptions): SpecPlan {
  const table = readCsvTable({ path: options.data }, options.delimiter ? { delimiter: options.delimiter } : {});
  const jurisdictions = resolveJurisdictions(options.jurisdictions ?? []);
  const columns = `columns: ${table.header.map((h) => JSON.stringify(h)).join(', ')}`;
  for (const name of options.keep ?? []) {
    if (!table.header.includes(name)) throw new InvalidArgumentError(`--keep: column ${JSON.stringify(name)} is not in ${options.data} (${columns})`);
  }
  for (const name of options.exclude ?? []) {
    if (!table.header.includes(name)) throw new InvalidArgumentError(`--exclude: column ${JSON.stringify(name)} is not in ${options.data} (${columns})`);
  }
  if (!table.header.includes(options.target)) throw new InvalidArgumentError(`--target: column ${JSON.stringify(options.target)} is not in ${options.data} (${columns})`);
  const keep = new Set(options.keep ?? []);
  const userExcluded = new Set(options.exclude ?? []);
  const flags = flagColumns(table, { target: options.target, skip: [...userExcluded], missingValues: options.missingValues, jurisdictions });
  // Ids and free text always; a sensitive column only when a planned jurisdiction forbids it.
  const leaveOut = (f: ColumnFlag) => !keep.has(f.column) && (f.kind !== 'sensitive' || (jurisdictions.length > 0 && (f.forbiddenUnder ?? []).length > 0));
  const excluded = [...new Set(flags.filter(leaveOut).map((f) => f.column))];
  const { spec, missingMarkers } = inferFeatureSpecReport(table, {
    target: options.target,
    task: options.task,
    positive: options.positive,
    exclude: [...userExcluded, ...excluded],
    ...(options.missingValues ? { missingValues: options.missingValues } : {}),
  });
  // The category is what policies judge (checkStudyAgainstPolicy, the node's zeroing).
  for (const flag of flags) {
    const feature = spec.features.find((f) => f.name === flag.column);
    if (flag.kind === 'sensitive' && feature) feature.category = flag.category;
  }
  return {
    file: options.data,
    rows: table.rows.length,
    delimiter: table.delimiter ?? ',',
    spec,
    flagged: flags.map((f) => ({ ...f, excluded: excluded.includes(f.column) })),
    excluded,
    missingMarkers,
    jurisdictions,
  };
}

/** One line per flag and per missing marker, saying what was done and how to undo it. */
export function describePlan(plan: SpecPlan): string[] {
  const numeric = plan.spec.features.filter((f) => f.kind === 'numeric').length;
  const lines = [
    `${plan.file}: ${plan.rows} rows, ${delimiterName(plan.delimiter)}-separated; ${plan.spec.features.length} features (${numeric} numeric, ${plan.spec.features.length - numeric} categorical)`,
  ];
  for (const f of plan.flagged) {
    if (f.excluded && f.kind === 'sensitive') lines.push(`left out ${JSON.stringify(f.column)}: ${f.reason}; keep it with --keep ${f.column} (tagged category "${f.category}": the study is then refused under ${f.forbiddenUnder?.join(', ')})`);
    else if (f.excluded) lines.push(`left out ${JSON.stringify(f.column)}: ${f.kind === 'id' ? 'looks like an id' : 'looks like free text'}: ${f.reason}; keep it with --keep ${f.column}`);
    else if (f.kind === 'sensitive') {
      lines.push(`flagged ${JSON.stringify(f.column)}: ${f.reason}; kept and tagged category "${f.category}" (policies refuse or zero it); leave it out with --exclude ${f.column}`);
    } else lines.push(`kept ${JSON.stringify(f.column)} (--keep) although it ${f.kind === 'id' ? 'looks like an id' : 'looks like free text'}: ${f.reason}`);
  }
  for (const m of plan.missingMarkers) {
    lines.push(`missing ${JSON.stringify(m.column)}: ${JSON.stringify(m.value)} (${m.count} cell${m.count > 1 ? 's' : ''}, first on line ${m.firstLine}) read as missing in this numeric column and added to missingValues`);
  }
  return lines;
}

/** `a,b` and repeated flags into one list. */
export const collectList = (value: string, previous: string[] = []): string[] => [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)];

/** `--delimiter` for every command that reads a CSV. */
export function delimiterOption(): Option {
  return new Option('--delimiter <d>', 'field delimiter: , ; | or tab (default: detected from the header and first lines)').argParser((raw) => {
    try {
      return parseDelimiter(raw);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  });
}

/** The options `spec infer` and `study init` share, in the same words. */
export function addSpecOptions(command: Command): Command {
  return command
    .requiredOption('--target <column>', 'the label column')
    .addOption(new Option('--task <kind>', 'binary classification or regression of a numeric target (default binary)').choices(['binary', 'regression']))
    .option('--positive <value>', 'target value of the positive class (default: yes/1/true); binary only')
    .option('--jurisdiction <name>', `planned jurisdiction (repeat or comma-separate): ${DEFAULT_POLICIES.map((p) => p.jurisdiction).join(', ')}; sensitive columns are judged under it`, collectList)
    .option('--exclude <columns>', 'comma-separated columns to leave out of the features', collectList)
    .option('--keep <columns>', 'comma-separated flagged id or free-text columns to keep as features anyway', collectList)
    .option('--missing-values <values>', "comma-separated cells read as missing besides blank ones (default NA; common markers such as n/a or null are detected in numeric columns)", collectList)
    .addOption(delimiterOption());
}

/** commander's options into SpecPlanOptions. */
export function specPlanOptions(data: string, opts: Record<string, unknown>): SpecPlanOptions {
  if (opts.positive !== undefined && opts.task === 'regression') throw new InvalidArgumentError('--positive names the positive class of a binary target: a regression target has none');
  return {
    data,
    target: opts.target as string,
    task: opts.task as SpecPlanOptions['task'],
    positive: opts.positive as string | undefined,
    jurisdictions: opts.jurisdiction as string[] | undefined,
    exclude: opts.exclude as string[] | undefined,
    keep: opts.keep as string[] | undefined,
    missingValues: opts.missingValues === undefined ? undefined : ['NA', ...(opts.missingValues as string[])],
    delimiter: opts.delimiter as CsvDelimiter | undefined,
  };
}

/** `fedmark spec infer` (issue 12). */
export function registerSpecCommands(program: Command): void {
  const spec = program.command('spec').description('feature specs: the columns, scaling and vocabularies every node encodes with');
  addSpecOptions(
    spec
      .command('infer')
      .description('infer a study\'s feature spec from a CSV; flags id, free-text and sensitive columns (on stderr), leaving out ids, free text and columns a planned jurisdiction forbids unless --keep')
      .argument('<data>', 'the CSV to infer from (data the study owner may look at)'),
  )
    .option('--out <file>', 'write the spec here (default: print it on stdout)')
    .option('--json', 'print one JSON object on stdout: spec, flagged, excluded, missingMarkers, delimiter, rows, out')
    .action((data: string, opts: Record<string, unknown>) => {
      const plan = planSpec(specPlanOptions(data, opts));
      for (const line of describePlan(plan)) process.stderr.write(`${line}\n`);
      const out = opts.out as string | undefined;
      if (out) {
        writeFeatureSpecFile(out, plan.spec);
        process.stderr.write(`wrote ${out}\n`);
      }
      if (opts.json) {
        const { spec: inferred, flagged, excluded, missingMarkers, delimiter, rows, file } = plan;
        process.stdout.write(`${JSON.stringify({ file, rows, delimiter, out: out ?? null, spec: inferred, flagged, excluded, missingMarkers })}\n`);
      } else if (!out) process.stdout.write(`${JSON.stringify(plan.spec, null, 2)}\n`);
    });
}
