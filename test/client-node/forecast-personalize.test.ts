import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { getWeights, initBackend, readCsvTable } from '../../models/index.ts';
import { inferForecastSpec } from '../../models/forecast-features.ts';
import { forecastKind } from '../../models/kinds/forecast.ts';
import { loadTable } from '../../client-node/data.ts';
import { fineTune } from '../../client-node/personalize.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';
import { ForecastTask, poolForecast, type ForecastStats } from '../../protocols/model-kinds/forecast.ts';
import { StudyConfig } from '../../protocols/messages.ts';

const RIDERSHIP = fileURLToPath(new URL('../../data/chicago_ridership.csv', import.meta.url));

/**
 * Regional personalization of a forecast study (fedmark node --personalize): the fine-tuning runs
 * on the node's forecast training rows, which look like plain rows but cannot be scored by the
 * forecast kind (no seasonal-naive values or scales: only the validation rows carry them), so it
 * must not take the plain-row early-stopping path. Before this, every forecast node logged
 * "personalization failed" and the demo's personalized row never appeared.
 */
describe('personalizing a forecast model on the node', () => {
  it('fine-tunes on the forecast training rows and the result is scored on the validation rows', async () => {
    await initBackend();
    const full = readCsvTable({ path: RIDERSHIP });
    const rows = full.rows.filter((r) => r[0] >= '2016-01-01' && (r[1] === 'Austin' || r[1] === 'Belmont'));
    const table = { header: full.header, rows, lineOf: (i: number) => i + 2 };
    const task = ForecastTask.parse({ kind: 'forecast', date: 'date', series: 'station', frequency: 'day', horizon: 7, lags: [7, 14], windows: [7], level: 28 });
    const study = StudyConfig.parse({ name: 'fp', task, model: { kind: 'linear' }, features: inferForecastSpec(table, task, 'riders'), training: { localEpochs: 1, learningRate: 0.01, batchSize: 64 }, rounds: 2, minNodesPerRound: 2, minNodesToStart: 2 });
    const kind = forecastKind(study);
    const data = loadTable(table, 'part', study, 0);
    const model = kind.createModel(study, encodedWidth(study.features));
    const before = getWeights(model).map((w) => Array.from(w.values));
    await fineTune(kind, model, data.train, { study, instructions: { localEpochs: 2, learningRate: 0.01, batchSize: 64, proximalMu: 0 }, global: getWeights(model), seed: 7 });
    const after = getWeights(model).map((w) => Array.from(w.values));
    expect(after).not.toEqual(before);
    const pooled = poolForecast([kind.evaluate(model, data.validation).stats as ForecastStats]);
    expect(pooled.n).toBe(14);
    expect(Number.isFinite(pooled.wape)).toBe(true);
    model.dispose();
  }, 120_000);
});
