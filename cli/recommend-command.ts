import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { StudyConfig } from '../protocols/messages.ts';
import { ITEM_BIAS, ITEM_FACTORS, itemIndexer, itemName, recommendTensorSpecs, type RecommendTask } from '../protocols/model-kinds/recommend.ts';
import { mulberry32 } from '../protocols/random.ts';
import { decodeWeights } from '../protocols/weights-codec.ts';
import { readCsvTable } from '../models/csv-table.ts';
import { buildInteractions, scoreItems, trainBpr, type MfModel } from '../models/mf.ts';

/**
 * `fedmark recommend --model DIR --user-history h.csv --k 10 --explore 0.2 [--seed N] [--out f.csv]`
 * (issue 9 section 2): top-k items per user of the history, from a recommend study's global model.
 *
 * DIR holds the study's signed weights `model.fmw` (item factors and biases) and its configuration:
 * `study.json` (what the demo writes, OUT/model) or `lineage.json` (`fedmark model export`).
 * For each user: the user vector is folded in by BPR gradient steps on the user row alone, the
 * item factors fixed (FOLD_IN_EPOCHS epochs over the user's items, one sampled negative each,
 * from a zero vector; seeded), the same objective the nodes trained with. The user's history items
 * are never recommended. round((1 - explore) k) slots take the top-scored items; the other slots
 * (the seeds' exploration rule, about 20%) are drawn uniformly at random, without replacement,
 * from the items ranked BELOW the top k (outside the user's top predictions, never a history
 * item), seeded by --seed and the user id, so a run is reproducible and one user's draw does not
 * depend on the others in the file. Output: user, rank, item, score, explore (1 = exploration slot).
 */

export const FOLD_IN_EPOCHS = 30;
const FOLD_IN_LEARNING_RATE = 0.05;

export interface RecommendOptions {
  model: string;
  userHistory: string;
  k: number;
  explore: number;
  seed: number;
  out?: string;
  user?: string;
  item?: string;
}

export interface Recommendation {
  user: string;
  rank: number;
  item: string;
  score: number;
  explore: boolean;
}

/** The study's configuration and global item factors from an export or demo model folder. */
export function loadRecommendModel(dir: string): { task: RecommendTask; model: MfModel } {
  const configFile = [join(dir, 'study.json'), join(dir, 'lineage.json')].find((f) => existsSync(f));
  if (!configFile) throw new Error(`--model: ${dir} has neither study.json nor lineage.json (the demo's OUT/model, or a \`fedmark model export\` folder)`);
  const raw = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const parsed = StudyConfig.safeParse(configFile.endsWith('lineage.json') ? raw.config : raw);
  if (!parsed.success) throw new Error(`--model: ${configFile} is not a study configuration: ${parsed.error.issues[0]?.message}`);
  const config = parsed.data;
  if (config.task.kind !== 'recommend') throw new Error(`--model: study "${config.name}" is a ${config.task.kind} study, not a recommend study`);
  const task = config.task;
  const fmw = join(dir, 'model.fmw');
  if (!existsSync(fmw)) throw new Error(`--model: ${fmw} is missing (the study's item factors)`);
  const weights = decodeWeights(new Uint8Array(readFileSync(fmw)), { expected: recommendTensorSpecs(task) });
  const factors = weights.find((t) => t.name === ITEM_FACTORS)!;
  const bias = weights.find((t) => t.name === ITEM_BIAS)!;
  const model = { numItems: factors.shape[0], factors: factors.shape[1], itemFactors: Float32Array.from(factors.values), itemBias: Float32Array.from(bias.values), userFactors: new Float32Array(0) };
  return { task, model };
}

/** Users of the history CSV in order of first appearance, with their known item rows. */
export function readHistory(path: string, task: RecommendTask, userColumn = task.user, itemColumn = task.item): { users: string[]; items: number[][]; unknown: number } {
  const table = readCsvTable({ path });
  const col = (name: string, flag: string) => {
    const i = table.header.indexOf(name);
    if (i < 0) throw new Error(`--user-history: ${path} has no column "${name}" (${flag}; columns: ${table.header.join(', ')})`);
    return i;
  };
  const u = col(userColumn, '--user');
  const it = col(itemColumn, '--item');
  const toItem = itemIndexer(task.items);
  const index = new Map<string, number>();
  const items: number[][] = [];
  let unknown = 0;
  table.rows.forEach((row, r) => {
    const user = (row[u] ?? '').trim();
    if (user === '') throw new Error(`--user-history: ${path} line ${table.lineOf(r)}, column "${userColumn}": empty user id`);
    if (!index.has(user)) index.set(user, index.size), items.push([]);
    const item = toItem(row[it] ?? '');
    if (item < 0) unknown++;
    else items[index.get(user)!].push(item);
  });
  return { users: [...index.keys()], items, unknown };
}

/** A seed per (run seed, user): FNV-1a of the id mixed with the seed. */
function userSeed(seed: number, user: string): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < user.length; i++) h = Math.imul(h ^ user.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** One user's recommendations: fold-in, then top slots and exploration slots. */
export function recommendFor(model: MfModel, task: RecommendTask, user: string, history: number[], options: { k: number; explore: number; seed: number }): Recommendation[] {
  const d = model.factors;
  const m: MfModel = { ...model, userFactors: new Float32Array(d) };
  const seen = new Set(history);
  if (history.length > 0 && seen.size < model.numItems) {
    const data = buildInteractions(1, model.numItems, history.map(() => 0), history);
    trainBpr(m, data, { epochs: FOLD_IN_EPOCHS, learningRate: FOLD_IN_LEARNING_RATE, regularization: task.regularization, seed: userSeed(options.seed, user), usersOnly: true });
  }
  const scores = scoreItems(m, m.userFactors);
  const ranked = Array.from({ length: model.numItems }, (_, j) => j).filter((j) => !seen.has(j)).sort((a, b) => scores[b] - scores[a] || a - b);
  const k = Math.min(options.k, ranked.length);
  const exploit = Math.min(k, Math.round((1 - options.explore) * options.k));
  const chosen = ranked.slice(0, exploit).map((j) => ({ j, explore: false }));
  // Exploration pool: the unseen items ranked below the top k.
  const pool = ranked.slice(options.k);
  const random = mulberry32(userSeed(options.seed, user) ^ 0x2545f491);
  const extra = Math.min(k - exploit, pool.length);
  for (let n = 0; n < extra; n++) {
    const at = n + Math.floor(random() * (pool.length - n));
    [pool[n], pool[at]] = [pool[at], pool[n]];
    chosen.push({ j: pool[n], explore: true });
  }
  return chosen.map((c, r) => ({ user, rank: r + 1, item: itemName(task.items, c.j), score: scores[c.j], explore: c.explore }));
}

export function runRecommend(options: RecommendOptions): { rows: Recommendation[]; unknown: number } {
  const { task, model } = loadRecommendModel(options.model);
  const history = readHistory(options.userHistory, task, options.user, options.item);
  const rows = history.users.flatMap((user, u) => recommendFor(model, task, user, history.items[u], options));
  return { rows, unknown: history.unknown };
}

const csvField = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

export function recommendationsCsv(rows: Recommendation[]): string {
  return ['user,rank,item,score,explore', ...rows.map((r) => [csvField(r.user), r.rank, csvField(r.item), r.score.toFixed(6), r.explore ? 1 : 0].join(','))].join('\n') + '\n';
}

function intOption(flag: string, min: number) {
  return (raw: string) => {
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(v) || v < min) throw new InvalidArgumentError(`${flag} must be an integer >= ${min}, got "${raw}"`);
    return v;
  };
}

function shareOption(raw: string): number {
  const v = Number(raw);
  if (raw.trim() === '' || !(v >= 0 && v <= 1)) throw new InvalidArgumentError(`--explore must be a share between 0 and 1, got "${raw}"`);
  return v;
}

export function registerRecommendCommand(program: Command): void {
  program
    .command('recommend')
    .description('top-k items per user of a history CSV from a recommend study\'s model, with a share of exploration slots')
    .requiredOption('--model <dir>', "the model folder: model.fmw with study.json (the demo's OUT/model) or lineage.json (fedmark model export)")
    .requiredOption('--user-history <file>', "CSV of the users' past interactions (the study's user and item columns)")
    .addOption(new Option('--k <n>', 'items per user').default(10).argParser(intOption('--k', 1)))
    .addOption(new Option('--explore <share>', "share of the k slots drawn at random from outside the user's top-k predictions").default(0.2).argParser(shareOption))
    .addOption(new Option('--seed <n>', 'seed of the fold-in and the exploration draws (same seed, same output)').default(0).argParser(intOption('--seed', 0)))
    .option('--user <column>', "the history's user column (default: the study's task.user)")
    .option('--item <column>', "the history's item column (default: the study's task.item)")
    .option('--out <file>', 'write the CSV here (default: stdout)')
    .action((options: RecommendOptions) => {
      try {
        const { rows, unknown } = runRecommend(options);
        const text = recommendationsCsv(rows);
        if (options.out) writeFileSync(options.out, text);
        else process.stdout.write(text);
        if (unknown > 0) process.stderr.write(`${unknown} history rows name items outside the study's vocabulary; they were ignored\n`);
      } catch (err) {
        process.stderr.write(`fedmark recommend: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 2;
      }
    });
}
