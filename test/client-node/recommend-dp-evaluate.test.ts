import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCsvTable } from '../../models/csv-table.ts';
import { StudyConfig, type Task } from '../../protocols/messages.ts';
import { isNoised, statsRows } from '../../protocols/model-kinds/kind.ts';
import { recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { recommendEvaluationNoiseStd } from '../../protocols/privacy/noised-recommend.ts';
import { initialWeights } from '../../protocols/model-spec.ts';
import { recommendTensorSpecs } from '../../protocols/model-kinds/recommend.ts';
import { interactionItems } from '../../scripts/generate-interactions.ts';
import { loadTable } from '../../client-node/data.ts';
import { NodePrivacyLedger } from '../../client-node/privacy-ledger.ts';
import { evaluate } from '../../client-node/train.ts';
import { alignUsers, foldIn, recommendDataOf, recommendKind, type RecommendData, type RecommendModel } from '../../models/kinds/recommend.ts';
import { buildInteractions } from '../../models/mf.ts';

/**
 * The node's half of recommend under DP (issue 9 section 2): client-node/train.ts evaluate()
 * charges the node's ledger (q 1, z, 1 step) before it releases the noised per-user sums, and
 * the fold-in that precedes every evaluation gives each user a row that depends on their own
 * interactions alone (what the sensitivity sqrt(3) of noised-recommend.ts assumes).
 */

const DATA = fileURLToPath(new URL('../../data/interactions.csv', import.meta.url));
const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', timestamp: 'ts', items: { vocabulary: interactionItems() }, factors: 4 };
const study = StudyConfig.parse({ name: 'rec-dp', task, model: { kind: 'linear' }, features: recommendStudyFeatures(task), rounds: 1, privacy: { delta: 1e-5, dpSgd: { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1 } } });

describe('recommend evaluation under DP on the node', () => {
  it("charges the ledger (q 1, z 5, 1 step) and releases noised per-user sums of std 5 sqrt(3)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedmark-rec-dp-'));
    try {
      const table = readCsvTable({ path: DATA });
      const customer = table.header.indexOf('customer');
      const loaded = loadTable({ ...table, rows: table.rows.filter((r) => Number(r[customer].slice(1)) <= 200) }, DATA, study, 0);
      const kind = recommendKind(study);
      const model = kind.createModel(study, 0);
      if (study.task.kind !== 'recommend') throw new Error('not a recommend study');
      const global = initialWeights(recommendTensorSpecs(study.task), study.seed);
      const exactUsers = recommendDataOf(loaded.validation).heldOut.filter((h) => h >= 0).length;
      const ledger = new NodePrivacyLedger(join(dir, 'ledger.jsonl'), 'rdp', 1e-5);
      const deviations: number[] = [];
      for (let round = 1; round <= 30; round++) {
        const before = ledger.epsilon();
        const facts = evaluate(kind, model, loaded, global, { ledger, task: { kind: 'evaluate', studyId: 's', round, config: study } as unknown as Task });
        expect(ledger.epsilon()).toBeGreaterThan(before);
        expect(isNoised(facts.stats)).toBe(true);
        expect(facts.stats).toMatchObject({ kind: 'recommend', k: 10, noise: { mechanism: 'discrete-gaussian', noiseStd: recommendEvaluationNoiseStd(5) } });
        expect(facts.numExamples).toBe(statsRows(facts.stats));
        if (facts.stats.kind === 'recommend') deviations.push(facts.stats.users - exactUsers);
      }
      expect(ledger.all.map((e) => [e.samplingRate, e.noiseMultiplier, e.steps])).toEqual(Array.from({ length: 30 }, () => [1, 5, 1]));
      // The user count's noise: std 5 sqrt(3) = 8.66; 30 draws: the sample std within [0.5, 1.6] of it.
      const mean = deviations.reduce((s, x) => s + x, 0) / deviations.length;
      const std = Math.sqrt(deviations.reduce((s, x) => s + (x - mean) ** 2, 0) / (deviations.length - 1));
      expect(std).toBeGreaterThan(0.5 * 8.66);
      expect(std).toBeLessThan(1.6 * 8.66);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("folds each user in on their own: a user's row is the same with or without another user's data", () => {
    const numItems = 30;
    const a = { users: ['alice'], items: [1, 2, 3, 5, 8] };
    const b = { users: ['bob'], items: [2, 4, 6, 7, 9, 11, 13] };
    const dataOf = (parts: Array<typeof a>): RecommendData => {
      const users: number[] = [];
      const items: number[] = [];
      parts.forEach((p, u) => p.items.forEach((i) => (users.push(u), items.push(i))));
      return { users: parts.flatMap((p) => p.users), interactions: buildInteractions(parts.length, numItems, users, items), heldOut: new Int32Array(parts.length).fill(-1) };
    };
    const small = StudyConfig.parse({ ...study, task: { ...task, items: { hashBuckets: numItems } } });
    const rowOf = (data: RecommendData, id: string) => {
      const m = recommendKind(small).createModel(small, 0) as unknown as RecommendModel;
      alignUsers(m, data.users);
      foldIn(m, data, 0.05, 7);
      const u = data.users.indexOf(id);
      return Array.from(m.userFactors.subarray(u * m.factors, (u + 1) * m.factors));
    };
    const alone = rowOf(dataOf([a]), 'alice');
    expect(rowOf(dataOf([a, b]), 'alice')).toEqual(alone);
    expect(rowOf(dataOf([b, a]), 'alice')).toEqual(alone);
  });
});
