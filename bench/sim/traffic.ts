import { observeExchanges } from '../../client-node/http-transport.ts';

/**
 * Bytes on the wire between the simulated nodes and the coordinator: HTTP bodies, counted from
 * the node transport's exchange records (client-node/http-transport.ts, which CoordinatorClient
 * sends through), attributed to a round
 * from the request path: an update or an evaluation names its round; a model download is charged
 * to the round it serves (version v is evaluated in round v and trained from in round v + 1, and
 * each node downloads it once: version 0 is charged to round 1). Everything else (task polls,
 * status reports, enrollment) is `other`. Headers are not counted.
 */

export interface RoundTraffic {
  uploadedBytes: number;
  downloadedBytes: number;
  updates: number;
  modelDownloads: number;
  /** Models that rode on a task (Task.model) instead: their bytes are in the task polls (`other`). */
  modelsInTasks: number;
}

export interface TrafficCounter {
  rounds: Map<number, RoundTraffic>;
  other: { uploadedBytes: number; downloadedBytes: number; requests: number };
  /** Counts a model version received in a task, charged to its round as a download is. */
  modelInTask(version: number): void;
  uninstall(): void;
}

function roundOf(path: string): { round: number; what: 'update' | 'model' | 'evaluation' } | undefined {
  const update = /\/rounds\/(\d+)\/(updates|evaluations)$/.exec(path);
  if (update) return { round: Number(update[1]), what: update[2] === 'updates' ? 'update' : 'evaluation' };
  const model = /\/models\/(\d+)$/.exec(path);
  if (model) return { round: Math.max(1, Number(model[1])), what: 'model' };
  return undefined;
}

export function installTrafficCounter(): TrafficCounter {
  const counter: TrafficCounter = {
    rounds: new Map(),
    other: { uploadedBytes: 0, downloadedBytes: 0, requests: 0 },
    modelInTask: (version) => roundTraffic(Math.max(1, version)).modelsInTasks++,
    uninstall: () => stop(),
  };
  const roundTraffic = (round: number) => {
    let r = counter.rounds.get(round);
    if (!r) counter.rounds.set(round, (r = { uploadedBytes: 0, downloadedBytes: 0, updates: 0, modelDownloads: 0, modelsInTasks: 0 }));
    return r;
  };
  const stop = observeExchanges(({ url, status, sentBytes: up, receivedBytes: down }) => {
    const ok = status >= 200 && status < 300;
    const where = roundOf(url.pathname);
    if (!where) {
      counter.other.uploadedBytes += up;
      counter.other.downloadedBytes += down;
      counter.other.requests++;
      return;
    }
    const r = roundTraffic(where.round);
    r.uploadedBytes += up;
    r.downloadedBytes += down;
    if (where.what === 'update' && ok) r.updates++;
    if (where.what === 'model' && ok) r.modelDownloads++;
  });
  return counter;
}
