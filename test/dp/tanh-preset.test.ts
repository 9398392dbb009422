import { beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { trainDpSgd } from '../../models/dp-sgd.ts';
import { createModel, encodeTable, evaluateModel, inferFeatureSpec, initBackend, readCsvTable, splitRows, subset } from '../../models/index.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';
import { ModelSpec } from '../../protocols/model-spec.ts';
import { DP_SGD_PRESETS, dpSgdPlanWithEvaluation, dpSgdPresetFor, dpSgdPresetModel, dpSgdPresetPlan } from '../../protocols/privacy/dp-presets.ts';

const DATA = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const mlp = ModelSpec.parse({ kind: 'mlp', hidden: [32, 16] });

describe('the epsilon-3 MLP preset trains tanh hidden layers', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('the preset at epsilon <= 4 (what `npm start -- --dp-sgd --dp-sgd-epsilon 3` takes) makes the MLP tanh; epsilon 8 and logreg keep theirs', () => {
    const strong = DP_SGD_PRESETS[dpSgdPresetFor('mlp', 3)];
    expect(dpSgdPresetModel(strong, mlp)).toEqual({ kind: 'mlp', hidden: [32, 16], activation: 'tanh' });
    expect(dpSgdPresetModel(DP_SGD_PRESETS[dpSgdPresetFor('mlp', 8)], mlp)).toEqual(mlp);
    expect(dpSgdPresetModel(strong, { kind: 'logreg' })).toEqual({ kind: 'logreg' });
    // The activation is the model's, not the privacy section's: the study's DP-SGD config is unchanged by it.
    const nodeRows = [432, 420, 410, 405, 400, 398, 396, 395, 394, 392];
    const plan = dpSgdPlanWithEvaluation(strong, { epsilon: 3, delta: 1e-5, rounds: strong.rounds, nodeRows });
    expect(plan.epsilonSpent).toBeLessThanOrEqual(3);
    expect(Object.keys(plan.dpSgd)).not.toContain('activation');
  });

  it('DP-SGD with the preset at epsilon 3 trains the tanh MLP (one node with every training row)', async () => {
    const table = readCsvTable({ path: DATA });
    const spec = inferFeatureSpec(table, { target: 'churn', exclude: ['state', 'area_code'] });
    const all = encodeTable(table, spec);
    const [trainIdx, testIdx] = splitRows(all.n, [0.8, 0.2], 42, all.y);
    const node = subset(all, trainIdx);
    const test = subset(all, testIdx);
    const preset = DP_SGD_PRESETS['mlp-strong'];
    const model = createModel(dpSgdPresetModel(preset, mlp), encodedWidth(spec), 42);
    expect(model.layers[0].getConfig().activation).toBe('tanh');
    const plan = dpSgdPresetPlan(preset, { epsilon: 3, delta: 1e-5, nodeRows: [node.n] });
    const before = evaluateModel(model, test).auc;
    let clipped = 0;
    for (let round = 0; round < preset.rounds; round++) clipped += (await trainDpSgd(model, node, plan.dpSgd)).clippedFraction;
    // 2,667 rows: the noise on a step's mean gradient is a seventh of a region's (0.89 measured).
    expect(evaluateModel(model, test).auc).toBeGreaterThan(Math.max(before, 0.8));
    expect(clipped / preset.rounds).toBeGreaterThan(0);
    model.dispose();
  });
});
