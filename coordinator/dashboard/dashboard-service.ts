import { verifyChain } from '../../protocols/audit/audit-chain.ts';
import { firstCoordinatorKey, readAuditLog } from '../audit/audit-log.ts';
import type { Principal } from '../auth/principal.ts';
import type { StudyAccess } from '../auth/study-access.ts';
import type { Db } from '../db/database.ts';
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
  return {
    async studies(p: Principal): Promise<StudySummary[]> {
      return deps.access.visibleStudies(p, (await listStudySummaryRows(deps.db)).map(summaryOf));
    },

    /**
     * The chain as stored, verified up to its head against the coordinator's first key (entries
     * after the last checkpoint are reported, not refused: they are sealed at the round's end).
     */
    async auditStatus() {
      const log = await readAuditLog(deps.db);
      const entries = log.entries;
      // Entries are read before checkpoints: one signed in between may cover entries not read.
      const headSeq = entries.at(-1)?.seq ?? 0;
      const checkpoints = log.checkpoints.filter((c) => c.seq <= headSeq);
      const last = checkpoints.at(-1) ?? null;
      const lastCheckpoint = last ? { seq: last.seq, number: last.number ?? null, at: last.at, headHash: last.headHash, coordinatorFingerprint: last.coordinatorFingerprint } : null;
      if (entries.length === 0) return { ok: true, problem: null, message: null, entries: 0, checkpoints: 0, head: null, uncheckpointedEntries: 0, lastCheckpoint };
      const result = await verifyChain(entries, checkpoints, await firstCoordinatorKey(deps.db), { allowUnsealedTail: true });
      const head = entries[entries.length - 1].hash;
      if (!result.ok) return { ok: false, problem: result.problem, message: result.message, entries: entries.length, checkpoints: checkpoints.length, head, uncheckpointedEntries: null, lastCheckpoint };
      return { ok: true, problem: null, message: null, entries: result.entries, checkpoints: result.checkpoints, head, uncheckpointedEntries: result.uncheckpointedEntries, lastCheckpoint };
    },
  };
}
export type DashboardService = ReturnType<typeof createDashboardService>;
