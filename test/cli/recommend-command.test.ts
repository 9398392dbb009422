import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StudyConfig } from '../../protocols/messages.ts';
import { recommendStudyFeatures, recommendTensorSpecs, type RecommendTask } from '../../protocols/model-kinds/recommend.ts';
import { initialWeights } from '../../protocols/model-spec.ts';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import { runRecommend } from '../../cli/recommend-command.ts';

const items = Array.from({ length: 60 }, (_, i) => `p${i}`);
const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', items: { vocabulary: items }, factors: 4 };

function modelDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-rec-'));
  const config = StudyConfig.parse({ name: 'rec', task, model: { kind: 'linear' }, features: recommendStudyFeatures(task), rounds: 1 });
  const weights = initialWeights(recommendTensorSpecs(config.task as RecommendTask), 7);
  // Item biases fall with the index: without other signal, p0 > p1 > ... (a popularity order).
  weights[1].values = Float32Array.from(items, (_, i) => 3 - i * 0.05);
  writeFileSync(join(dir, 'model.fmw'), encodeWeights(weights));
  writeFileSync(join(dir, 'study.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'history.csv'), ['customer,sku', 'u1,p0', 'u1,p3', 'u1,p3', 'u2,p10', 'u2,p11', 'u2,unknown', 'u3,p1'].join('\n') + '\n');
  return dir;
}

describe('fedmark recommend', () => {
  const dir = modelDir();
  const run = (explore: number, seed = 1, k = 10) => runRecommend({ model: dir, userHistory: join(dir, 'history.csv'), k, explore, seed }).rows;

  it('fills round((1 - explore) k) slots with top items and the rest with exploration', () => {
    for (const [explore, expected] of [[0, 0], [0.2, 2], [0.25, 2], [0.35, 3], [0.5, 5], [1, 10]] as const) {
      const rows = run(explore);
      for (const user of ['u1', 'u2', 'u3']) {
        const mine = rows.filter((r) => r.user === user);
        expect(mine).toHaveLength(10);
        expect(mine.filter((r) => r.explore)).toHaveLength(expected);
        expect(mine.map((r) => r.rank)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      }
    }
  });

  it("never recommends a history item or one twice; exploration comes from outside the user's top k", () => {
    const history: Record<string, string[]> = { u1: ['p0', 'p3'], u2: ['p10', 'p11'], u3: ['p1'] };
    const exploit = run(0);
    const mixed = run(0.3);
    for (const user of Object.keys(history)) {
      const top = exploit.filter((r) => r.user === user).map((r) => r.item);
      const mine = mixed.filter((r) => r.user === user);
      expect(new Set(mine.map((r) => r.item)).size).toBe(mine.length);
      for (const r of mine) expect(history[user]).not.toContain(r.item);
      for (const r of mine.filter((x) => x.explore)) expect(top).not.toContain(r.item);
      // The top slots are the best-scored items, in order.
      expect(mine.filter((r) => !r.explore).map((r) => r.item)).toEqual(top.slice(0, 7));
    }
    // Over many seeds, no exploration slot ever takes an item of the top k (ranks 8 to 10 included).
    for (let seed = 1; seed <= 40; seed++) {
      const exploitOnly = run(0, seed);
      for (const user of Object.keys(history)) {
        const top = exploitOnly.filter((r) => r.user === user).map((r) => r.item);
        for (const r of run(0.3, seed).filter((x) => x.user === user && x.explore)) expect(top).not.toContain(r.item);
      }
    }
  });

  it('is reproducible with --seed (a real CLI process), and another seed explores differently', () => {
    const cli = (seed: number) => execFileSync(process.execPath, ['bin/fedmark.js', 'recommend', '--model', dir, '--user-history', join(dir, 'history.csv'), '--k', '10', '--explore', '0.4', '--seed', String(seed)], { encoding: 'utf8' });
    const a = cli(5);
    expect(a.split('\n')[0]).toBe('user,rank,item,score,explore');
    expect(cli(5)).toBe(a);
    expect(cli(6)).not.toBe(a);
  }, 240_000);

  it('refuses a bad flag or folder with a message naming it', () => {
    const bad = spawnSync(process.execPath, ['bin/fedmark.js', 'recommend', '--model', dir, '--user-history', join(dir, 'history.csv'), '--explore', '1.5'], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('--explore');
    const noModel = spawnSync(process.execPath, ['bin/fedmark.js', 'recommend', '--model', tmpdir(), '--user-history', join(dir, 'history.csv')], { encoding: 'utf8' });
    expect(noModel.status).not.toBe(0);
    expect(noModel.stderr).toContain('--model');
    expect(noModel.stderr).not.toContain('    at ');
  }, 240_000);
});
