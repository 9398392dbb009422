import { describe, expect, it } from 'vitest';
import { computeEpsilon } from '../../protocols/privacy/index.ts';
import { NOISE_MULTIPLIER_FLOOR } from '../../protocols/privacy/calibrate.ts';
import { DP_SGD_PRESETS, dpSgdPlanWithEvaluation, dpSgdPresetFor, dpSgdPresetPlan, type DpSgdPresetName } from '../../protocols/privacy/dp-presets.ts';

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

describe('a DP-SGD plan that leaves room for the noised evaluations', () => {
  for (const epsilon of [3, 8]) {
    it(`at epsilon ${epsilon}: training plus one evaluation a round, composed as the node ledger composes them, spend the target`, async () => {
      const { NodePrivacyLedger } = await import('../../client-node/privacy-ledger.ts');
      const { mkdtempSync } = await import('node:fs');
      const { join } = await import('node:path');
      const { tmpdir } = await import('node:os');
      const rounds = 20;
      const plan = dpSgdPlanWithEvaluation(DP_SGD_PRESETS.mlp, { epsilon, delta: 1e-5, rounds, nodeRows });
      // The evaluations alone take a quarter of the target.
      expect(computeEpsilon({ q: 1, sigma: plan.evaluation.noiseMultiplier, steps: rounds, delta: 1e-5 }, 'rdp')).toBeCloseTo(epsilon / 4, 3);
      // What the node's own ledger charges after every round's training and evaluation.
      const ledger = new NodePrivacyLedger(join(mkdtempSync(join(tmpdir(), 'plan-')), 'ledger.jsonl'), 'rdp', 1e-5);
      const entries = Array.from({ length: rounds }, (_, r) => [
        { studyId: 's', round: r + 1, samplingRate: plan.dpSgd.samplingRate, noiseMultiplier: plan.dpSgd.noiseMultiplier, steps: plan.dpSgd.stepsPerRound! },
        { studyId: 's', round: r + 1, samplingRate: 1, noiseMultiplier: plan.evaluation.noiseMultiplier, steps: 1 },
      ]).flat();
      const charged = ledger.epsilon(entries as never);
      expect(charged).toBeLessThanOrEqual(epsilon + 1e-9);
      expect(charged).toBeGreaterThan(0.999 * epsilon);
      // Without the room left, training alone would spend the whole target.
      expect(plan.dpSgd.noiseMultiplier).toBeGreaterThan(dpSgdPresetPlan({ ...DP_SGD_PRESETS.mlp, accountant: 'rdp' }, { epsilon, delta: 1e-5, rounds, nodeRows }).dpSgd.noiseMultiplier);
    });
  }
});
