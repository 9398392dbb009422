import { expect } from 'vitest';
import { inferForecastSpec } from '../../models/forecast-features.ts';
import { ForecastTask } from '../../protocols/model-kinds/forecast.ts';
import { recommendStudyFeatures } from '../../protocols/model-kinds/recommend.ts';
import type { StudyConfigInput } from '../../protocols/messages.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import { bytesOrJson, describeOnEachBackend, tinyStudy, type Harness } from './harness.ts';

/**
 * Warm start for every model kind (issue 9: "quarterly recalibration ... is a new study
 * warm-started from the last global model"): binary, regression, forecast and recommend studies
 * each start from another study's round-0 model byte for byte (recommend: the shared item
 * tensors only; user factors never reach the coordinator), and a source of another kind is
 * refused naming initFrom.
 */

/** Two short daily series, a week of lags: enough for the forecast kind's feature spec. */
function forecastStudy(): StudyConfigInput {
  const header = ['date', 'store', 'units', 'price'];
  const rows: string[][] = [];
  for (const store of ['s1', 's2']) {
    for (let d = 0; d < 60; d++) rows.push([new Date(Date.UTC(2026, 0, 1 + d)).toISOString().slice(0, 10), store, String(10 + (d % 7) + (store === 's2' ? 5 : 0)), String(2 + (d % 3) / 10)]);
  }
  const task = ForecastTask.parse({ kind: 'forecast', date: 'date', series: 'store', frequency: 'day', horizon: 7, lags: [7, 14], windows: [7], covariates: ['price'] });
  const features = inferForecastSpec({ header, rows, lineOf: (i) => i + 2 }, task, 'units');
  return { name: 'forecast', task, model: { kind: 'mlp', hidden: [3] }, features, rounds: 2, minNodesPerRound: 2 };
}

function recommendStudy(): StudyConfigInput {
  const task = { kind: 'recommend' as const, user: 'customer', item: 'sku', items: { vocabulary: ['a', 'b', 'c', 'd', 'e'] }, factors: 3 };
  return { name: 'recommend', task, model: { kind: 'linear' }, features: recommendStudyFeatures(task), rounds: 2, minNodesPerRound: 2 };
}

function regressionStudy(): StudyConfigInput {
  return tinyStudy({ name: 'regression', task: { kind: 'regression' }, model: { kind: 'mlp', hidden: [3] }, features: { ...tinyStudy().features, target: { column: 'y', kind: 'numeric', center: 0, scale: 1 } } });
}

const KINDS: Array<[string, () => StudyConfigInput]> = [
  ['binary', () => tinyStudy({ name: 'binary', model: { kind: 'mlp', hidden: [4] } })],
  ['regression', regressionStudy],
  ['forecast', forecastStudy],
  ['recommend', recommendStudy],
];

async function round0(h: Harness, studyId: string) {
  const res = await h.admin('get', `/v1/studies/${studyId}/models/0`).buffer(true).parse(bytesOrJson);
  expect(res.status).toBe(200);
  return new Uint8Array(res.body as Buffer);
}

describeOnEachBackend('warm start for every model kind', (run) => {
  const sources = new Map<string, string>();

  for (const [kind, make] of KINDS) {
    run(`${kind}: round 0 is the source's model byte for byte (not this study's seeded one)`, async (h) => {
      const source = await h.createStudy({ ...make(), seed: 3 });
      sources.set(kind, source);
      const warm = { ...make(), name: `${kind}-recalibration`, seed: 11, initFrom: { study: source } };
      const seeded = (await h.admin('post', '/v1/studies/plan').send({ ...make(), seed: 11 })).body.initialModel.sha256 as string;
      const created = await h.admin('post', '/v1/studies').send(warm);
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const bytes = await round0(h, created.body.id);
      expect(Buffer.from(bytes).equals(Buffer.from(await round0(h, source)))).toBe(true);
      expect(created.body.modelSha256).not.toBe(seeded);
      const names = decodeWeights(bytes).map((t) => t.name);
      if (kind === 'recommend') expect(names).toEqual(['item_factors', 'item_bias']);
    });
  }

  run('a source of another kind is refused naming initFrom', async (h) => {
    if (!sources.has('forecast')) sources.set('forecast', await h.createStudy({ ...forecastStudy(), seed: 3 }));
    const refused = await h.admin('post', '/v1/studies').send({ ...recommendStudy(), initFrom: { study: sources.get('forecast') } });
    expect(refused.status).toBe(400);
    expect(refused.body.error.field).toBe('body.initFrom');
    expect(refused.body.error.message).toMatch(/is a forecast model and this study is recommend/);
  });
});
