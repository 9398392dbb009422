import { describe, expect, it } from 'vitest';
import { StudyConfig } from '../../protocols/messages.ts';
import { recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import { Release } from '../../client-node/release.ts';
import { recommendKind } from '../../models/kinds/recommend.ts';
import { readKindWeights } from '../../models/kinds/index.ts';
import { loadRecommendTable } from '../../client-node/data-recommend.ts';
import { sharedKindSpecs } from '../../models/kinds/index.ts';
import { readCsvTable } from '../../models/csv-table.ts';
import { DataError } from '../../models/errors.ts';

const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', timestamp: 'ts', items: { vocabulary: ['a', 'b', 'c', 'd'] }, factors: 3 };
const study = StudyConfig.parse({ name: 'rec', task, model: { kind: 'linear' }, features: recommendStudyFeatures(task), rounds: 2 });
const csv = ['customer,sku,ts', 'u1,a,1', 'u1,b,3', 'u1,a,2', 'u2,c,5', 'u2,d,4', 'u2,zzz,6', 'u3,a,1'].join('\n');

describe('recommend on the node', () => {
  it('the release step sends item factors and biases, never user factors', async () => {
    const kind = recommendKind(study);
    const model = kind.createModel(study, 0);
    const data = loadRecommendTable(readCsvTable({ text: csv }), 'test', study, 0);
    const global = readKindWeights(kind, model);
    await kind.train(model, data.train, { study, instructions: { localEpochs: 1, learningRate: 0.05, batchSize: 32, proximalMu: 0 }, global, seed: 1 });
    const all = readKindWeights(kind, model);
    expect(all.map((t) => t.name)).toEqual(['item_factors', 'item_bias', 'user_factors']);
    expect(all[2].shape).toEqual([3, 3]);
    expect(Release.of(study).weights(all).map((t) => t.name)).toEqual(['item_factors', 'item_bias']);
    expect(sharedKindSpecs(study, kind, model).map((s) => s.name)).toEqual(['item_factors', 'item_bias']);
  });

  it('holds out each user\'s latest item (every row of it), skips unknown items, evaluates users with 2+ items', () => {
    const data = loadRecommendTable(readCsvTable({ text: csv }), 'test', study, 0);
    const r = (data.train as unknown as { recommend: { users: string[]; heldOut: Int32Array; interactions: { items: Int32Array; offsets: Int32Array } } }).recommend;
    expect(r.users).toEqual(['u1', 'u2', 'u3']);
    // u1: latest ts 3 is b; u2: latest known is c (ts 5; zzz is skipped); u3 has one item: trained, not evaluated.
    expect(Array.from(r.heldOut)).toEqual([1, 2, -1]);
    expect(Array.from(r.interactions.items)).toEqual([0, 3, 0]);
    expect(data.validation.n).toBe(2);
    expect(data.report.unseenCategories).toEqual({ sku: 1 });
    expect(data.report.rows).toBe(6);
  });

  it('hashes items into the study\'s buckets, sums weights, and names a bad cell by line and column', () => {
    const hashed = StudyConfig.parse({ ...study, task: { ...task, weight: 'qty', items: { hashBuckets: 16 } }, features: { ...recommendStudyFeatures(task), features: [{ name: 'customer', kind: 'categorical', categories: ['*'] }, { name: 'qty', kind: 'numeric', mean: 0, std: 1, fill: 1 }] } });
    const text = ['customer,sku,ts,qty', 'u1,a,1,2', 'u1,a,2,3', 'u1,b,3,1'].join('\n');
    const data = loadRecommendTable(readCsvTable({ text }), 'test', hashed, 0);
    const r = (data.train as unknown as { recommend: { interactions: { items: Int32Array; weights: Float32Array; numItems: number } } }).recommend;
    expect(r.interactions.numItems).toBe(16);
    expect(Array.from(r.interactions.weights)).toEqual([5]);
    let thrown: unknown;
    try {
      loadRecommendTable(readCsvTable({ text: ['customer,sku,ts,qty', 'u1,a,1,2', 'u1,b,2,lots'].join('\n') }), 'test', hashed, 0);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(DataError);
    expect((thrown as DataError).line).toBe(3);
    expect((thrown as DataError).column).toBe('qty');
  });
});
