import { randomBytes } from 'node:crypto';
import { GaussianNoise } from '../protocols/privacy/gaussian-noise.ts';

/**
 * The noise sampler's throughput (samples/s): the exact discrete Gaussian (what every DP mechanism
 * uses since 2026-12-02) against the Box-Muller float sampler it replaced, kept here only as the
 * baseline. Sizes: 10^5 values (one DP-SGD step of a 10^5-parameter model, snapped and noised)
 * and 10^6 (client-level DP noise for a 1M-parameter model, one round).
 */
class BoxMullerBaseline {
  private pool = new Uint8Array(0);
  private offset = 0;
  private spare: number | undefined;
  private uniform(): number {
    if (this.offset + 8 > this.pool.length) {
      this.pool = randomBytes(64 * 1024);
      this.offset = 0;
    }
    const view = new DataView(this.pool.buffer, this.pool.byteOffset + this.offset, 8);
    this.offset += 8;
    return ((view.getUint32(0) >>> 5) * 67108864 + (view.getUint32(4) >>> 6) + 0.5) / 9007199254740992;
  }
  next(std: number): number {
    if (this.spare !== undefined) {
      const z = this.spare;
      this.spare = undefined;
      return z * std;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta) * std;
  }
}

export interface NoiseBenchRow {
  sampler: string;
  values: number;
  seconds: number;
  samplesPerSecond: number;
}

function best(run: () => void, repeats = 3): number {
  let min = Infinity;
  for (let r = 0; r < repeats; r++) {
    const t = performance.now();
    run();
    min = Math.min(min, (performance.now() - t) / 1000);
  }
  return min;
}

export function noiseBench(): NoiseBenchRow[] {
  const rows: NoiseBenchRow[] = [];
  const row = (sampler: string, values: number, seconds: number) => rows.push({ sampler, values, seconds, samplesPerSecond: values / seconds });
  for (const n of [100_000, 1_000_000]) {
    const values = new Float64Array(n);
    const old = new BoxMullerBaseline();
    row('box-muller float (before)', n, best(() => { for (let i = 0; i < n; i++) values[i] += old.next(1); }));
    const noise = new GaussianNoise();
    row('discrete Gaussian, addTo', n, best(() => noise.addTo(values, 1)));
    const step = GaussianNoise.gridStep(1, 1, n);
    row('discrete Gaussian, privatize (snap + noise)', n, best(() => { values.fill(0.25); noise.privatize(values, step); }));
  }
  return rows;
}
