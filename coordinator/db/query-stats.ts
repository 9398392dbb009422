import { writeFileSync } from 'node:fs';
import type { LogEvent } from 'kysely';

/**
 * A debug counter of database work (issue 13: how many queries and transactions a round costs).
 * Off unless FEDMARK_QUERY_STATS_FILE names a file: then every query the kysely `log` hook sees is
 * tallied by statement (parameters stripped), every transaction counted, the totals snapshotted
 * at each round's opening, and the whole written as JSON when the process exits.
 *
 * @example
 *   FEDMARK_QUERY_STATS_FILE=/tmp/q.json node bin/fedmark.js demo --json --no-local-baseline
 *   # /tmp/q.json: { queries, transactions, byStatement: [{ sql, count, ms }], rounds: [{ round, queries, transactions }] }
 */
export interface QueryStats {
  onQuery(event: LogEvent): void;
  onTransaction(): void;
  onRoundOpened(round: number): void;
  snapshot(): { queries: number; transactions: number; byStatement: Array<{ sql: string; count: number; ms: number }>; rounds: Array<{ round: number; queries: number; transactions: number }> };
}

export function createQueryStats(file: string | undefined): QueryStats | undefined {
  if (!file) return undefined;
  const byStatement = new Map<string, { count: number; ms: number }>();
  const rounds: Array<{ round: number; queries: number; transactions: number }> = [];
  let queries = 0;
  let transactions = 0;
  const stats: QueryStats = {
    onQuery(event) {
      queries++;
      const key = event.query.sql.replace(/\s+/g, ' ').slice(0, 200);
      const s = byStatement.get(key) ?? { count: 0, ms: 0 };
      s.count++;
      s.ms += event.queryDurationMillis;
      byStatement.set(key, s);
    },
    onTransaction: () => void transactions++,
    onRoundOpened: (round) => void rounds.push({ round, queries, transactions }),
    snapshot: () => ({
      queries,
      transactions,
      byStatement: [...byStatement].map(([sql, s]) => ({ sql, count: s.count, ms: Math.round(s.ms) })).sort((a, b) => b.count - a.count),
      rounds,
    }),
  };
  // Peak RSS (ru_maxrss, as /proc VmHWM) and CPU seconds of the whole process, beside the counts.
  const usage = () => {
    const u = process.resourceUsage();
    return { maxRssMB: Math.round(u.maxRSS / 1024), cpuUserSeconds: u.userCPUTime / 1e6, cpuSystemSeconds: u.systemCPUTime / 1e6 };
  };
  process.on('exit', () => writeFileSync(file, JSON.stringify({ ...usage(), ...stats.snapshot() }, null, 1)));
  return stats;
}
