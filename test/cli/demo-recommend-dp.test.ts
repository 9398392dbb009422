import { describe, expect, it } from 'vitest';
import { recommendDemoFlagProblem, recommendDemoPrivacy, planRecommendDemo, recommendStudyConfig } from '../../cli/demo-recommend.ts';
import { StudyConfig } from '../../protocols/messages.ts';
import { trainingAndEvaluationEpsilon } from '../../protocols/privacy/dp-presets.ts';

/**
 * `npm start -- --task recommend --dp-sgd`: the study's privacy section (user-level DP-SGD and
 * noised evaluation calibrated together to the target epsilon per node), and the flags.
 */
describe('the recommend demo under --dp-sgd', () => {
  it('plans user-level DP-SGD and the noised evaluation to spend the target epsilon together, with the smallest node\'s expected user batch as the public denominator', () => {
    const dp = recommendDemoPrivacy({ dpSgd: true, dpSgdEpsilon: 3 }, 10, [369, 826, 488, 717])!;
    const s = dp.privacy.dpSgd!;
    expect(s.samplingRate).toBe(0.5);
    expect(s.stepsPerRound).toBe(4);
    expect(s.expectedBatchSize).toBe(Math.round(0.5 * 369));
    const spent = trainingAndEvaluationEpsilon(s.samplingRate, s.noiseMultiplier, 40, { noiseMultiplier: dp.privacy.evaluation!.noiseMultiplier, rounds: 10 }, 1e-5);
    expect(spent).toBeLessThanOrEqual(3 + 1e-9);
    expect(spent).toBeGreaterThan(2.99);
    expect(dp.plannedEpsilon).toBeCloseTo(spent, 9);
    expect(recommendDemoPrivacy({}, 10, [369])).toBeUndefined();
    // The demo's study with it is a valid recommend study under DP.
    const plan = planRecommendDemo({});
    expect(StudyConfig.safeParse({ ...recommendStudyConfig(plan, {}), privacy: dp.privacy }).error?.issues ?? []).toEqual([]);
  });

  it('takes --dp-sgd and refuses --epsilon by name', () => {
    expect(recommendDemoFlagProblem({ dpSgd: true, dpSgdEpsilon: 3 })).toBeUndefined();
    expect(recommendDemoFlagProblem({ epsilon: 1 })).toMatch(/^--epsilon: .*--dp-sgd/);
  });
});
