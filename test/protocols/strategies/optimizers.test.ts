import { describe, expect, it } from 'vitest';
import { FedAdagrad } from '../../../protocols/strategies/fedadagrad.ts';
import { FedAdam } from '../../../protocols/strategies/fedadam.ts';
import { FedAvg } from '../../../protocols/strategies/fedavg.ts';
import { FedAvgM } from '../../../protocols/strategies/fedavgm.ts';
import { FedProx } from '../../../protocols/strategies/fedprox.ts';
import { FedYogi } from '../../../protocols/strategies/fedyogi.ts';
import { Median } from '../../../protocols/strategies/median.ts';
import { AggregationError } from '../../../protocols/aggregation/fedavg.ts';
import { flat, model, runRound, training } from './helpers.ts';

const close = (got: ArrayLike<number>, want: number[], rel = 1e-6) => {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(want[i])));
};

// Global g = [1, -2, 0.5]; node A sends [1.5, -2, 0.5] for 1 example, node B [1, -1, 0.25] for 3.
// Example-weighted mean model: [(1.5 + 3)/4, (-2 - 3)/4, (0.5 + 0.75)/4] = [1.125, -1.25, 0.3125],
// so the mean delta is D = [0.125, 0.75, -0.1875] (all exact in binary).
const g = [1, -2, 0.5];
const global = model(g);
const updates = [
  { w: model([1.5, -2, 0.5]), n: 1 },
  { w: model([1, -1, 0.25]), n: 3 },
];
const D = [0.125, 0.75, -0.1875];

describe('FedAvg and FedProx', () => {
  it('FedAvg: w + mean delta = the example-weighted mean of the models; server state stays empty', () => {
    const out = runRound(new FedAvg(), global, updates);
    expect(flat(out.weights)).toEqual([1.125, -1.25, 0.3125]);
    expect(out.serverState).toEqual({ scalars: {}, tensors: {} });
    expect(out.details).toMatchObject({ nodes: 2, totalExamples: 4 });
  });

  it('reports each update\'s delta norm and refuses a mismatched or non-finite update, changing nothing', () => {
    const fit = new FedAvg().aggregateFit(global, { scalars: {}, tensors: {} }, { round: 1, participants: 2 });
    expect(fit.accept(updates[0].w, 1).deltaNorm).toBeCloseTo(0.5, 12);
    expect(() => fit.accept(model([1, 2]), 1)).toThrow(AggregationError);
    expect(() => fit.accept(model([1, Number.NaN, 0]), 1)).toThrow(AggregationError);
    expect(fit.count).toBe(1);
  });

  it('no update: weights undefined and the server state unchanged', () => {
    const s = new FedAvgM({ serverLearningRate: 1, momentum: 0.9 });
    const state = { scalars: { x: 1 }, tensors: { momentum: [{ name: 'w', shape: [3], values: Float64Array.from([1, 2, 3]) }] } };
    const out = s.aggregateFit(global, state, { round: 1, participants: 3 }).finish([{ nodeId: 'a', reason: 'late' }]);
    expect(out.weights).toBeUndefined();
    expect(out.serverState).toEqual(state);
  });

  it('FedProx sends proximalMu = mu to every node (FedAvg and the robust ones send 0); its server step is FedAvg', () => {
    const nodes = [{ id: 'a', region: 'eu' }, { id: 'b', region: 'us' }];
    const prox = new FedProx(0.25).configureFit(1, { scalars: {}, tensors: {} }, nodes, training);
    expect([...prox.keys()]).toEqual(['a', 'b']);
    for (const i of prox.values()) expect(i).toEqual({ localEpochs: training.localEpochs, learningRate: training.learningRate, batchSize: training.batchSize, proximalMu: 0.25 });
    for (const s of [new FedAvg(), new Median()]) for (const i of s.configureFit(1, { scalars: {}, tensors: {} }, nodes, training).values()) expect(i.proximalMu).toBe(0);
    expect(flat(runRound(new FedProx(0.25), global, updates).weights)).toEqual([1.125, -1.25, 0.3125]);
    expect(new FedProx(0.25).configureEvaluate(1, { scalars: {}, tensors: {} }, nodes)).toEqual(nodes);
  });
});

describe('FedAvgM (Hsu et al. 2019)', () => {
  it('v <- beta v + D, w <- w + eta v, over two rounds', () => {
    const s = new FedAvgM({ serverLearningRate: 0.5, momentum: 0.9 });
    const r1 = runRound(s, global, updates);
    // Round 1: v1 = D, w1 = g + 0.5 D.
    const w1 = g.map((x, i) => x + 0.5 * D[i]);
    close(flat(r1.weights), w1);
    close(r1.serverState.tensors.momentum[0].values, D, 1e-15);
    // Round 2 from w1: both nodes send w1 + [0.1, 0, -0.2] -> D2 = that (up to float32 rounding of w1 + D2).
    const g1 = r1.weights!;
    const sent = model(flat(g1).map((x, i) => x + [0.1, 0, -0.2][i]));
    const D2 = flat(sent).map((x, i) => x - flat(g1)[i]);
    const r2 = runRound(s, g1, [{ w: sent, n: 5 }, { w: sent, n: 1 }], r1.serverState, 2, 2);
    const v2 = D.map((d, i) => 0.9 * d + D2[i]);
    close(r2.serverState.tensors.momentum[0].values, v2, 1e-12);
    close(flat(r2.weights), flat(g1).map((x, i) => x + 0.5 * v2[i]));
  });
});

describe('adaptive server optimizers (Reddi et al. 2021, Algorithm 2)', () => {
  const eta = 0.1;
  const tau = 1e-3;

  it('FedAdam: one step from m = 0, v = tau^2, then a second step from the carried state', () => {
    const s = new FedAdam({ serverLearningRate: eta, beta1: 0.9, beta2: 0.99, tau });
    const r1 = runRound(s, global, updates);
    const m1 = D.map((d) => 0.1 * d);
    const v1 = D.map((d) => 0.99 * tau * tau + 0.01 * d * d);
    close(flat(r1.weights), g.map((x, i) => x + (eta * m1[i]) / (Math.sqrt(v1[i]) + tau)));
    close(r1.serverState.tensors.m[0].values, m1, 1e-12);
    close(r1.serverState.tensors.v[0].values, v1, 1e-12);
    // e.g. coordinate 0 by hand: m = 0.0125, v = 0.99e-6 + 0.01 * 0.015625 = 0.00015724,
    // step = 0.1 * 0.0125 / (sqrt(0.00015724) + 0.001) = 0.00125 / 0.01353954 = 0.0923222
    expect(flat(r1.weights)[0] - 1).toBeCloseTo(0.0923222, 6);

    const D2 = [-0.5, 0, 0.25];
    const r2 = s.applyMeanDelta(r1.weights!, model(D2), r1.serverState, 2);
    const m2 = m1.map((m, i) => 0.9 * m + 0.1 * D2[i]);
    const v2 = v1.map((v, i) => 0.99 * v + 0.01 * D2[i] * D2[i]);
    close(flat(r2.weights), flat(r1.weights).map((x, i) => x + (eta * m2[i]) / (Math.sqrt(v2[i]) + tau)));
    close(r2.serverState.tensors.m[0].values, m2, 1e-12);
    close(r2.serverState.tensors.v[0].values, v2, 1e-12);
  });

  it('FedYogi: v <- v - (1 - beta2) D^2 sign(v - D^2), both signs, two steps', () => {
    const s = new FedYogi({ serverLearningRate: eta, beta1: 0.9, beta2: 0.99, tau });
    // Coordinate 0: D^2 = 2^-28 < v = 1e-6, so v shrinks; coordinate 1: D^2 = 0.25 > v, v grows; coordinate 2: D = 0, v stays.
    const D1 = [2 ** -14, 0.5, 0];
    const r1 = s.applyMeanDelta(global, model(D1), s.initialServerState(global), 1);
    const v1 = [1e-6 - 0.01 * 2 ** -28, 1e-6 + 0.01 * 0.25, 1e-6];
    const m1 = D1.map((d) => 0.1 * d);
    close(r1.serverState.tensors.v[0].values, v1, 1e-15);
    close(flat(r1.weights), g.map((x, i) => x + (eta * m1[i]) / (Math.sqrt(v1[i]) + tau)));
    const D2 = [0.1, 0.01, -0.3].map(Math.fround); // what a float32 delta holds
    const r2 = s.applyMeanDelta(r1.weights!, model(D2), r1.serverState, 2);
    const v2 = v1.map((v, i) => v - 0.01 * D2[i] * D2[i] * Math.sign(v - D2[i] * D2[i]));
    const m2 = m1.map((m, i) => 0.9 * m + 0.1 * D2[i]);
    // Coordinate 1: D2^2 = 1e-4 < v1 = 0.002501, so this time v shrinks.
    expect(v2[1]).toBeLessThan(v1[1]);
    close(r2.serverState.tensors.v[0].values, v2, 1e-15);
    close(flat(r2.weights), flat(r1.weights).map((x, i) => x + (eta * m2[i]) / (Math.sqrt(v2[i]) + tau)));
  });

  it('FedAdagrad: beta1 = 0 (m = D, no m kept), v <- v + D^2, two steps', () => {
    const s = new FedAdagrad({ serverLearningRate: eta, tau });
    const r1 = runRound(s, global, updates);
    expect(Object.keys(r1.serverState.tensors)).toEqual(['v']);
    const v1 = D.map((d) => tau * tau + d * d);
    close(r1.serverState.tensors.v[0].values, v1, 1e-15);
    close(flat(r1.weights), g.map((x, i) => x + (eta * D[i]) / (Math.sqrt(v1[i]) + tau)));
    const D2 = [0.25, -0.75, 0];
    const r2 = s.applyMeanDelta(r1.weights!, model(D2), r1.serverState, 2);
    const v2 = v1.map((v, i) => v + D2[i] * D2[i]);
    close(r2.serverState.tensors.v[0].values, v2, 1e-15);
    close(flat(r2.weights), flat(r1.weights).map((x, i) => x + (eta * D2[i]) / (Math.sqrt(v2[i]) + tau)));
  });

  it('refuses a server state whose tensors do not match the model', () => {
    const s = new FedAdam({ serverLearningRate: eta, beta1: 0.9, beta2: 0.99, tau });
    const wrong = s.initialServerState(model([0, 0]));
    expect(() => s.applyMeanDelta(global, model(D), wrong, 1)).toThrow(AggregationError);
  });
});
