import type { StudyStatus } from '../protocols/messages.ts';

/**
 * The demos' final table and the JSON fields of regional personalization, shared by every kind's
 * demo (cli/demo.ts, cli/demo-forecast.ts, cli/demo-recommend.ts).
 */

/** A column of a demo table after the label column: its header and the width its cells are right-aligned to. */
export interface TableColumn {
  header: string;
  width: number;
}

/** Width of a demo table's label column ("federated global model", "local-only node-03 (CA NV)"...). */
export const LABEL_WIDTH = 44;

/**
 * One line of a demo table: the label left-aligned in LABEL_WIDTH, then each cell right-aligned to its
 * column (one space before the first cell, two before the others). A missing cell is blank.
 */
export function tableRow(columns: readonly TableColumn[], label: string, cells: ReadonlyArray<string | undefined>): string {
  return `  ${label.padEnd(LABEL_WIDTH)}${columns.map((c, i) => `${i === 0 ? ' ' : '  '}${(cells[i] ?? '').padStart(c.width)}`).join('')}`;
}

/** The header line of a demo table ("model", then each column's header). */
export function tableHeader(columns: readonly TableColumn[]): string {
  return tableRow(columns, 'model', columns.map((c) => c.header));
}

/**
 * Regional personalization at the study's end (fedmark node --personalize, issue 9 section 3): the
 * kind's pooled metrics of the nodes' locally fine-tuned models, and of the global model over the
 * same nodes' held-out rows (the fair comparison: the same rows, the same nodes), from the last
 * completed round. `nodes` is 0 when no node sent personalized statistics (--no-personalize, a study
 * whose release list or privacy withholds them).
 */
export interface PersonalizedSummary {
  nodes: number;
  round: number | null;
  global: Record<string, number | null> | null;
  personalized: Record<string, number | null> | null;
}

export function personalizedSummary(status: Pick<StudyStatus, 'rounds'>): PersonalizedSummary {
  const last = [...status.rounds].reverse().find((r) => r.phase === 'completed');
  if (!last) return { nodes: 0, round: null, global: null, personalized: null };
  const nodes = last.personalizedNodes ?? 0;
  if (nodes === 0 || !last.personalizedMetrics) return { nodes: 0, round: last.round, global: last.validationMetrics, personalized: null };
  return { nodes, round: last.round, global: last.globalOnPersonalizedMetrics ?? last.validationMetrics, personalized: last.personalizedMetrics };
}

/**
 * The JSON fields of personalization for one metric, under self-explaining names:
 * `globalValidation<Name>` (the global model on the nodes' held-out rows), `personalized<Name>`
 * (null when no node sent any) and `personalizedNodes`. E.g. personalizedFields(s, 'auc', 'Auc').
 */
export function personalizedFields(summary: PersonalizedSummary, metric: string, name: string): Record<string, number | null> {
  const value = (m: Record<string, number | null> | null) => {
    const v = m?.[metric];
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  };
  return { [`globalValidation${name}`]: value(summary.global), [`personalized${name}`]: summary.nodes > 0 ? value(summary.personalized) : null, personalizedNodes: summary.nodes };
}

/**
 * The table's personalization part: a heading, then the global model and the personalized models,
 * both on the nodes' own held-out rows (`cells` formats a metrics record into the table's cells).
 * Empty when no node personalized.
 */
export function personalizedLines(summary: PersonalizedSummary, columns: readonly TableColumn[], cells: (metrics: Record<string, number | null> | null) => Array<string | undefined>): string[] {
  if (summary.nodes === 0) return [];
  return [
    `on the nodes' own held-out rows (pooled over the ${summary.nodes} node(s) that personalized; the personalized models never left them)`,
    tableRow(columns, 'federated global model', cells(summary.global)),
    tableRow(columns, 'personalized (fine-tuned on each node)', cells(summary.personalized)),
  ];
}
