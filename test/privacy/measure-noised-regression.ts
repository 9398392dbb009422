/**
 * What the noised regression evaluation costs in accuracy (issue 10), for the README: the
 * mean-only baseline's residuals on the validation share (every 5th row) of three regions of
 * data/customer_value.csv (spend_12m), pooled as three nodes would, exact and noised (z = 5), at
 * residual clips of 1, 2 (the default) and 3 target scales. Not a test (no assertions):
 *   node bin/run-ts.js test/privacy/measure-noised-regression.ts
 */
import { fileURLToPath } from 'node:url';
import { readCsvTable } from '../../models/index.ts';
import { noisedRegressionEvaluation, poolNoisedRegression } from '../../protocols/privacy/noised-regression.ts';

const table = readCsvTable({ path: fileURLToPath(new URL('../../data/customer_value.csv', import.meta.url)) });
const y = table.header.indexOf('spend_12m');
const region = table.header.indexOf('region');
const all = table.rows.map((r) => Number(r[y]));
const center = all.reduce((s, v) => s + v, 0) / all.length;
const scale = Math.sqrt(all.reduce((s, v) => s + (v - center) ** 2, 0) / all.length);
const nodes = ['eu-north', 'cn-north', 'us-central'].map((name) => table.rows.filter((r, i) => r[region] === name && i % 5 === 0).map((r) => center - Number(r[y])));
const rows = nodes.reduce((s, n) => s + n.length, 0);
const rmse = (e: number[]) => Math.sqrt(e.reduce((s, v) => s + v * v, 0) / e.length);
const mae = (e: number[]) => e.reduce((s, v) => s + Math.abs(v), 0) / e.length;
const flat = nodes.flat();
console.log(`target scale ${scale.toFixed(2)}, ${rows} validation rows on 3 nodes; exact RMSE ${rmse(flat).toFixed(2)}, MAE ${mae(flat).toFixed(2)}`);
for (const k of [1, 2, 3]) {
  const B = k * scale;
  const clipped = flat.map((e) => Math.max(-B, Math.min(B, e)));
  const draws = Array.from({ length: 500 }, () => poolNoisedRegression(nodes.map((e) => noisedRegressionEvaluation(e, { noiseMultiplier: 5, residualClip: B }))));
  const stat = (key: string) => {
    const v = draws.map((d) => d[key] as number);
    const m = v.reduce((s, x) => s + x, 0) / v.length;
    return `${m.toFixed(2)} +- ${Math.sqrt(v.reduce((s, x) => s + (x - m) ** 2, 0) / (v.length - 1)).toFixed(2)}`;
  };
  const beyond = flat.filter((e) => Math.abs(e) > B).length / flat.length;
  console.log(`clip ${k} x scale (${B.toFixed(1)}): ${(100 * beyond).toFixed(1)}% of residuals clipped; clipped RMSE ${rmse(clipped).toFixed(2)}, MAE ${mae(clipped).toFixed(2)}; noised RMSE ${stat('rmse')}, MAE ${stat('mae')}`);
}
