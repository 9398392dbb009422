import type { DataReport, StudyConfig } from '../protocols/messages.ts';
import { itemIndexer, numItems, type RecommendTask } from '../protocols/model-kinds/recommend.ts';
import { DataError } from '../models/errors.ts';
import type { CsvTable } from '../models/csv-table.ts';
import { buildInteractions } from '../models/mf.ts';
import type { RecommendData, RecommendEncoded } from '../models/kinds/recommend.ts';
import type { LoadedData } from './data.ts';

/**
 * The data stage of a recommend study (called from data.ts loadTable after the consent filter):
 * interactions (user, item, optional weight and timestamp) mapped to the study's item rows, and a
 * leave-last-out split per user. A user's held-out item is the item of their latest interaction
 * (largest timestamp, the later row on ties; the last row without a timestamp column); every
 * interaction of that user with that item is held out, so the item is new to the user's training
 * set (ranking excludes the training items). Users with fewer than 2 distinct items are trained on
 * and not evaluated. Items outside a declared vocabulary are skipped and counted.
 */
export function loadRecommendTable(table: CsvTable, path: string, study: StudyConfig, mtimeMs: number, extra: Partial<DataReport> = {}): LoadedData {
  if (study.task.kind !== 'recommend') throw new Error('loadRecommendTable: not a recommend study');
  const task = study.task;
  const columns = columnsOf(table, task);
  const toItem = itemIndexer(task.items);
  const userIndex = new Map<string, number>();
  const users: number[] = [];
  const items: number[] = [];
  const weights: number[] = [];
  const times: number[] = [];
  let skipped = 0;
  table.rows.forEach((row, r) => {
    const line = table.lineOf(r);
    const userId = (row[columns.user] ?? '').trim();
    const itemId = (row[columns.item] ?? '').trim();
    if (userId === '') throw new DataError('missing-label', `line ${line}: empty user id in column "${task.user}"`, line, task.user);
    if (itemId === '') throw new DataError('missing-label', `line ${line}: empty item id in column "${task.item}"`, line, task.item);
    const item = toItem(itemId);
    if (item < 0) {
      skipped++;
      return;
    }
    if (!userIndex.has(userId)) userIndex.set(userId, userIndex.size);
    users.push(userIndex.get(userId)!);
    items.push(item);
    weights.push(columns.weight === undefined ? 1 : numberCell(row[columns.weight], line, task.weight!, true));
    times.push(columns.timestamp === undefined ? r : timeCell(row[columns.timestamp], line, task.timestamp!));
  });
  if (users.length === 0) throw new DataError('no-usable-rows', `no usable interactions in ${path}${skipped ? ` (${skipped} with items outside the study's vocabulary)` : ''}`, 1);
  const data = splitLeaveLastOut([...userIndex.keys()], numItems(task), users, items, weights, times);
  const trainRows = data.interactions.items.length;
  const validationUsers = data.heldOut.reduce((s, h) => s + (h >= 0 ? 1 : 0), 0);
  const report: DataReport = { rows: users.length, ...extra, missingFilled: {}, unseenCategories: skipped > 0 ? { [task.item]: skipped } : {} };
  const encoded = (n: number): RecommendEncoded => ({ x: new Float32Array(0), y: new Float32Array(0), n, width: 0, report: { rows: n, positives: 0, missingFilled: {}, unseenCategories: report.unseenCategories }, recommend: data });
  return { mtimeMs, train: encoded(trainRows), validation: encoded(validationUsers), report };
}

/** Leave-last-out per user: the item of the latest interaction (ties: the later row) is held out. */
export function splitLeaveLastOut(userIds: string[], itemCount: number, users: number[], items: number[], weights: number[], times: number[]): RecommendData {
  const latest = new Int32Array(userIds.length).fill(-1);
  for (let r = 0; r < users.length; r++) {
    const u = users[r];
    if (latest[u] < 0 || times[r] >= times[latest[u]]) latest[u] = r;
  }
  const distinct = userIds.map(() => new Set<number>());
  for (let r = 0; r < users.length; r++) distinct[users[r]].add(items[r]);
  const heldOut = new Int32Array(userIds.length).fill(-1);
  userIds.forEach((_, u) => {
    if (distinct[u].size >= 2) heldOut[u] = items[latest[u]];
  });
  const keep = users.map((u, r) => items[r] !== heldOut[u]);
  const pick = <T,>(a: T[]) => a.filter((_, r) => keep[r]);
  return { users: userIds, interactions: buildInteractions(userIds.length, itemCount, pick(users), pick(items), pick(weights)), heldOut };
}

function columnsOf(table: CsvTable, task: RecommendTask): { user: number; item: number; weight?: number; timestamp?: number } {
  const find = (name: string, role: string) => {
    const i = table.header.indexOf(name);
    if (i < 0) throw new DataError('missing-column', `the study's ${role} column "${name}" is missing from the data`, 1, name);
    return i;
  };
  return {
    user: find(task.user, 'user'),
    item: find(task.item, 'item'),
    ...(task.weight !== undefined ? { weight: find(task.weight, 'weight') } : {}),
    ...(task.timestamp !== undefined ? { timestamp: find(task.timestamp, 'timestamp') } : {}),
  };
}

function numberCell(cell: string | undefined, line: number, column: string, positive: boolean): number {
  const v = Number((cell ?? '').trim());
  if ((cell ?? '').trim() === '' || !Number.isFinite(v) || (positive && !(v > 0))) throw new DataError('non-numeric', `line ${line}, column "${column}": ${positive ? 'a positive number' : 'a number'} is needed`, line, column);
  return v;
}

/** A timestamp: a number (epoch, or any increasing count) or an ISO date. */
function timeCell(cell: string | undefined, line: number, column: string): number {
  const text = (cell ?? '').trim();
  const n = Number(text);
  if (text !== '' && Number.isFinite(n)) return n;
  const t = Date.parse(text);
  if (Number.isFinite(t)) return t;
  throw new DataError('non-numeric', `line ${line}, column "${column}": not a number or an ISO date`, line, column);
}
