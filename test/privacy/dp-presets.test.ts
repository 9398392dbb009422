import { describe, expect, it } from 'vitest';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { NOISE_MULTIPLIER_FLOOR } from '../../protocols/privacy/calibrate.ts';
import { DP_SGD_PRESETS, dpSgdPresetFor, dpSgdPresetPlan, type DpSgdPresetName } from '../../protocols/privacy/dp-presets.ts';

// Training rows of the churn demo's 10 regions (smallest 392, largest 432).
const nodeRows = [432, 420, 410, 405, 400, 398, 396, 395, 394, 392];

describe('DP-SGD presets', () => {
  it('picks the preset by model kind and epsilon', () => {
    expect(dpSgdPresetFor('logreg', 3)).toBe('logreg');
    expect(dpSgdPresetFor('mlp', 3)).toBe('mlp-strong');
    expect(dpSgdPresetFor('mlp', 4)).toBe('mlp-strong');
    expect(dpSgdPresetFor('mlp', 8)).toBe('mlp');
  });

  for (const name of Object.keys(DP_SGD_PRESETS) as DpSgdPresetName[]) {
    for (const epsilon of [3, 8]) {
      it(`${name} at epsilon ${epsilon}: the calibrated study spends at most the target, and nearly all of it`, () => {
        const preset = DP_SGD_PRESETS[name];
        const plan = dpSgdPresetPlan(preset, { epsilon, delta: 1e-5, nodeRows });
        const q = plan.dpSgd.samplingRate;
        expect(q).toBeCloseTo('samplingRate' in preset ? preset.samplingRate : preset.expectedBatch / 392, 12);
        expect(plan.dpSgd.stepsPerRound).toBe(Math.round(preset.epochsPerRound / q));
        expect(plan.dpSgd.expectedBatchSize).toBe(Math.round(q * 392));
        expect(plan.steps).toBe(preset.rounds * plan.dpSgd.stepsPerRound!);
        expect(plan.dpSgd.noiseMultiplier).toBeGreaterThanOrEqual(NOISE_MULTIPLIER_FLOOR);
        // Recomputed independently of the plan, by the preset's accountant.
        const spent = computeEpsilon({ q, sigma: plan.dpSgd.noiseMultiplier, steps: plan.steps, delta: 1e-5 }, preset.accountant);
        expect(spent).toBeLessThanOrEqual(epsilon);
        expect(spent).toBeGreaterThan(0.99 * epsilon);
        expect(plan.epsilonSpent).toBeCloseTo(spent, 9);
      });
    }
  }

  it('a PLD-calibrated preset costs more than its target under RDP: the study must account with PLD', () => {
    const plan = dpSgdPresetPlan(DP_SGD_PRESETS.mlp, { epsilon: 8, delta: 1e-5, nodeRows });
    const rdp = computeEpsilon({ q: plan.dpSgd.samplingRate, sigma: plan.dpSgd.noiseMultiplier, steps: plan.steps, delta: 1e-5 }, 'rdp');
    expect(rdp).toBeGreaterThan(8);
  });
});
