import { describe, expect, it } from 'vitest';
import { DP_UPDATE_COUNT, expectedEvaluation, RELEASE_FIELDS, RELEASE_UNDER_DP, releaseMechanism, StudyConfig, type StudyConfigInput } from '../../protocols/messages.ts';
import { aucFromHistogram } from '../../protocols/metrics.ts';
import { EvaluationStats, isNoised, poolEvaluation, statsRows, type NoisedBinaryStats } from '../../protocols/model-kinds/kind.ts';
import { GaussianNoise } from '../../protocols/privacy/gaussian-noise.ts';
import { computeEpsilon } from '../../protocols/privacy/calibrate.ts';
import { noisedBinaryEvaluation } from '../../models/kinds/binary.ts';
import { Release, type TrainedFacts } from '../../client-node/release.ts';
import type { RandomWords } from '../../protocols/privacy/gaussian-noise.ts';

/** splitmix32: a seedable source for a reproducible statistical test only (production uses the OS CSPRNG). */
class SeededWords implements RandomWords {
  constructor(private state: number) {}
  uint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
}

/**
 * Issue 10, items 1-3: under DP the evaluation is a noised coarse histogram, pooled from the raw
 * noised sums (closed forms below); counts are public constants; every release field has a
 * mechanism, and a DP study releasing an exact field not declared public is refused.
 */

const base: StudyConfigInput = { name: 's', model: { kind: 'logreg' }, features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, rounds: 1 };
const dpSgd = { noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05 };
const noised = (positives: number[], negatives: number[], noiseStd = 5): NoisedBinaryStats => ({ kind: 'binary', noise: { mechanism: 'discrete-gaussian', noiseStd }, histogram: { bins: positives.length, positives, negatives } });

describe('pooling noised histograms', () => {
  it('sums the raw noised counts (negatives included) and clamps only the pooled counts: AUC, log loss and Brier in closed form', () => {
    // Bin midpoints 0.25, 0.75. Raw sums: positives [-3 + 1, 4 + 6] = [-2, 10], negatives [7 + 2, -1 + 0] = [9, -1].
    const a = noised([-3, 4], [7, -1]);
    const b = noised([1, 6], [2, 0]);
    const pooled = poolEvaluation('binary', [a, b]);
    // Clamped: positives [0, 10], negatives [9, 0]: perfectly separated.
    expect(pooled.auc).toBe(1);
    expect(pooled.n).toBe(19);
    expect(pooled.logLoss).toBeCloseTo((10 * -Math.log(0.75) + 9 * -Math.log(1 - 0.25)) / 19, 12);
    expect(pooled.brier).toBeCloseTo((10 * 0.25 ** 2 + 9 * 0.25 ** 2) / 19, 12);
    expect(pooled.noised).toBe(1);
    expect(pooled.noiseStdPerCount).toBeCloseTo(Math.sqrt(50), 12);
  });

  it('does not clamp each report first (that would bias every bin upward)', () => {
    // Raw sums: positives [5 - 4, 2], negatives [1, 6 - 5] = [1, 1]; clamping each report first would give positives [5, 2], negatives [1, 6].
    const pooled = poolEvaluation('binary', [noised([5, 2], [1, 6]), noised([-4, 0], [0, -5])]);
    expect(pooled.auc).toBeCloseTo(aucFromHistogram({ bins: 2, positives: [1, 2], negatives: [1, 1] }), 12);
    expect(pooled.n).toBe(5);
  });

  it('never mixes noised and exact reports in one round', () => {
    const exact: EvaluationStats = { kind: 'binary', histogram: { bins: 2, positives: [1, 1], negatives: [1, 1] }, brierSum: 0, logLossSum: 0 };
    expect(() => poolEvaluation('binary', [noised([1, 1], [1, 1]), exact])).toThrow(/mixes/);
  });

  it('a report counts the clamped sum of its noised counts', () => {
    expect(statsRows(noised([-3, 1], [-2, 0]))).toBe(0);
    expect(statsRows(noised([-3, 10], [2, 0]))).toBe(9);
    expect(isNoised(EvaluationStats.parse(noised([-3, 10], [2, 0])))).toBe(true);
  });
});

describe('the node noises every count (discrete Gaussian, std z)', () => {
  // 300 rows: scores spread over [0, 1), label 1 for the top half.
  const scores = Array.from({ length: 300 }, (_, i) => i / 300);
  const labels = scores.map((s) => (s >= 0.5 ? 1 : 0));

  it('the noise on each count has mean 0 and std z (8000 counts), and the histogram has the study bins', () => {
    const noise = new GaussianNoise(new SeededWords(7));
    const exactPositives = new Array<number>(20).fill(0);
    const exactNegatives = new Array<number>(20).fill(0);
    scores.forEach((s, i) => (labels[i] ? exactPositives : exactNegatives)[Math.floor(s * 20)]++);
    const errors: number[] = [];
    for (let k = 0; k < 200; k++) {
      const stats = noisedBinaryEvaluation(scores, labels, { bins: 20, noiseMultiplier: 5, noise });
      expect(stats.histogram.bins).toBe(20);
      expect(stats.noise).toEqual({ mechanism: 'discrete-gaussian', noiseStd: 5 });
      stats.histogram.positives.forEach((c, b) => errors.push(c - exactPositives[b]));
      stats.histogram.negatives.forEach((c, b) => errors.push(c - exactNegatives[b]));
    }
    const mean = errors.reduce((s, e) => s + e, 0) / errors.length;
    const std = Math.sqrt(errors.reduce((s, e) => s + (e - mean) ** 2, 0) / (errors.length - 1));
    // Dropping the noise gives std 0 (and every error 0): this fails. Std of the std estimate ~ 5 / sqrt(16000) = 0.04.
    expect(Math.abs(mean)).toBeLessThan(0.25);
    expect(std).toBeGreaterThan(4.8);
    expect(std).toBeLessThan(5.2);
    expect(errors.every((e) => Number.isInteger(e))).toBe(true);
  });

  it('two evaluations of the same scores differ (fresh noise each time), and some counts come out negative', () => {
    const a = noisedBinaryEvaluation(scores, labels, { bins: 20, noiseMultiplier: 5 });
    const b = noisedBinaryEvaluation(scores, labels, { bins: 20, noiseMultiplier: 5 });
    expect(a.histogram).not.toEqual(b.histogram);
    // Half the 40 cells hold no row (one label per bin here): a noised zero is negative with probability ~0.46.
    expect([...a.histogram.positives, ...a.histogram.negatives, ...b.histogram.positives, ...b.histogram.negatives].some((c) => c < 0)).toBe(true);
  });

  it('costs a Gaussian mechanism without subsampling: epsilon(q 1, z 5, 1 step) is 0.80 at delta 1e-5 (RDP alpha / 2z^2)', () => {
    expect(computeEpsilon({ q: 1, sigma: 5, steps: 1, delta: 1e-5 }, 'rdp')).toBeCloseTo(0.795, 2);
  });
});

describe('release accounting under DP', () => {
  it('every release field has a mechanism under DP; without DP all are exact and the study says evaluation: exact', () => {
    expect(Object.keys(RELEASE_UNDER_DP).sort()).toEqual([...RELEASE_FIELDS].sort());
    const plain = StudyConfig.parse(base);
    expect(plain.evaluation).toBe('exact');
    expect(plain.release).toEqual([...RELEASE_FIELDS]);
    for (const f of RELEASE_FIELDS) expect(releaseMechanism(plain.privacy, f)).toBe('exact');
    expect(expectedEvaluation(plain.privacy)).toEqual({ noised: false });
  });

  it('a DP study releases by default only the noised and public fields, with 20 bins and z 5', () => {
    const study = StudyConfig.parse({ ...base, privacy: { dpSgd } });
    expect(study.evaluation).toBe('noised');
    expect([...study.release].sort()).toEqual(['evaluation.numExamples', 'evaluation.personalized', 'evaluation.stats', 'update.dpSgd', 'update.numExamples', 'update.weights']);
    for (const f of study.release) expect(releaseMechanism(study.privacy, f)).not.toBe('exact');
    expect(expectedEvaluation(study.privacy)).toEqual({ noised: true, bins: 20, noiseStd: 5 });
  });

  it('refuses a DP study whose release list has an exact field not declared public (400 naming release), accepts it declared public', () => {
    const bad = StudyConfig.safeParse({ ...base, privacy: { central: { noiseMultiplier: 1, clipping: { kind: 'fixed', norm: 1 } } }, release: [...RELEASE_FIELDS.filter((f) => f !== 'update.dpSgd')] });
    expect(bad.success).toBe(false);
    const issue = bad.error!.issues.find((i) => i.path.join('.') === 'release');
    expect(issue?.message).toMatch(/update\.loss/);
    const declared = StudyConfig.parse({ ...base, privacy: { dpSgd, publicFields: ['update.loss', 'update.steps'] } });
    expect(declared.release).toContain('update.loss');
    expect(releaseMechanism(declared.privacy, 'update.loss')).toBe('public');
    expect(StudyConfig.safeParse({ ...base, privacy: { dpSgd, publicFields: ['update.secret'] } }).success).toBe(false);
  });

  it('accepts regression under DP (noised residual sums: test/privacy/noised-regression.test.ts), and takes the declared evaluation bins and noise', () => {
    const regression = StudyConfig.safeParse({ ...base, task: { kind: 'regression' }, features: { target: { column: 'y', kind: 'numeric', center: 0, scale: 1 }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] }, privacy: { dpSgd, evaluation: { residualClip: 3 } } });
    expect(regression.success).toBe(true);
    const custom = StudyConfig.parse({ ...base, privacy: { dpSgd, evaluation: { bins: 10, noiseMultiplier: 8 } } });
    expect(expectedEvaluation(custom.privacy)).toEqual({ noised: true, bins: 10, noiseStd: 8 });
    expect(StudyConfig.safeParse({ ...base, privacy: { dpSgd, evaluation: { noiseMultiplier: 0.1 } } }).success).toBe(false);
  });

  it("the node's release step sends the public count 1, never its rows, and drops exact fields", () => {
    const trained: TrainedFacts = { numExamples: 1234, loss: 0.4, steps: 20, trainSeconds: 1, data: { rows: 1500, missingFilled: {}, unseenCategories: {} } };
    const study = StudyConfig.parse({ ...base, privacy: { dpSgd } });
    expect(Release.of(study).update(trained)).toEqual({ numExamples: DP_UPDATE_COUNT });
    // Even if a coordinator sent a list with exact fields, the node holds to the DP table.
    const release = Release.of({ ...study, release: [...RELEASE_FIELDS] });
    expect(release.update(trained)).toEqual({ numExamples: DP_UPDATE_COUNT });
    expect(release.status({ state: 'ready', data: trained.data })).toEqual({ state: 'ready' });
    // And it refuses to release exact statistics under DP.
    expect(() => release.evaluation({ numExamples: 3, stats: { kind: 'binary', histogram: { bins: 2, positives: [1, 0], negatives: [2, 0] }, brierSum: 0, logLossSum: 0 } })).toThrow(/noised/);
    const stats = noised([-1, 4], [3, 0]);
    expect(release.evaluation({ numExamples: statsRows(stats), stats })).toEqual({ numExamples: 6, stats });
  });
});
