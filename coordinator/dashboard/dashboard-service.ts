import type { Principal } from '../auth/principal.ts';
import type { StudyAccess } from '../auth/study-access.ts';
import type { Db } from '../db/database.ts';
import { createAuditVerifier } from './audit-status.ts';
import { listStudySummaryRows } from './repository.ts';

/** One row of the dashboard's studies list. */
export interface StudySummary {
  id: string;
  name: string;
  state: string;
  currentRound: number;
  /** Rounds the study is configured for. */
  rounds: number | null;
  /** The model kind's task (`binary`, `regression`) and the model (`logreg`, `mlp`...). */
  kind: string;
  model: string | null;
  createdAt: string;
  stopReason: string | null;
}

/** The few config fields the list shows, read defensively: an old row's config is shown, not re-validated. */
function summaryOf(row: Awaited<ReturnType<typeof listStudySummaryRows>>[number]): StudySummary {
  const config = (typeof row.config === 'string' ? JSON.parse(row.config) : row.config) as { rounds?: number; task?: { kind?: string }; model?: { kind?: string } };
  return {
    id: row.id,
    name: row.name,
    state: row.state,
    currentRound: row.current_round,
    rounds: typeof config.rounds === 'number' ? config.rounds : null,
    kind: config.task?.kind ?? 'binary',
    model: config.model?.kind ?? null,
    createdAt: new Date(row.created_at).toISOString(),
    stopReason: row.stop_reason,
  };
}

/**
 * The dashboard's own reads: the studies list with the columns it shows (the same studies GET
 * /v1/studies shows the caller), and the audit chain's status without the export's side effect
 * (an export signs a fresh checkpoint; a page refreshing every few seconds must not).
 */
export function createDashboardService(deps: { db: Db; access: Pick<StudyAccess, 'visibleStudies'> }) {
  const audit = createAuditVerifier(deps.db);
  return {
    async studies(p: Principal): Promise<StudySummary[]> {
      return deps.access.visibleStudies(p, (await listStudySummaryRows(deps.db)).map(summaryOf));
    },

    /**
     * The chain as stored, verified up to its head against the coordinator's first key (entries
     * after the last checkpoint are reported, not refused: they are sealed at the round's end).
     * Incremental and shared by concurrent requests (audit-status.ts): one instance per app.
     */
    auditStatus: audit.status,
    /** What the audit verification has cost so far (audit-status.ts). */
    auditStats: audit.stats,
  };
}
export type DashboardService = ReturnType<typeof createDashboardService>;
