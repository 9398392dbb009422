import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateInteractions, DEFAULT_INTERACTIONS } from '../../scripts/generate-interactions.ts';

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

describe('data/interactions.csv', () => {
  it('is what the generator writes with its defaults, byte for byte', () => {
    const shipped = readFileSync(new URL('../../data/interactions.csv', import.meta.url));
    expect(shipped.length).toBeLessThan(3 * 1024 * 1024);
    expect(sha(generateInteractions(DEFAULT_INTERACTIONS))).toBe(sha(shipped));
  });

  it('another seed gives other data; the same seed the same', () => {
    const small = { seed: 3, users: 50 };
    expect(generateInteractions(small)).toBe(generateInteractions(small));
    expect(generateInteractions(small)).not.toBe(generateInteractions({ ...small, seed: 4 }));
  });
});
