import { randomBytes } from 'node:crypto';

/**
 * Gaussian noise from the operating system's CSPRNG (a seeded PRNG would let anyone who learns
 * the seed subtract the noise). Box-Muller on 53-bit uniforms.
 *
 * Known limitation: floating-point Gaussian samplers leak through the low-order bits of their
 * output (Mironov 2012, "On Significance of the Least Significant Bits for Differential Privacy");
 * a discrete Gaussian (Canonne, Kamath, Steinke 2020) removes that. Our outputs are added to model
 * weights and rounded to float32, which blurs but does not formally close that channel.
 */
export class GaussianNoise {
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
    const hi = view.getUint32(0) >>> 5; // 27 bits
    const lo = view.getUint32(4) >>> 6; // 26 bits
    return (hi * 67108864 + lo + 0.5) / 9007199254740992; // in (0, 1), never 0
  }

  /** One draw from N(0, std^2). */
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

  /** Adds N(0, std^2) to every value in place. */
  addTo(values: Float64Array | Float32Array, std: number): void {
    if (std === 0) return;
    for (let i = 0; i < values.length; i++) values[i] += this.next(std);
  }
}
